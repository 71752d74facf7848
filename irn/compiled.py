"""``torch.compile`` of θ-layers: the fixed-budget path that compiles into one graph.

Eagerly a solve stops when every sample has converged, which needs the residuals on the host
once per iteration, and the adjoint backward is a solve of its own. A compiled graph has no
data-dependent control flow, so inside ``torch.compile`` (``torch.compiler.is_compiling()``)
a layer runs the same solver with a **fixed budget**: all ``max_iter`` iterations, converged
samples frozen by masks (their values are the eager ones: a frozen sample never moves), and
nothing read back to the host:

* the statistics stay tensors (``layer.stats.forward.history`` is a tensor), and the failure
  policy (``on_failure``) is not applied, since a graph can neither warn nor raise; read
  ``stats.forward.residuals`` after the call to check convergence;
* lazy Anderson mixes from the start (its test reads the host);
* a field's learned disc (``disc_radius``) is replaced by its declared bound (``radius``);
* the input checks that read the host (finite values, torch.func transforms) are skipped.

The backward must be plain autograd: ``backward="unrolled"`` (autograd through the budget of
iterations, the exact derivative of what was computed, memory growing with ``max_iter``), or
the inexact ``"jfb"`` / ``"phantom"`` (:mod:`irn.inexact`). ``backward="adjoint"`` does not
compile into one graph (its backward is a convergent solve); with ``fullgraph=True`` it is
refused with a message saying so, and without ``fullgraph`` it runs eagerly between graphs.

What it costs is measured in ``benchmarks/compiled.py`` (compile time and step time, with and
without compile): running the whole budget and unrolling it make the compiled step slower
than the eager adaptive one on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["graph_breaks"]


def graph_breaks(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, list[str]]:
    """``(count, reasons)`` of the graph breaks ``torch.compile`` meets in ``fn(*args)``
    (``torch._dynamo.explain``; nothing is compiled, the call runs once)."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args, **kwargs)
    reasons = [str(b.reason).splitlines()[0] for b in explained.break_reasons]
    return explained.graph_break_count, reasons

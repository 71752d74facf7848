"""Newton–Krylov (irn/solvers/newton_krylov.py) beyond the shared solver tests."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import torch, irn
layer = irn.ThetaLayer(irn.MLP(4, width=8), solver="newton", on_failure="raise")
y = layer(torch.randn(3, 4))
assert layer.stats.converged and layer.stats.iterations >= 1
"""


def test_runs_under_python_W_error():
    """Before: the first JVP loads torch's forward-mode decompositions through torch.jit.script,
    whose DeprecationWarning (torch's own) failed solver="newton" under `python -W error`."""
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]

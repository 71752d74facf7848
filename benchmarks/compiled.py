"""Benchmark 9: ``torch.compile`` of a θ-layer's training step, with and without compile.

The compiled path (:mod:`irn.compiled`) runs a fixed budget of iterations with masked updates
and no host reads, so it compiles into one graph (``fullgraph=True``) with a plain-autograd
backward: ``"unrolled"`` (exact derivative of the budgeted iteration) or ``"jfb"``. On problem
(b) (small: the d = 64, B = 256 training-step case), plain field, θ = h = 1, float32, tolerance
1e-5, the budget is the eager solve's own iteration count plus two, so the compiled solve does
at least the eager work.

Result keys (``compiled`` in the result file): ``problem``, ``state``, ``batch``, ``budget``,
``backend``; ``rows``: ``variant``, ``compiled`` (bool), ``ms`` (median of interleaved rounds),
``ratio_to_explicit``, ``compile_s`` (the first call's time above a warm call, compiled rows;
cold: each variant compiles into a fresh, empty inductor cache folder),
``residual`` (largest relative residual of the forward solve).
"""

from __future__ import annotations

import tempfile
import time

import torch
from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

import irn

from .common import interleaved, table, write
from .problems import dims, problem
from .training import TOL, _step


def _first_call(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    field, x = problem("picard-divergent", "small", declared=False)
    x = x.requires_grad_(True)
    n, batch = dims("small")
    probe = irn.ThetaLayer(field, theta=1.0, h=1.0, tol=TOL)
    probe(x)
    budget = probe.stats.iterations + 2
    make = dict(theta=1.0, h=1.0, tol=TOL, adjoint_tol=TOL, max_iter=budget, on_failure="ignore")
    eager = {
        "explicit (θ = 0)": irn.ThetaLayer(field, theta=0.0, h=1.0),
        "adjoint": irn.ThetaLayer(field, **make),
        "unrolled": irn.ThetaLayer(field, **make, backward="unrolled"),
        "jfb": irn.ThetaLayer(field, **make, backward="jfb"),
    }
    steps = {k: _step(layer, x) for k, layer in eager.items()}
    compile_s, residual = {}, {}
    for name in ("jfb",) if quick else ("unrolled", "jfb"):
        layer = irn.ThetaLayer(field, **make, backward=name)
        torch._dynamo.reset()
        loss = torch.compile(lambda x, layer=layer: layer(x).square().mean(), fullgraph=True)

        def step(layer=layer, loss=loss):  # forward and loss compiled; backward through them
            layer.zero_grad(set_to_none=True)
            loss(x).backward()

        # A cold compile: an earlier run's on-disk cache would hide most of the compile time.
        with tempfile.TemporaryDirectory() as cache, temporary_cache_dir(cache):
            cold = _first_call(step)
        compile_s[f"{name}, compiled"] = cold - _first_call(step)
        residual[f"{name}, compiled"] = float(layer.stats.forward.residuals.max())
        steps[f"{name}, compiled"] = step
    seconds = interleaved(steps, 3 if quick else 9)
    for name, layer in eager.items():
        _step(layer, x)()
        residual[name] = layer.stats.residual if name != "explicit (θ = 0)" else None
    rows = [
        {"variant": k, "compiled": k.endswith("compiled"), "ms": 1e3 * s,
         "ratio_to_explicit": s / seconds["explicit (θ = 0)"],
         "compile_s": compile_s.get(k), "residual": residual.get(k)}
        for k, s in seconds.items()
    ]  # fmt: skip
    print(f"\n### torch.compile of the training step (problem (b), d = {n}, B = {batch}, θ = 1, "
          f"plain field, budget {budget} iterations, inductor, 1 thread)\n")  # fmt: skip
    print(table(rows, ["variant", "ms", "ratio_to_explicit", "compile_s", "residual"]))
    payload = {"problem": "picard-divergent", "state": n, "batch": batch, "budget": budget,
               "backend": "inductor", "quick": quick, "rows": rows}  # fmt: skip
    write("compiled", payload, quick)
    return payload


if __name__ == "__main__":
    run()

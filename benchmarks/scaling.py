"""Benchmark 5: training-step time vs batch size and state dimension (θ = 1 vs explicit)."""

from __future__ import annotations

import torch

import irn

from . import common
from .common import median_time, table, write
from .problems import ShiftedMLP
from .training import _step


def _time(n: int, batch: int, theta: float, repeats: int) -> tuple[float, int, int]:
    field = ShiftedMLP(n).to(common.DEVICE)
    x = torch.randn(batch, n, generator=torch.Generator().manual_seed(1))
    x = x.to(common.DEVICE).requires_grad_(True)
    layer = irn.ThetaLayer(field, theta=theta, tol=1e-5)
    seconds = median_time(_step(layer, x), repeats)
    s = layer.stats
    return seconds, s.iterations, s.backward_iterations or 0


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    rows = []
    batches = (64, 256, 1024) if quick else (32, 64, 128, 256, 512, 1024)
    dims = (32, 128, 512) if quick else (16, 32, 64, 128, 256, 512, 1024)
    grid = [("batch", b, 128, b) for b in batches] + [("state", d, d, 256) for d in dims]
    for axis, value, n, batch in grid:
        reps = 3 if quick or n * batch >= 512 * 512 else 7
        t0, _, _ = _time(n, batch, 0.0, reps)
        t1, kf, kb = _time(n, batch, 1.0, reps)
        rows.append({"axis": axis, "value": value, "state": n, "batch": batch,
                     "explicit_ms": 1e3 * t0, "implicit_ms": 1e3 * t1, "ratio": t1 / t0,
                     "k_forward": kf, "k_backward": kb})  # fmt: skip
    print("\n### Training-step time vs batch size (state 128) and state size (batch 256)\n")
    print(table(rows, ["axis", "state", "batch", "explicit_ms", "implicit_ms", "ratio",
                       "k_forward", "k_backward"]))  # fmt: skip
    write("scaling", {"quick": quick, "rows": rows}, quick)
    return {"rows": rows}


if __name__ == "__main__":
    run()

"""Benchmark 2: one training step (forward + backward) relative to the explicit network.

The implicit and the explicit step are timed in interleaved rounds (:func:`side_by_side`), so
the ratio, the quantity the targets are stated in, compares measurements taken together. Both a
plain field (no declared spectrum) and a declared one are measured. On a GPU the peak memory of
one step is recorded for the explicit step and for θ = 1 with the adjoint and unrolled backward.
"""

from __future__ import annotations

import torch

import irn

from . import common
from .common import side_by_side, table, write
from .problems import dims, problem

TOL = 1e-5


def _step(model, x):
    """One optimizer-free training step: zero grads, forward, mean-square loss, backward."""

    def step():
        model.zero_grad(set_to_none=True)
        y = model(x)
        y.square().mean().backward()
        return y

    return step


def peak_bytes(fn) -> int | None:
    """Peak CUDA memory allocated during ``fn()`` above what was allocated before (GPU only)."""
    if common.DEVICE.type != "cuda":
        return None
    fn()  # warm: the allocator's cache and cuBLAS workspaces exist before the measurement
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def _layer_rows(size: str, declared: bool, rounds: int) -> list[dict]:
    field, x = problem("picard-divergent", size, declared=declared)
    x = x.requires_grad_(True)
    layers = {theta: irn.ThetaLayer(field, theta=theta, h=1.0, tol=TOL, adjoint_tol=TOL)
              for theta in (0.0, 0.5, 1.0)}  # fmt: skip
    seconds = side_by_side({t: _step(layer, x) for t, layer in layers.items()}, rounds)
    peaks = {"explicit": peak_bytes(_step(layers[0.0], x)),
             "adjoint": peak_bytes(_step(layers[1.0], x))}  # fmt: skip
    unrolled = irn.ThetaLayer(field, theta=1.0, h=1.0, tol=TOL, backward="unrolled")
    peaks["unrolled"] = peak_bytes(_step(unrolled, x))
    rows = []
    for theta, layer in layers.items():
        _step(layer, x)()
        s = layer.stats
        kf, kb = s.iterations, (s.backward_iterations or 0)
        n, batch = dims(size)
        rows.append({
            "size": size, "state": n, "batch": batch,
            "field": "declared" if declared else "plain", "model": "ThetaLayer",
            "theta": theta, "ms": 1e3 * seconds[theta],
            "ratio_to_explicit": seconds[theta] / seconds[0.0], "k_forward": kf,
            "k_backward": kb, "evaluations": s.evaluations,
            # F-calls of the step over the explicit step's 3 (F + its VJP, counted as two):
            # every forward evaluation, Φ's graph, one per adjoint product, and 2 for the VJP
            # through Φ. An estimate, not a floor: an adjoint VJP needs no weight gradients.
            "estimate": (s.evaluations + 1 + kb + 2) / 3 if theta else 1.0,
            "solver": s.forward.solver, "adjoint": s.backward.solver if s.backward else "-",
        })  # fmt: skip
        if theta == 1.0 and common.DEVICE.type == "cuda":
            rows[-1].update({f"peak_MB_{k}": v / 2**20 for k, v in peaks.items()})
    return rows


def _resnet_rows(size: str, rounds: int) -> list[dict]:
    """A deep network: T = 4 steps over [0, 4] with per-step copies of a declared field."""
    field, x = problem("picard-divergent", size)
    x = x.requires_grad_(True)
    nets = {theta: irn.ImplicitResNet(field, steps=4, interval=4.0, shared=False, theta=theta,
                                      tol=TOL, adjoint_tol=TOL)
            for theta in (0.0, 0.5, 1.0)}  # fmt: skip
    seconds = side_by_side({t: _step(net, x) for t, net in nets.items()}, rounds)
    rows = []
    for theta, net in nets.items():
        net.zero_grad()
        out, traj = net(x, return_trajectory=True)
        out.square().mean().backward()
        kf = sum(s.iterations for s in traj.stats)
        kb = sum(s.backward_iterations or 0 for s in traj.stats)
        ev = sum(s.evaluations for s in traj.stats)
        rows.append({
            "size": size, "field": "declared", "model": "ImplicitResNet T=4", "theta": theta,
            "ms": 1e3 * seconds[theta], "ratio_to_explicit": seconds[theta] / seconds[0.0],
            "k_forward": kf, "k_backward": kb,
            "estimate": (ev + 4 + kb + 2 * 4) / (3 * 4) if theta else 1.0,
        })  # fmt: skip
    return rows


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    rows = []
    for size in ("small", "large"):
        rounds = (3 if quick else 7) if size == "large" else (5 if quick else 15)
        for declared in (False, True):
            rows += _layer_rows(size, declared, rounds)
        if not quick or size == "small":
            rows += _resnet_rows(size, max(3, rounds // 2))
    print(f"\n### Training step (forward + backward), problem (b), tol {TOL:g}, 1 thread\n")
    cols = ["size", "field", "model", "theta", "ms", "ratio_to_explicit", "estimate",
            "k_forward", "k_backward", "solver", "adjoint"]  # fmt: skip
    if common.DEVICE.type == "cuda":
        cols += ["peak_MB_explicit", "peak_MB_adjoint", "peak_MB_unrolled"]
    print(table(rows, cols))
    print(
        "\nratio_to_explicit: medians of interleaved rounds. estimate = (evaluations + 1 + "
        "k_backward + 2)/3: F calls of the implicit step over the explicit step's three (a VJP "
        "counted as two), not a floor (an adjoint VJP needs no weight gradients)."
    )
    write("training", {"tol": TOL, "quick": quick, "rows": rows}, quick)
    return {"rows": rows}


if __name__ == "__main__":
    run()

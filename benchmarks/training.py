"""Benchmark 2: one training step (forward + backward) relative to the explicit network."""

from __future__ import annotations

import torch

import irn

from .common import median_time, table, write
from .problems import problem

TOL = 1e-5


def _step(model, x):
    """One optimizer-free training step: zero grads, forward, mean-square loss, backward."""

    def step():
        model.zero_grad(set_to_none=True)
        y = model(x)
        y.square().mean().backward()
        return y

    return step


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    rows = []
    sizes = ("small", "large")
    for size in sizes:
        field, x = problem("picard-divergent", size)
        x = x.requires_grad_(True)
        repeats = (3 if quick else 11) if size == "large" else (5 if quick else 31)
        base = None
        for theta in (0.0, 0.5, 1.0):
            layer = irn.ThetaLayer(field, theta=theta, h=1.0, tol=TOL, adjoint_tol=TOL)
            seconds = median_time(_step(layer, x), repeats)
            _step(layer, x)()
            s = layer.stats
            kf, kb = s.iterations, (s.backward_iterations or 0)
            base = seconds if theta == 0.0 else base
            estimate = (kf + 2 * kb + 3) / 3
            rows.append({
                "size": size, "model": "ThetaLayer", "theta": theta, "ms": 1e3 * seconds,
                "ratio_to_explicit": seconds / base, "k_forward": kf, "k_backward": kb,
                "estimate": estimate if theta > 0 else 1.0, "solver": s.forward.solver,
                "adjoint": s.backward.solver if s.backward else "-",
            })  # fmt: skip
        # A deep network: T = 4 steps over [0, 4] with per-step copies of the field.
        if not quick or size == "small":
            base = None
            for theta in (0.0, 0.5, 1.0):
                net = irn.ImplicitResNet(field, steps=4, interval=4.0, shared=False,
                                         theta=theta, tol=TOL, adjoint_tol=TOL)  # fmt: skip
                seconds = median_time(_step(net, x), max(3, repeats // 2))
                net.zero_grad()
                out, traj = net(x, return_trajectory=True)
                out.square().mean().backward()
                kf = sum(s.iterations for s in traj.stats)
                kb = sum(s.backward_iterations or 0 for s in traj.stats)
                base = seconds if theta == 0.0 else base
                rows.append({
                    "size": size, "model": "ImplicitResNet T=4", "theta": theta,
                    "ms": 1e3 * seconds, "ratio_to_explicit": seconds / base, "k_forward": kf,
                    "k_backward": kb, "estimate": (kf + 2 * kb + 3 * 4) / (3 * 4) if theta else 1.0,
                })  # fmt: skip
    print(f"\n### Training step (forward + backward), problem (b), tol {TOL:g}, 1 thread\n")
    cols = ["size", "model", "theta", "ms", "ratio_to_explicit", "estimate", "k_forward",
            "k_backward", "solver", "adjoint"]  # fmt: skip
    print(table(rows, cols))
    print(
        "\nestimate = (k_forward + 2 k_backward + 3)/3: F evaluations of the implicit step "
        "relative to the explicit one, counting a VJP as two evaluations. It is an estimate, "
        "not a floor: an adjoint VJP needs no weight gradients, so it can cost less."
    )
    write("training", {"tol": TOL, "quick": quick, "rows": rows}, suffix="-quick" if quick else "")
    return {"rows": rows}


if __name__ == "__main__":
    run()

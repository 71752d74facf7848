"""Benchmark 3: saved-for-backward bytes vs solver iterations and vs depth.

Bytes are counted with ``torch.autograd.graph.saved_tensors_hooks``: every tensor autograd
packs for the backward pass, each storage counted once. This is what a training step must keep
alive between forward and backward (activations), independent of allocator behaviour.
"""

from __future__ import annotations

import torch

import irn

from .common import table, write
from .problems import problem


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd saves while running ``fn()``."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        key = (t.untyped_storage().data_ptr(), t.dtype, tuple(t.shape))
        seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def _layer(field, theta, backward, iters):
    # tol far below reach and on_failure="ignore": exactly `iters` iterations run.
    return irn.ThetaLayer(field, theta=theta, solver="fixed-point", tol=1e-30, max_iter=iters,
                          backward=backward, on_failure="ignore")  # fmt: skip


def _torchdeq(field, x, iters):
    from torchdeq import get_deq

    deq = get_deq(f_solver="fixed_point_iter", f_max_iter=iters, f_tol=0.0, ift=True)
    return deq(lambda z: x + field(1.0, z), x + 0.5 * field(0.0, x))[0][-1]


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    field, x = problem("picard-divergent", "small")
    x = x.requires_grad_(True)
    explicit = saved_bytes(lambda: irn.ThetaLayer(field, theta=0.0)(x))
    rows = []
    for iters in (3, 10, 40):
        row = {"iterations": iters, "explicit": explicit}
        for backward in ("adjoint", "unrolled"):
            layer = _layer(field, 1.0, backward, iters)
            row[backward] = saved_bytes(lambda layer=layer: layer(x))
        try:
            row["torchdeq IFT"] = saved_bytes(lambda iters=iters: _torchdeq(field, x, iters))
        except Exception as err:  # reported, not hidden
            row["torchdeq IFT"] = repr(err)[:60]
        rows.append(row)
    for r in rows:
        r["adjoint / explicit"] = r["adjoint"] / explicit
    depth_rows = []
    for steps in (1, 2, 4) if quick else (1, 2, 4, 8):
        row = {"steps": steps}
        for name, theta, backward in (("explicit", 0.0, "adjoint"), ("adjoint", 1.0, "adjoint"),
                                      ("unrolled", 1.0, "unrolled")):  # fmt: skip
            net = irn.ImplicitResNet(field, steps=steps, interval=float(steps), theta=theta,
                                     tol=1e-5, backward=backward)  # fmt: skip
            row[name] = saved_bytes(lambda net=net: net(x))
        depth_rows.append(row)
    flat = max(r["adjoint"] for r in rows) / min(r["adjoint"] for r in rows) - 1
    print("\n### Saved-for-backward bytes vs solver iterations (problem (b), small, θ = 1)\n")
    print(table(rows, ["iterations", "explicit", "adjoint", "adjoint / explicit", "unrolled",
                       "torchdeq IFT"]))  # fmt: skip
    print(f"\nadjoint variation over iterations: {100 * flat:.1f}%")
    print("\n### Saved-for-backward bytes vs depth (ImplicitResNet, tol 1e-5)\n")
    print(table(depth_rows, ["steps", "explicit", "adjoint", "unrolled"]))
    write("memory", {"quick": quick, "iterations": rows, "depth": depth_rows,
                     "adjoint_variation": flat}, quick)  # fmt: skip
    return {"iterations": rows, "depth": depth_rows}


if __name__ == "__main__":
    run()

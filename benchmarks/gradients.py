"""Benchmark 4: accuracy of each backward mode against an independent float64 reference.

Reference: solve the step with Newton to 1e-14, form the dense per-sample Jacobian
``J = ∂F/∂y`` at the solution, solve ``(I − θhJ)ᵀ v = ∇_y L`` with a dense LU, and carry ``v``
through one evaluation of Φ by autograd. No irn solver is involved in the reference.
"""

from __future__ import annotations

import torch

import irn
from irn.stability import batch_jacobian

from .common import table, write
from .problems import problem


def _grads(field, x, out) -> torch.Tensor:
    loss = (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype, device=out.device)).sum()
    gs = torch.autograd.grad(loss, [x, *field.parameters()])
    return torch.cat([g.flatten() for g in gs])


def reference(field, x) -> torch.Tensor:
    """Dense-algebra gradient of the backward-Euler step (θ = h = 1, linear scheme)."""
    with torch.no_grad():
        layer = irn.ThetaLayer(field, theta=1.0, solver="newton", tol=1e-14, max_iter=50)
        y = layer(x)
    J = batch_jacobian(field, 1.0, y)
    eye = torch.eye(J.shape[1], dtype=J.dtype, device=J.device)
    w = torch.linspace(-1, 1, y.shape[1], dtype=y.dtype, device=y.device).expand_as(y)
    v = torch.linalg.solve((eye - J).transpose(1, 2), w)
    y_leaf = y.detach()
    phi = field(1.0, y_leaf)  # Φ(x, y) = F(y) for backward Euler: ∇x L = v, ∇γ L = (∂Φ/∂γ)ᵀ v
    gp = torch.autograd.grad(phi, list(field.parameters()), v)
    return torch.cat([v.flatten(), *(g.flatten() for g in gp)])


def _torchdeq(field, x, **kw):
    from torchdeq import get_deq

    deq = get_deq(f_solver="anderson", f_max_iter=100, f_tol=1e-12, f_stop_mode="rel",
                  b_max_iter=100, b_tol=1e-12, b_stop_mode="rel", **kw)  # fmt: skip
    return deq(lambda z: x + field(1.0, z), x + 0.5 * field(0.0, x))[0][-1]


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    field, x = problem("picard-divergent", "small", dtype=torch.float64)
    x = x[:32].clone().requires_grad_(True)
    ref = reference(field, x)
    rows = []

    def add(name, out, tol=None):
        g = _grads(field, x, out)
        rows.append({"method": name, "tol": tol if tol is not None else "",
                     "relative_error": float((g - ref).norm() / ref.norm())})  # fmt: skip

    for tol in (1e-6, 1e-8, 1e-10):
        for backward in ("adjoint", "unrolled"):
            layer = irn.ThetaLayer(field, theta=1.0, tol=tol, adjoint_tol=tol, backward=backward)
            add(f"irn {backward}", layer(x), tol)
        layer = irn.ThetaLayer(field, theta=1.0, tol=tol, adjoint_tol=tol, adjoint_solver="gmres")
        add("irn adjoint (GMRES)", layer(x), tol)
    variants = (
        ("torchdeq 1-step phantom (default)", {}),
        ("torchdeq IFT (default b_solver)", {"ift": True}),
        ("torchdeq IFT, b_solver=broyden", {"ift": True, "b_solver": "broyden"}),
        ("torchdeq IFT, b_solver=anderson", {"ift": True, "b_solver": "anderson"}),
    )
    for name, kw in variants:
        try:
            add(name, _torchdeq(field, x, **kw), 1e-12)
        except Exception as err:
            rows.append({"method": name, "relative_error": repr(err)[:60]})
    print(
        "\n### Gradient accuracy vs a dense float64 reference (Picard-divergent problem, θ = 1)\n"
    )
    print(table(rows, ["method", "tol", "relative_error"]))
    write("gradients", {"quick": quick, "rows": rows}, quick)
    return {"rows": rows}


if __name__ == "__main__":
    run()

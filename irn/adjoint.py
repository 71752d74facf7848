"""Implicit-function-theorem backward pass for one implicit step ``y = x + Φ(x, y)``.

Given ``∇_y L`` the gradients at the solution are (paper-notes §1.3)

    (I − ∂Φ/∂y)ᵀ v = ∇_y L,     ∇_x L = (I + ∂Φ/∂x)ᵀ v,     ∇_γ L = (∂Φ/∂γ)ᵀ v.

The layer evaluates ``φ = Φ(x, ỹ)`` once, with ``ỹ`` a detached copy of the solution marked as
a leaf. :class:`ImplicitStep` returns the solution's values; its backward solves for ``v``
matrix-free with vector–Jacobian products ``w ↦ (∂φ/∂ỹ)ᵀ w`` on that one graph and hands ``v``
to both ``x`` and ``φ``, so autograd through ``φ`` adds ``(∂Φ/∂x)ᵀ v`` and ``(∂Φ/∂γ)ᵀ v``.
Nothing of the solver's iterations is recorded: the saved memory is one evaluation of Φ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from .solvers import SolverStats, enforce, linear_solve

__all__ = ["AdjointConfig", "ImplicitStep"]


@dataclass
class AdjointConfig:
    """How to solve the adjoint system, and where to report.

    Attributes:
        solver: ``"gmres"`` or ``"fixed-point"`` (the Neumann series ``v ← g + (∂Φ/∂y)ᵀ v``).
        tol: Relative residual tolerance ``‖(I − ∂Φ/∂y)ᵀ v − g‖ ≤ tol ‖g‖`` per sample.
        max_iter: Matrix–vector products allowed.
        on_failure: The layer's policy (``"warn"``, ``"raise"``, ``"ignore"``).
        report: Called with the adjoint :class:`SolverStats` after every backward.
        options: Extra keyword arguments for the linear solver (e.g. ``restart``).
    """

    solver: str
    tol: float
    max_iter: int
    on_failure: str
    report: Callable[[SolverStats], None]
    options: dict


class ImplicitStep(torch.autograd.Function):
    """``y = ImplicitStep.apply(x, phi, y_leaf, config)`` has the values of ``y_leaf`` and the
    implicit-function-theorem gradient described in the module docstring."""

    @staticmethod
    def forward(ctx, x, phi, y_leaf, config: AdjointConfig):  # noqa: D102
        ctx.config = config
        ctx.save_for_backward(phi, y_leaf)
        return y_leaf.detach().clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):  # noqa: D102
        phi, y_leaf = ctx.saved_tensors
        cfg: AdjointConfig = ctx.config
        shape = grad_y.shape
        g = grad_y.reshape(shape[0], -1)

        def matvec(w: torch.Tensor) -> torch.Tensor:
            # (I − ∂Φ/∂y)ᵀ w, one vector–Jacobian product on the saved graph of Φ.
            (jtw,) = torch.autograd.grad(phi, y_leaf, w.view(shape), retain_graph=True)
            return w - jtw.reshape_as(w)

        with torch.no_grad():
            # Both solvers start from zero, which costs no product: GMRES's first step finds
            # the best multiple of g, the Neumann series' first iterate is ω g.
            v, stats = linear_solve(
                cfg.solver, matvec, g, None, tol=cfg.tol, max_iter=cfg.max_iter, **cfg.options
            )
        cfg.report(stats)
        enforce(stats, cfg.on_failure, "ThetaLayer adjoint solve")
        v = v.view(shape)
        return v, v, None, None

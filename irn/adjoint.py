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
from dataclasses import dataclass, field

import torch

from .solvers import SolverConfig, SolverStats, enforce, neumann_gmres

__all__ = ["AdjointConfig", "ImplicitStep"]


@dataclass
class AdjointConfig:
    """How to solve the adjoint system, and where to report.

    Attributes:
        solver: A linear-solver configuration (:class:`~irn.solvers.GMRES` or
            :class:`~irn.solvers.Neumann`, the series ``v ← g + ω(∂Φ/∂y)ᵀ v − ω v + ...``).
        tol: Relative residual tolerance ``‖(I − ∂Φ/∂y)ᵀ v − g‖ ≤ tol ‖g‖`` per sample.
        max_iter: Matrix–vector products allowed.
        on_failure: The layer's policy (``"warn"``, ``"raise"``, ``"ignore"``).
        report: Called with the adjoint :class:`SolverStats` after every backward.
        what: Names the solve in messages.
        advice: What to try, appended to a failure message.
        warned: The layer's de-duplication set for warnings.
        omega: Per-sample damping ``(batch, 1)`` from the forward solve, or None. When given,
            the solve is :func:`~irn.solvers.neumann_gmres`: the damped Neumann series,
            handing over to GMRES (with ``solver``'s restart) if it stops contracting.
    """

    solver: SolverConfig
    tol: float
    max_iter: int
    on_failure: str
    report: Callable[[SolverStats], None]
    what: str = "ThetaLayer adjoint solve"
    advice: str = ""
    warned: set | None = field(default=None, repr=False)
    omega: torch.Tensor | None = field(default=None, repr=False)


_DOUBLE_BACKWARD = (
    "ThetaLayer(backward='adjoint') gives first-order gradients only: its backward pass is a "
    "linear solve that is not itself differentiated. For double backward (create_graph=True, "
    "gradient penalties, Hessian-vector products) build the layer with backward='unrolled'."
)


class ImplicitStep(torch.autograd.Function):
    """``y = ImplicitStep.apply(x, phi, y_leaf, config)`` has the values of ``y_leaf`` and the
    implicit-function-theorem gradient described in the module docstring."""

    @staticmethod
    def forward(ctx, x, phi, y_leaf, config: AdjointConfig):  # noqa: D102
        ctx.config = config
        ctx.save_for_backward(phi, y_leaf)
        return y_leaf.detach().clone()

    @staticmethod
    def backward(ctx, grad_y):  # noqa: D102
        # Grad mode is on inside backward only for create_graph=True (a double backward).
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD)
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
            if cfg.omega is not None:
                v, stats = neumann_gmres(
                    matvec, g, omega=cfg.omega, tol=cfg.tol, max_iter=cfg.max_iter,
                    restart=getattr(cfg.solver, "restart", 20),
                )  # fmt: skip
            else:
                fn = cfg.solver.function()
                v, stats = fn(
                    matvec, g, None, tol=cfg.tol, max_iter=cfg.max_iter, **cfg.solver.options()
                )
        cfg.report(stats)
        enforce(
            stats, cfg.on_failure, cfg.what, advice=cfg.advice, warned=cfg.warned, key="adjoint"
        )
        v = v.view(shape)
        return v, v, None, None

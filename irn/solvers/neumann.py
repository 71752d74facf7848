"""The damped Neumann series (Richardson iteration) ``v ← v + ω(b − Av)`` for ``A v = b``.

For the adjoint system ``(I − Mᵀ) v = g`` with ``ω = 1`` it is ``v ← g + Mᵀ v``; it converges
when the spectral radius of ``I − ωA`` is below one. Each product costs a few tensor ops
against GMRES's orthogonalization, so where it contracts fast it is the cheaper solve; its
hand-over rule (:func:`neumann_gmres`) gives the rest of the budget to GMRES once it does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ._rules import slow_iteration
from .base import SolverConfig, check_damping
from .gmres import MatVec, gmres
from .stats import SolverStats, relative_residual

__all__ = ["Neumann", "neumann_gmres", "richardson"]


def richardson(
    matvec: MatVec,
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 50,
    omega: float = 1.0,
) -> tuple[torch.Tensor, SolverStats]:
    """Fixed-point (Richardson) iteration ``x ← x + ω (b − A x)``.

    For the adjoint system ``(I − Mᵀ) v = g`` with ``ω = 1`` this is ``v ← g + Mᵀ v``, the
    Neumann series; it converges when the spectral radius of ``I − ωA`` is below one.
    """
    x = torch.zeros_like(b) if x0 is None else x0
    r = b - matvec(x) if x0 is not None else b
    evals = int(x0 is not None)
    res = relative_residual(r, b)
    history = [float(res.max())]
    it = 0
    while it < max_iter and not bool((res <= tol).all()):
        active = res > tol
        step = torch.add(x, r, alpha=omega)
        x = step if bool(active.all()) else torch.where(active[:, None], step, x)
        r = b - matvec(x)
        evals += 1
        it += 1
        res = relative_residual(r, b)
        history.append(float(res.max()))
    return x, SolverStats("fixed-point", it, evals, res.detach(), tol, history)


def neumann_gmres(
    matvec: MatVec,
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    omega: torch.Tensor,
    tol: float = 1e-6,
    max_iter: int = 50,
    restart: int = 20,
    rate: float = 0.6,
) -> tuple[torch.Tensor, SolverStats]:
    """Richardson ``x ← x + ω(b − Ax)`` with a per-sample ``omega`` ``(batch, 1)``, handing
    over to GMRES (warm-started) as soon as it stops contracting.

    A forward Anderson solve estimates ``ω ≈ 1/c`` per sample, ``c`` the centre of the residual
    Jacobian's spectrum (:func:`irn.solvers.anderson` with its damping unset); the adjoint matrix is
    that Jacobian's transpose, with the same spectrum, so the damped series usually converges
    as fast as GMRES in products, with a fraction of GMRES's orthogonalization work per
    product. Nothing guarantees it. When the batch's worst residual fails to shrink by
    ``rate`` (0.6) in one step, or at its current rate would need more than 6 further products
    to reach ``tol``, or its rate worsens by half again, the rest of the budget goes to GMRES
    from the current iterate: a series that slow, or that long, needs more products than GMRES
    does (GMRES finishes a 2-D system in two).
    """
    x = torch.zeros_like(b) if x0 is None else x0
    r = b - matvec(x) if x0 is not None else b
    evals = int(x0 is not None)
    # Few tensor ops per product (each costs 5–30 µs on a CPU at (256, 64)): ‖b‖ once, the
    # history kept on the device until the end.
    bnorm = torch.linalg.vector_norm(b.detach(), dim=1).clamp_min(torch.finfo(b.dtype).tiny)
    res = relative_residual(r, b)
    history = [res.max()]
    it, rate_prev = 0, None
    while it < max_iter:
        active = res > tol  # a non-finite residual is inf here: active
        if not bool(active.any()):
            break
        x = torch.where(active[:, None], x + omega * r, x)
        r = b - matvec(x)
        evals += 1
        it += 1
        new = (torch.linalg.vector_norm(r.detach(), dim=1) / bnorm).nan_to_num_(nan=float("inf"))
        # The batch's worst rate and residual, read back as two numbers.
        worst = torch.where(active, new / res, 0.0).max()
        res = new
        history.append(res.max())
        step_rate, res_max = torch.stack((worst, history[-1])).tolist()
        if slow_iteration(step_rate, rate_prev, res_max, tol, rate):  # GMRES takes over
            break
        rate_prev = step_rate
    history = torch.stack(history).tolist()
    if it < max_iter and not bool((res <= tol).all()):
        x, gst = gmres(matvec, b, x, tol=tol, max_iter=max_iter - it, restart=restart)
        return x, SolverStats(
            "fixed-point+gmres", it + gst.iterations, evals + gst.evaluations, gst.residuals,
            tol, history + gst.history[1:],
        )  # fmt: skip
    return x, SolverStats("fixed-point", it, evals, res.detach(), tol, history)


@dataclass(frozen=True)
class Neumann(SolverConfig):
    """Richardson iteration ``v ← v + ω(b − Av)``: a damped Neumann series for (I − M)v = b.

    Its hand-over rule: given a per-sample ``ω`` estimated by the forward solve, the adjoint runs
    :func:`neumann_gmres`, which hands over to GMRES when the series stops contracting."""

    omega: float | None = None
    kind: ClassVar[str] = "linear"
    name: ClassVar[str] = "fixed-point"
    spectral: ClassVar[str | None] = "omega"

    def __post_init__(self) -> None:
        object.__setattr__(self, "omega", check_damping("Neumann", "omega", self.omega))

    def function(self):
        return richardson

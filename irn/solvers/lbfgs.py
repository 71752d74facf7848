"""L-BFGS on ``φ(y) = ½‖r(y)‖²`` per sample: the paper's least-squares formulation of the step.

Unlike one ``torch.optim.LBFGS`` problem for the whole batch, every sample keeps its own
curvature pairs and its own Armijo line search, so samples do not share a step length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import SolverConfig, check_positive_int
from .line_search import armijo
from .stats import SolverStats
from .tracking import Residual, Tracker

__all__ = ["LBFGS", "lbfgs"]


def lbfgs(
    residual: Residual,
    y0: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 50,
    scale: torch.Tensor | None = None,
    memory: int = 10,
) -> tuple[torch.Tensor, SolverStats]:
    """L-BFGS on ``φ(y) = ½‖r(y)‖²`` per sample (the paper's least-squares formulation).

    The gradient ``∇φ = (∂r/∂y)ᵀ r`` is one vector-Jacobian product (``torch.func.vjp``); the
    two-loop recursion and the Armijo backtracking run per sample, so samples do not share a
    line search as they do when the whole batch is one ``torch.optim.LBFGS`` problem.
    """

    def value_grad(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r, pullback = torch.func.vjp(residual, y)
        return r, pullback(r)[0]

    y = y0
    r, g = value_grad(y)
    tr = Tracker("lbfgs", y, r, tol, scale)
    tr.evals = 2
    S: list[torch.Tensor] = []
    Yd: list[torch.Tensor] = []
    tiny = torch.finfo(y.dtype).tiny
    while tr.iterations < max_iter and not tr.done():
        active = tr.active
        q, coef = g, []
        for s, yd in zip(reversed(S), reversed(Yd), strict=True):  # two-loop recursion
            sy = (s * yd).sum(1)
            rho = torch.where(sy > tiny, 1 / sy.clamp_min(tiny), torch.zeros_like(sy))
            a = rho * (s * q).sum(1)
            q = q - a[:, None] * yd
            coef.append((rho, a))
        if S:
            sy, yy = (S[-1] * Yd[-1]).sum(1), (Yd[-1] ** 2).sum(1)
            q = q * torch.where(sy > tiny, sy / yy.clamp_min(tiny), torch.ones_like(sy))[:, None]
        for (s, yd), (rho, a) in zip(zip(S, Yd, strict=True), reversed(coef), strict=True):
            q = q + (a - rho * (yd * q).sum(1))[:, None] * s
        d = -q
        slope = (g * d).sum(1)
        bad = ~(slope < 0)  # not a descent direction: restart from steepest descent
        d = torch.where(bad[:, None], -g, d)
        slope = torch.where(bad, -(g**2).sum(1), slope)

        # Armijo backtracking with a gradient at every trial (accepted trials reuse it).
        def evaluate(y_try: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            tr.evals += 2
            return value_grad(y_try)

        y_new, (r_new, g_new) = armijo(evaluate, y, (r, g), d, slope, active)
        S, Yd = (S + [y_new - y])[-memory:], (Yd + [g_new - g])[-memory:]
        y, r, g = y_new, r_new, g_new
        tr.update(y, r)
    return tr.result()


@dataclass(frozen=True)
class LBFGS(SolverConfig):
    """L-BFGS on ``½‖r‖²`` per sample with ``memory`` curvature pairs."""

    memory: int = 10
    kind: ClassVar[str] = "nonlinear"
    name: ClassVar[str] = "lbfgs"

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory", check_positive_int("LBFGS", "memory", self.memory))

    def function(self):
        return lbfgs

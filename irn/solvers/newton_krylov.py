"""Inexact Newton–Krylov for ``r(y) = 0``: GMRES on Jacobian-vector products, batched per sample.

Each step solves ``(∂r/∂y) d = −r`` matrix-free (``torch.func.jvp``, never a Jacobian matrix)
to a loose, adaptive tolerance and steps ``y ← y + λ d`` with a per-sample backtracking line
search on ``½‖r‖²``. Quadratic convergence near the root, at two evaluations per product.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import SolverConfig, check_positive_int
from .gmres import gmres
from .line_search import armijo
from .stats import SolverStats
from .tracking import Residual, Tracker

__all__ = ["NewtonKrylov", "newton_krylov"]


@functools.cache
def _load_forward_ad() -> None:
    # torch loads its forward-mode decompositions on the first JVP through torch.jit.script,
    # which warns DeprecationWarning: torch's own, and under `python -W error` it would fail the
    # first Newton step. Loaded once here with that one warning silenced.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        from torch._decomp import decompositions_for_jvp  # noqa: F401


def newton_krylov(
    residual: Residual,
    y0: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 50,
    scale: torch.Tensor | None = None,
    inner_max_iter: int = 30,
    line_search: bool = True,
) -> tuple[torch.Tensor, SolverStats]:
    """Inexact Newton: solve ``(∂r/∂y) d = −r`` by GMRES with Jacobian-vector products
    (``torch.func.jvp``, never a Jacobian matrix), then step ``y ← y + λ d`` with a
    backtracking line search on ``½‖r‖²``.

    The inner tolerance ``η = min(0.1, max(res², 0.1 tol / res))`` is loose far from the root
    and just tight enough near it to finish in one more step.
    """
    _load_forward_ad()
    y = y0
    r = residual(y)
    tr = Tracker("newton", y, r, tol, scale)
    while tr.iterations < max_iter and not tr.done():
        active = tr.active
        res = float(tr.res[active].max())
        eta = min(0.1, max(res**2, 0.1 * tol / max(res, 1e-300)))

        def jvp(w: torch.Tensor, y_lin: torch.Tensor = y) -> torch.Tensor:
            return torch.func.jvp(residual, (y_lin,), (w,))[1]

        rhs = torch.where(active[:, None], -r, torch.zeros_like(r))
        d, inner = gmres(jvp, rhs, tol=eta, max_iter=inner_max_iter, restart=inner_max_iter)
        tr.evals += 2 * inner.evaluations  # a JVP costs about two residual evaluations
        if line_search:

            def evaluate(y_try: torch.Tensor) -> tuple[torch.Tensor]:
                tr.evals += 1
                return (residual(y_try),)

            y, (r,) = armijo(evaluate, y, (r,), d, -(r**2).sum(1), active)
        else:
            y = torch.where(active[:, None], y + d, y)
            r = residual(y)
            tr.evals += 1
        tr.update(y, r)
    return tr.result()


@dataclass(frozen=True)
class NewtonKrylov(SolverConfig):
    """Inexact Newton with GMRES on JVPs (``inner_max_iter`` products per step)."""

    inner_max_iter: int = 30
    line_search: bool = True
    kind: ClassVar[str] = "nonlinear"
    name: ClassVar[str] = "newton"

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "inner_max_iter",
            check_positive_int("NewtonKrylov", "inner_max_iter", self.inner_max_iter),
        )
        if not isinstance(self.line_search, bool):
            raise ValueError(f"NewtonKrylov: line_search must be a bool, got {self.line_search!r}")

    def function(self):
        return newton_krylov

"""Damped Picard iteration ``y ← y − β r(y)`` for ``r(y) = 0``, batched per sample.

For the θ-step residual ``r(y) = y − x − Φ(x, y)`` and ``β = 1`` it is ``y ← x + Φ(x, y)``; it
converges when the spectral radius of ``I − β ∂r/∂y`` is below one, and a field's declared
spectrum (centre ``c``) gives the damping ``β = 1/c`` that centres it at zero.

Why hand-written (all of :mod:`irn.solvers`): ``torch.optim.LBFGS`` and scipy solve one coupled
problem, so one hard sample slows (or its line search distorts) the whole batch; these solvers
run every sample's own iteration in the same few tensor ops, on any device, and are
differentiable end to end, so ``backward="unrolled"`` can backpropagate through them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import SolverConfig, check_damping
from .stats import SolverStats
from .tracking import Residual, Tracker, damped, select

__all__ = ["FixedPoint", "fixed_point"]


def fixed_point(
    residual: Residual,
    y0: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 50,
    scale: torch.Tensor | None = None,
    damping: float = 1.0,
) -> tuple[torch.Tensor, SolverStats]:
    """Damped Picard iteration ``y ← y − β r(y)``.

    For the θ-step residual ``r(y) = y − x − Φ(x, y)`` and ``β = 1`` this is ``y ← x + Φ(x, y)``;
    it converges when the spectral radius of ``I − β ∂r/∂y`` is below one.
    """
    y = y0
    r = residual(y)
    tr = Tracker("fixed-point", y, r, tol, scale)
    while tr.iterations < max_iter and not tr.done():
        y = select(tr.active, damped(y, r, damping), y)
        r = residual(y)
        tr.evals += 1
        tr.update(y, r)
    return tr.result()


@dataclass(frozen=True)
class FixedPoint(SolverConfig):
    """Damped Picard iteration ``y ← y − β r(y)`` (``damping`` β; None: from the spectrum or 1)."""

    damping: float | None = None
    kind: ClassVar[str] = "nonlinear"
    name: ClassVar[str] = "fixed-point"
    spectral: ClassVar[str | None] = "damping"
    starts_at_x: ClassVar[bool] = True  # its first step from x, β r(x) = −βhF(x), predicts

    def __post_init__(self) -> None:
        object.__setattr__(self, "damping", check_damping("FixedPoint", "damping", self.damping))

    def function(self):
        return fixed_point

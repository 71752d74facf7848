"""Solver statistics and the failure policy shared by every solver and layer.

Nothing a solver does is silent: each call returns a :class:`SolverStats`, and a layer hands
the stats to :func:`enforce` which warns, raises or records according to ``on_failure``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

__all__ = [
    "POLICIES",
    "ConvergenceError",
    "ConvergenceWarning",
    "SolverStats",
    "enforce",
    "relative_residual",
]

POLICIES = ("warn", "raise", "ignore")


class ConvergenceWarning(RuntimeWarning):
    """A nonlinear or linear solve stopped before reaching its tolerance."""


class ConvergenceError(RuntimeError):
    """A solve failed and the layer's policy is ``on_failure="raise"``."""


@dataclass
class SolverStats:
    """What one batched solve did.

    Attributes:
        solver: Name of the method (``"anderson"``, ``"gmres"``, ...).
        iterations: Iterations run (the batch iterates together; converged samples are frozen).
        evaluations: Calls of the residual / matrix-vector product, JVPs and VJPs included.
        residuals: Final relative residual of every sample, shape ``(batch,)``, detached.
        tol: The tolerance the residuals were compared with.
    """

    solver: str
    iterations: int
    evaluations: int
    residuals: torch.Tensor
    tol: float
    history: list[float] = field(default_factory=list, repr=False)

    @property
    def residual(self) -> float:
        """Largest relative residual over the batch (``inf`` if any sample is not finite)."""
        if self.residuals.numel() == 0:
            return 0.0
        r = self.residuals.max()
        return float(r) if torch.isfinite(r) else float("inf")

    @property
    def sample_converged(self) -> torch.Tensor:
        """Boolean mask ``(batch,)``: which samples reached the tolerance."""
        return torch.isfinite(self.residuals) & (self.residuals <= self.tol)

    @property
    def converged(self) -> bool:
        """True when every sample reached the tolerance."""
        return bool(self.sample_converged.all())


def relative_residual(
    r: torch.Tensor, ref: torch.Tensor, floor: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample relative residual ``‖r_i‖ / max(‖ref_i‖, floor_i)``, detached.

    ``r`` and ``ref`` are ``(batch, n)``; ``floor`` is an optional per-sample norm ``(batch,)``
    (the layer passes ``‖x_i‖``, so a state passing through zero is measured against the size
    of the input, which is also the size of the rounding in ``r``). A zero residual is 0 even
    on a zero reference; a non-finite one is ``inf``, so it never counts as converged.
    """
    num = torch.linalg.vector_norm(r.detach(), dim=1)
    den = torch.linalg.vector_norm(ref.detach(), dim=1)
    if floor is not None:
        den = torch.maximum(den, floor)
    out = num / den.clamp_min(torch.finfo(den.dtype).tiny)
    return out.nan_to_num_(nan=float("inf"))


def enforce(stats: SolverStats, policy: str, what: str) -> None:
    """Apply the failure policy to one solve.

    Args:
        stats: The solve's statistics.
        policy: ``"warn"`` emits :class:`ConvergenceWarning`, ``"raise"`` raises
            :class:`ConvergenceError`, ``"ignore"`` only leaves ``stats.converged`` False.
        what: Names the solve in the message (e.g. ``"forward solve"``).
    """
    if stats.converged or policy == "ignore":
        return
    bad = int((~stats.sample_converged).sum())
    msg = (
        f"{what} ({stats.solver}) did not converge: {bad} of {stats.residuals.numel()} samples "
        f"above tol={stats.tol:g} after {stats.iterations} iterations "
        f"(max relative residual {stats.residual:.3e})"
    )
    if policy == "raise":
        raise ConvergenceError(msg)
    warnings.warn(msg, ConvergenceWarning, stacklevel=3)

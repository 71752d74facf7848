"""Solver statistics and the failure policy shared by every solver and layer.

Nothing a solver does is silent: each call returns a :class:`SolverStats`, and a layer hands
the stats to :func:`enforce` which warns, raises or records according to ``on_failure``.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field

import torch

from ..precision import default_tol  # the rule lives with the dtype rules it follows

__all__ = [
    "POLICIES",
    "ConvergenceError",
    "ConvergenceWarning",
    "SolverStats",
    "default_tol",
    "enforce",
    "relative_residual",
]

POLICIES = ("warn", "raise", "ignore")


class ConvergenceWarning(RuntimeWarning):
    """A nonlinear or linear solve stopped before reaching its tolerance."""


class ConvergenceError(RuntimeError):
    """A solve failed and the layer's policy is ``on_failure="raise"``.

    Attributes:
        stats: The failed solve's :class:`SolverStats` (``None`` if not given).
    """

    def __init__(self, message: str, stats: SolverStats | None = None) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass
class SolverStats:
    """What one batched solve did.

    Attributes:
        solver: Name of the method (``"anderson"``, ``"gmres"``, ...).
        iterations: Iterations run (the batch iterates together; converged samples are frozen).
        evaluations: Calls of the residual / matrix-vector product, JVPs and VJPs included.
        residuals: Final relative residual of every sample, shape ``(batch,)``, detached.
        tol: The tolerance the residuals were compared with.
        history: The largest relative residual before the first and after every iteration.
        damping: Anderson's per-sample damping ``(batch, 1)`` when it estimated it (else None).
    """

    solver: str
    iterations: int
    evaluations: int
    residuals: torch.Tensor
    tol: float
    history: list[float] = field(default_factory=list, repr=False)
    damping: torch.Tensor | None = field(default=None, repr=False)

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


_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the irn package
_TORCH = os.path.dirname(os.path.abspath(torch.__file__))


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside irn and torch: the user's call (a layer's
    forward is reached through ``nn.Module.__call__``, its adjoint through ``.backward()``)."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        name = os.path.abspath(frame.f_code.co_filename)
        if not (name.startswith(_HERE + os.sep) or name.startswith(_TORCH + os.sep)):
            return level
        frame, level = frame.f_back, level + 1
    return 1


def describe(stats: SolverStats, what: str) -> str:
    """One sentence saying how a solve failed, with its numbers."""
    bad = int((~stats.sample_converged).sum())
    n = stats.residuals.numel()
    if stats.residual == float("inf"):
        how = f"{bad} of {n} samples have a non-finite residual"
    else:
        how = f"{bad} of {n} samples are above tol={stats.tol:.3g}"
    return (
        f"{what} ({stats.solver}) did not converge: {how} after {stats.iterations} iterations "
        f"(max relative residual {stats.residual:.3e})"
    )


def enforce(
    stats: SolverStats,
    policy: str,
    what: str,
    *,
    advice: str = "",
    warned: set | None = None,
    key: object = None,
) -> None:
    """Apply the failure policy to one solve.

    Args:
        stats: The solve's statistics.
        policy: ``"warn"`` emits :class:`~irn.ConvergenceWarning`, ``"raise"`` raises
            :class:`~irn.ConvergenceError`, ``"ignore"`` only leaves ``stats.converged`` False.
        what: Names the solve in the message (e.g. ``"ThetaLayer step 2 of 5: forward solve"``).
        advice: What to try, appended to the message.
        warned: A set owned by the caller (a layer): a ``key`` already in it is not warned again,
            so a training loop gets one warning per layer and kind of solve, not one per batch.
            The numbers are not part of the key. ``None`` warns every time.
        key: The de-duplication key (default ``what``).
    """
    if stats.converged or policy == "ignore":
        return
    msg = describe(stats, what) + (f". {advice}" if advice else "")
    if policy == "raise":
        raise ConvergenceError(msg, stats)
    if warned is not None:
        key = what if key is None else key
        if key in warned:
            return
        warned.add(key)
        msg += " (warned once per layer; stats.converged records every solve)"
    warnings.warn(msg, ConvergenceWarning, stacklevel=_caller_stacklevel())

"""Shared machinery of the nonlinear solvers: the per-sample tracker, masked updates, damping.

Every nonlinear solver (:mod:`irn.solvers.fixed_point`, :mod:`~irn.solvers.anderson`, ...)
measures convergence with :class:`Tracker`, so they share one stopping rule, one best-iterate rule
and one way of reporting :class:`~irn.solvers.SolverStats`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .stats import SolverStats, relative_residual

__all__ = ["Residual", "Tracker", "damped", "select"]

Residual = Callable[[torch.Tensor], torch.Tensor]


def select(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Rows of ``new`` where ``mask`` holds, else of ``old`` (no copy when all rows agree)."""
    if torch.compiler.is_compiling():  # no host reads in a compiled graph
        return torch.where(mask[:, None], new, old)
    if mask.device.type == "cpu" and bool(mask.all()):  # no host sync on accelerators
        return new
    return torch.where(mask[:, None], new, old)


class Tracker:
    """Per-sample bookkeeping: relative residuals, active mask, best iterate, evaluations.

    On an accelerator nothing here reads a value back to the host except :meth:`done` (one
    flag per iteration); the per-iteration maxima for ``stats.history`` stay on the device until
    :meth:`result`. Inside ``torch.compile`` nothing is read back at all (``static``): the solve
    runs its whole budget of ``max_iter`` iterations, converged samples frozen by masks, and the
    statistics stay tensors (a compiled graph has no data-dependent control flow).
    """

    def __init__(self, name: str, y: torch.Tensor, r: torch.Tensor, tol: float, scale):
        self.name, self.tol, self.evals, self.iterations = name, tol, 1, 0
        self.static = torch.compiler.is_compiling()
        self.scale = None if scale is None else scale.to(y.dtype).detach()
        self.res = self.measure(r, y)
        self.active = self.res > tol  # a non-finite residual is inf here: active
        self.best_y, self.best_res = y, self.res
        self.history_max = [self._max(self.res)]

    def measure(self, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The shared stopping metric ``‖r_i‖ / max(‖y_i‖, s_i)``."""
        return relative_residual(r, y, self.scale)

    @staticmethod
    def _max(res: torch.Tensor) -> torch.Tensor:
        return res.max() if res.numel() else res.new_zeros(())

    def done(self) -> bool:
        return False if self.static else not bool(self.active.any())

    def update(self, y: torch.Tensor, r: torch.Tensor) -> None:
        self.iterations += 1
        self.res = self.measure(r, y)
        self.active = self.res > self.tol
        better = self.res < self.best_res
        # On a CPU a host read is cheap and two full-size selects are not: the usual case (every
        # sample improved) keeps the new iterate as it is. Accelerators never read back here.
        if not self.static and y.device.type == "cpu" and bool(better.all()):
            self.best_y, self.best_res = y, self.res
        else:
            self.best_y = torch.where(better[:, None], y, self.best_y)
            self.best_res = torch.where(better, self.res, self.best_res)
        self.history_max.append(self._max(self.res))

    def result(self) -> tuple[torch.Tensor, SolverStats]:
        history = torch.stack(self.history_max)
        # One transfer for the whole solve (compiled: a tensor, read when the user reads it).
        history = history if self.static else history.tolist()
        stats = SolverStats(
            self.name, self.iterations, self.evals, self.best_res, self.tol, history
        )
        return self.best_y, stats


def damped(y: torch.Tensor, r: torch.Tensor, beta) -> torch.Tensor:
    """``y − β r`` in one op, for a number β or a per-sample ``(batch, 1)`` tensor."""
    if isinstance(beta, torch.Tensor):
        return torch.addcmul(y, beta, r, value=-1.0)
    return torch.add(y, r, alpha=-beta)

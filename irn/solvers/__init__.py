"""Batched nonlinear and linear solvers on ``(batch, n)`` tensors, with statistics.

This layer knows tensors and closures only: no modules, no θ, no fields.
"""

from .linear import LINEAR_SOLVERS, gmres, linear_solve, richardson
from .nonlinear import SOLVERS, anderson, fixed_point, lbfgs, newton_krylov, solve
from .stats import (
    POLICIES,
    ConvergenceError,
    ConvergenceWarning,
    SolverStats,
    enforce,
    relative_residual,
)

__all__ = [
    "LINEAR_SOLVERS",
    "POLICIES",
    "SOLVERS",
    "ConvergenceError",
    "ConvergenceWarning",
    "SolverStats",
    "anderson",
    "enforce",
    "fixed_point",
    "gmres",
    "lbfgs",
    "linear_solve",
    "newton_krylov",
    "relative_residual",
    "richardson",
    "solve",
]

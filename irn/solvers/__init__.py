"""Batched nonlinear and linear solvers on ``(batch, n)`` tensors, with statistics.

This layer knows tensors and closures only: no modules, no θ, no fields.
"""

from .config import (
    GMRES,
    LBFGS,
    LINEAR_CONFIGS,
    NONLINEAR_CONFIGS,
    Anderson,
    FixedPoint,
    Neumann,
    NewtonKrylov,
    SolverConfig,
    make_config,
)
from .linear import LINEAR_SOLVERS, gmres, linear_solve, neumann_gmres, richardson
from .nonlinear import SOLVERS, anderson, fixed_point, lbfgs, newton_krylov, solve
from .stats import (
    POLICIES,
    ConvergenceError,
    ConvergenceWarning,
    SolverStats,
    default_tol,
    enforce,
    relative_residual,
)

__all__ = [
    "GMRES",
    "LBFGS",
    "LINEAR_CONFIGS",
    "NONLINEAR_CONFIGS",
    "Anderson",
    "FixedPoint",
    "Neumann",
    "NewtonKrylov",
    "SolverConfig",
    "default_tol",
    "make_config",
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
    "neumann_gmres",
    "newton_krylov",
    "relative_residual",
    "richardson",
    "solve",
]

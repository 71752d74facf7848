"""Batched nonlinear and linear solvers on ``(batch, n)`` tensors, with statistics.

This layer knows tensors and closures only: no modules, no θ, no fields.

One solver is one module: its algorithm and its configuration class (options, defaults, start
rule, hand-over rule; see ``irn/solvers/base.py``). Importing the module registers the class.
The imports below are the registry: adding a solver is one file plus one line here, and the
layer's ``solver=`` argument, the tests (every registered solver is gradchecked), the benchmarks
and the experiments take their lists from :func:`registry`.
"""

from .base import (
    LINEAR_CONFIGS,
    NONLINEAR_CONFIGS,
    SolverConfig,
    linear_solve,
    make_config,
    registry,
    solve,
)
from .stats import (
    POLICIES,
    ConvergenceError,
    ConvergenceWarning,
    SolverStats,
    default_tol,
    enforce,
    relative_residual,
)

# ---- The registry: one line per solver, in the order lists show them. ----------------------
# (A redundant alias re-exports the name; isort must keep the order.)
# isort: off
from .fixed_point import FixedPoint as FixedPoint, fixed_point as fixed_point  # noqa: E402
from .anderson import Anderson as Anderson, anderson as anderson  # noqa: E402
from .newton_krylov import NewtonKrylov as NewtonKrylov, newton_krylov as newton_krylov  # noqa: E402
from .lbfgs import LBFGS as LBFGS, lbfgs as lbfgs  # noqa: E402
from .gmres import GMRES as GMRES, gmres as gmres  # noqa: E402
from .neumann import Neumann as Neumann, neumann_gmres, richardson as richardson  # noqa: E402
# isort: on

# Name → algorithm, derived from the registry (kept for callers of the function tables).
SOLVERS = {name: cls().function() for name, cls in NONLINEAR_CONFIGS.items()}
LINEAR_SOLVERS = {name: cls().function() for name, cls in LINEAR_CONFIGS.items()}

__all__ = [
    "LINEAR_CONFIGS",
    "LINEAR_SOLVERS",
    "NONLINEAR_CONFIGS",
    "POLICIES",
    "SOLVERS",
    "ConvergenceError",
    "ConvergenceWarning",
    "SolverConfig",
    "SolverStats",
    "default_tol",
    "enforce",
    "linear_solve",
    "make_config",
    "neumann_gmres",
    "registry",
    "relative_residual",
    "solve",
]
# Every registered configuration class and its algorithm are public too.
_REGISTERED = [cls for kind in ("nonlinear", "linear") for cls in registry(kind).values()]
__all__ += sorted(
    {c.__name__ for c in _REGISTERED} | {c().function().__name__ for c in _REGISTERED}
)

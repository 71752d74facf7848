"""When a cheap damped iteration should give way to an accelerated one.

Lazy Anderson (:func:`irn.solvers.anderson` with ``lazy``) and the adjoint's damped Neumann series
(:func:`irn.solvers.neumann_gmres`) both start with plain damped steps, which cost one evaluation
(or product) and a few tensor operations each, and switch to Anderson mixing or GMRES when the
damped iteration will not finish soon. This is the one rule both use.
"""

from __future__ import annotations

import math

_HORIZON = 6  # damped steps (or series products) still worth taking before a switch


def slow_iteration(
    rate: float, rate_prev: float | None, res: float, tol: float, limit: float
) -> bool:
    """Whether a damped iteration should give way to an accelerated one: its last step
    contracted by less than ``limit`` (``rate > limit``), or at this rate it needs more than
    ``_HORIZON`` further steps from ``res`` to ``tol``, or its rate worsened by half again
    (the error is settling into slow modes, where extrapolation pays and the horizon was
    optimistic)."""
    if rate > limit or rate_prev is not None and rate > 1.5 * rate_prev:
        return True
    return res > tol and rate > 0 and math.log(tol / res) < _HORIZON * math.log(rate)

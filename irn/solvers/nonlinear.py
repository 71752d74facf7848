"""Batched nonlinear solvers for ``r(y) = 0`` with one independent system per sample.

Every solver takes a residual ``r: (batch, n) -> (batch, n)`` that acts on each row separately,
an initial guess ``y0`` and the shared stopping rule: sample ``i`` has converged when its
relative residual ``‖r_i(y_i)‖ / max(‖y_i‖, s_i)`` is at most ``tol`` (``s_i`` is an optional
per-sample scale, the norm of the layer input). Converged samples are frozen while the rest of
the batch iterates; the best iterate of each sample is returned with :class:`SolverStats`.

Why hand-written: ``torch.optim.LBFGS`` and scipy solve one coupled problem, so one hard sample
slows (or its line search distorts) the whole batch; these solvers run every sample's own
iteration in the same few tensor ops, on any device, and are differentiable end to end, so
``backward="unrolled"`` can backpropagate through them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._tracking import Residual, _damped, _select, _Tracker
from .acceleration import anderson
from .config import NONLINEAR_CONFIGS, SolverConfig, make_config
from .linear import gmres
from .stats import SolverStats

__all__ = ["SOLVERS", "anderson", "fixed_point", "lbfgs", "newton_krylov", "solve"]


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
    tr = _Tracker("fixed-point", y, r, tol, scale)
    while tr.iterations < max_iter and not tr.done():
        y = _select(tr.active, _damped(y, r, damping), y)
        r = residual(y)
        tr.evals += 1
        tr.update(y, r)
    return tr.result()


def _armijo(evaluate, y, values, d, slope, active, max_halvings=10, c=1e-4):
    """Backtracking (Armijo) line search per sample on ``φ(y) = ½‖r(y)‖²``.

    ``evaluate(y)`` returns a tuple whose first item is ``r(y)`` (L-BFGS adds its gradient);
    ``values`` is that tuple at ``y``. Each pending sample accepts the first ``λ = 2^-j`` with
    ``φ(y + λd) ≤ φ(y) + c λ slope``; samples that never pass keep their last trial. Returns
    the new point and its tuple.
    """
    phi = 0.5 * (values[0] ** 2).sum(1)
    lam = torch.ones_like(phi)
    pending = active.clone()
    y_new, new = y, values
    for _ in range(max_halvings):
        y_try = torch.where(pending[:, None], y + lam[:, None] * d, y_new)
        trial = evaluate(y_try)
        upd = pending[:, None]
        y_new = torch.where(upd, y_try, y_new)
        new = tuple(torch.where(upd, t, v) for t, v in zip(trial, new, strict=True))
        phi_try = 0.5 * (trial[0] ** 2).sum(1)
        passed = torch.isfinite(phi_try) & (phi_try <= phi + c * lam * slope)
        pending = pending & ~passed
        if not bool(pending.any()):
            break
        lam = torch.where(pending, lam / 2, lam)
    return y_new, new


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
    y = y0
    r = residual(y)
    tr = _Tracker("newton", y, r, tol, scale)
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

            y, (r,) = _armijo(evaluate, y, (r,), d, -(r**2).sum(1), active)
        else:
            y = torch.where(active[:, None], y + d, y)
            r = residual(y)
            tr.evals += 1
        tr.update(y, r)
    return tr.result()


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
    tr = _Tracker("lbfgs", y, r, tol, scale)
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

        y_new, (r_new, g_new) = _armijo(evaluate, y, (r, g), d, slope, active)
        S, Yd = (S + [y_new - y])[-memory:], (Yd + [g_new - g])[-memory:]
        y, r, g = y_new, r_new, g_new
        tr.update(y, r)
    return tr.result()


SOLVERS: dict[str, Callable[..., tuple[torch.Tensor, SolverStats]]] = {
    "fixed-point": fixed_point,
    "anderson": anderson,
    "newton": newton_krylov,
    "lbfgs": lbfgs,
}


def solve(
    method: str | SolverConfig,
    residual: Residual,
    y0: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 50,
    scale: torch.Tensor | None = None,
    **options,
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``r(y) = 0`` with a solver named ``"fixed-point"``, ``"anderson"``, ``"newton"``
    (Newton–Krylov) or ``"lbfgs"``, or given as a configuration (:class:`Anderson`, ...).

    ``options`` are the solver's own (``damping``, ``memory``, ...), validated before anything
    runs: an unknown or ill-typed option raises ``ValueError`` listing the accepted ones.
    """
    config = make_config(method, options, NONLINEAR_CONFIGS)
    fn = config.function()
    return fn(residual, y0, tol=tol, max_iter=max_iter, scale=scale, **config.options())

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

from ._batched import combine, gram, project
from ._rules import slow_iteration
from .config import NONLINEAR_CONFIGS, SolverConfig, make_config
from .linear import gmres
from .stats import SolverStats, relative_residual

__all__ = ["SOLVERS", "anderson", "fixed_point", "lbfgs", "newton_krylov", "solve"]

Residual = Callable[[torch.Tensor], torch.Tensor]


def _select(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Rows of ``new`` where ``mask`` holds, else of ``old`` (no copy when all rows agree)."""
    if mask.device.type == "cpu" and bool(mask.all()):  # no host sync on accelerators
        return new
    return torch.where(mask[:, None], new, old)


class _Tracker:
    """Per-sample bookkeeping: relative residuals, active mask, best iterate, evaluations.

    On an accelerator nothing here reads a value back to the host except :meth:`done` (one
    flag per iteration); the per-iteration maxima for ``stats.history`` stay on the device until
    :meth:`result`.
    """

    def __init__(self, name: str, y: torch.Tensor, r: torch.Tensor, tol: float, scale):
        self.name, self.tol, self.evals, self.iterations = name, tol, 1, 0
        self.scale = None if scale is None else scale.to(y.dtype).detach()
        self.res = self.measure(r, y)
        self.active = self.res > tol  # a non-finite residual is inf here: active
        self.best_y, self.best_res = y, self.res
        self._history = [self._max(self.res)]

    def measure(self, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The shared stopping metric ``‖r_i‖ / max(‖y_i‖, s_i)``."""
        return relative_residual(r, y, self.scale)

    @staticmethod
    def _max(res: torch.Tensor) -> torch.Tensor:
        return res.max() if res.numel() else res.new_zeros(())

    def done(self) -> bool:
        return not bool(self.active.any())

    def update(self, y: torch.Tensor, r: torch.Tensor) -> None:
        self.iterations += 1
        self.res = self.measure(r, y)
        self.active = self.res > self.tol
        better = self.res < self.best_res
        # On a CPU a host read is cheap and two full-size selects are not: the usual case (every
        # sample improved) keeps the new iterate as it is. Accelerators never read back here.
        if y.device.type == "cpu" and bool(better.all()):
            self.best_y, self.best_res = y, self.res
        else:
            self.best_y = torch.where(better[:, None], y, self.best_y)
            self.best_res = torch.where(better, self.res, self.best_res)
        self._history.append(self._max(self.res))

    def result(self) -> tuple[torch.Tensor, SolverStats]:
        history = torch.stack(self._history).tolist()  # one transfer for the whole solve
        stats = SolverStats(
            self.name, self.iterations, self.evals, self.best_res, self.tol, history
        )
        return self.best_y, stats


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


def anderson(
    residual: Residual,
    y0: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 50,
    scale: torch.Tensor | None = None,
    memory: int = 5,
    damping: float | None = None,
    lazy: float | None = None,
) -> tuple[torch.Tensor, SolverStats]:
    """Anderson acceleration (type II, difference form) of the damped map ``y − β r(y)``.

    With the last ``m`` differences ``ΔY_j = y_{j+1} − y_j`` and ``ΔR_j = r_{j+1} − r_j``,
    ``γ`` solves the least-squares problem ``min ‖r_k − ΔR γ‖`` per sample (see
    :func:`_mixing`: well-posed for any history, also when the differences are collinear, fewer
    than the state dimension or zero), and ``y_{k+1} = y_k − β r_k − (ΔY − β ΔR) γ``.

    ``damping`` β: a number, or ``None`` (default) for a per-sample estimate: the first step
    uses β = 1, and every later one the secant value ``β_i = ⟨Δy_i, Δr_i⟩ / ‖Δr_i‖²`` of that
    first pair (a Barzilai–Borwein step, about ``1/c`` for a residual Jacobian whose spectrum
    is centred at ``c``; 1 where it is not positive, clamped to [1/64, 64]). The differences
    are secant pairs of ``r`` whatever β is, so the history stays valid when β changes; the
    estimate is returned in ``stats.damping``.

    ``lazy``: ``None`` (default) mixes from the second iteration on. A factor in (0, 1) takes
    plain damped steps ``y − β r`` while each one shrinks the batch's worst residual by at
    least that factor, at that rate would reach ``tol`` within 6 more steps, and contracts no
    worse than 1.5 times the step before (``irn.solvers._rules.slow_iteration``); from the
    first step that fails a test it mixes (for good, starting from that step's pair). A solve
    the damped iteration finishes quickly then costs no more than that iteration (an Anderson
    step's own work is several field evaluations' worth on small states), and a slow or long
    one gets Anderson. With β estimated, the first (β = 1) step is not judged.
    ``solver="auto"`` uses ½ for fields that declare no spectrum.
    """
    y = y0
    r = residual(y)
    tr = _Tracker("anderson", y, r, tol, scale)
    bsz, n = y.shape
    m = max(1, int(memory))
    adaptive = damping is None
    damping = 1.0 if damping is None else damping
    # Ring buffers, one slot per iteration: ΔR, U = ΔY − βΔR (β is fixed once the first pair is
    # stored, so the step needs one combination, y − βr − Uγ) and the Gram matrix ΔRᵀΔR.
    # Unrolled (differentiable) solves must not write in place: there every update is new.
    inplace = not (torch.is_grad_enabled() and (y.requires_grad or r.requires_grad))
    U = dR = G = eye = None  # allocated when mixing starts (a lazy solve may never mix)
    k = 0  # differences stored so far
    y_prev = r_prev = res_prev = None
    estimated = not adaptive
    mixing = lazy is None
    rate_prev = None
    while tr.iterations < max_iter and not tr.done():
        if y_prev is not None and not estimated:  # the first pair, from a β = 1 step
            damping = _secant_damping(y - y_prev, r - r_prev)
            estimated = True
        elif y_prev is not None and not mixing:  # lazy: mix once a damped step is too slow
            # Judged on the batch's worst rate and residual, read back as two numbers (a few
            # tensor ops: each costs about as much as a small state's arithmetic on a CPU).
            worst = torch.where(tr.active, tr.res / res_prev, 0.0).max()
            rate, res_max = torch.stack((worst, tr._history[-1])).tolist()
            mixing = slow_iteration(rate, rate_prev, res_max, tol, lazy)
            rate_prev = rate
        step = _damped(y, r, damping)
        if y_prev is not None and mixing:
            if U is None:
                U, dR = y.new_zeros(bsz, m, n), y.new_zeros(bsz, m, n)
                G, eye = y.new_zeros(bsz, m, m), torch.eye(m, dtype=y.dtype, device=y.device)
            slot = k % m
            k += 1
            dy, dr = y - y_prev, r - r_prev
            u = dy - damping * dr
            if inplace:
                U[:, slot], dR[:, slot] = u, dr
            else:
                onehot = eye[slot][None, :, None]
                U = U * (1 - onehot) + onehot * u[:, None]
                dR = dR * (1 - onehot) + onehot * dr[:, None]
            j = min(k, m)
            if inplace:  # one pass over ΔR: the new Gram row (against Δr) and the rhs (r)
                both = gram(torch.stack((dr, r), 1), dR[:, :j])
                row, rhs = both[:, 0], both[:, 1]
                G[:, slot, :j], G[:, :j, slot] = row, row
            else:
                G, rhs = gram(dR, dR), project(dR[:, :j], r)
            coef = _mixing(G[:, :j, :j], rhs, r)
            step = step - combine(coef, U[:, :j])
        y_prev, r_prev, res_prev = y, r, tr.res
        y = _select(tr.active, step, y)
        r = residual(y)
        tr.evals += 1
        tr.update(y, r)
    y, stats = tr.result()
    if adaptive and isinstance(damping, torch.Tensor):
        stats.damping = damping.detach()
    return y, stats


def _damped(y: torch.Tensor, r: torch.Tensor, beta) -> torch.Tensor:
    """``y − β r`` in one op, for a number β or a per-sample ``(batch, 1)`` tensor."""
    if isinstance(beta, torch.Tensor):
        return torch.addcmul(y, beta, r, value=-1.0)
    return torch.add(y, r, alpha=-beta)


def _secant_damping(dy: torch.Tensor, dr: torch.Tensor) -> torch.Tensor:
    """Per-sample damping ``β_i = ⟨Δy_i, Δr_i⟩ / ‖Δr_i‖²`` from one secant pair, ``(batch, 1)``.

    It is the scalar ``β`` that best maps ``Δr`` to ``Δy`` (a Barzilai–Borwein step), i.e. the
    inverse of a Rayleigh-type estimate of ``∂r/∂y`` along the step: for the θ-step residual
    ``I − θh ∂F/∂y`` with a spectrum centred at ``c`` it is about ``1/c``, the damping a
    declared spectrum gives (:meth:`irn.ThetaLayer.damping`). Where the estimate is not positive
    and finite (a stalled or indefinite step) the sample keeps β = 1; it is clamped to
    [1/64, 64] so one odd pair cannot make a step explode. On benchmark problem (b) it cuts
    Anderson's iterations from 9 to 6, and on stiff steps (θhL = 16 to 50), where β = 1 fails
    within 100 iterations, it converges in 11 to 26.
    """
    acc = torch.promote_types(dy.dtype, torch.float32)  # half-precision sums overflow
    yr = (dy * dr).sum(1, keepdim=True, dtype=acc)
    rr = (dr * dr).sum(1, keepdim=True, dtype=acc)
    est = yr / rr.clamp_min(torch.finfo(acc).tiny)
    ok = (yr > 0) & torch.isfinite(est)
    beta = torch.where(ok, est.clamp(1 / 64, 64.0), torch.ones_like(est))
    return beta.to(dy.dtype)


def _mixing(G: torch.Tensor, rhs: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Anderson's mixing coefficients ``γ ≈ argmin ‖r − ΔR γ‖`` from the normal equations.

    ``G = ΔRᵀΔR`` is ``(batch, j, j)``, ``rhs = ΔRᵀ r`` is ``(batch, j)`` and ``r`` the
    current residual. G is singular whenever the state has fewer than ``j`` components, the
    differences are collinear or an iteration stalls, and its entries span many orders of
    magnitude (early differences are large, late ones small). So we solve

        (G + δ·diag(G) + μ I) γ = rhs,   δ = j·eps(G),   μ = √eps·‖r‖²,

    which is positive definite for any history. The absolute ridge ``μ`` (scaled to the
    current residual, so early, large differences do not swamp it) suppresses differences at
    the level of rounding: a stalled iteration's ``ΔR`` is noise, and mixing it would
    extrapolate far away. The relative ridge ``δ`` only lifts the rounding error of G itself
    (an exactly collinear history has eigenvalues of order ``±eps·‖G‖``, on which LU met an
    exact zero pivot on some CPUs); it is that small because hard problems need Anderson's
    near-collinear extrapolation. The system is Jacobi-scaled to a unit diagonal and factored
    in float64 with ``cholesky_ex``, which reports a failure instead of raising; a sample whose
    factorization fails or whose γ is not finite gets γ = 0, a plain damped step.
    """
    dtype = G.dtype
    # float64 for the tiny (j × j) solve whatever the state's dtype (half precision has no CPU
    # factorization at all); MPS has no float64, float32 is the widest there.
    work = torch.float32 if G.device.type == "mps" else torch.float64
    eps, tiny = torch.finfo(work).eps, torch.finfo(work).tiny
    G, rhs = G.to(work), rhs.to(work)
    mu = torch.finfo(dtype).eps ** 0.5 * torch.linalg.vector_norm(r.detach(), dim=1).to(work) ** 2
    mu = mu[:, None] + tiny
    # Jacobi scaling s = 1/√d. Differences far below the ridge (d < eps·μ) would get γ_j ≈ 0
    # anyway: capping their scale makes their scaled diagonal ≥ 1/eps, so they do (μ/d finite).
    # (√tiny keeps s² finite at an exact fixed point, where μ = tiny: an unrolled backward
    # through here must not meet inf·0.)
    s = torch.maximum(G.diagonal(dim1=1, dim2=2), eps * mu).clamp_min(tiny**0.5).rsqrt()
    # Scaled: s G s (unit diagonal) + δ + μ s². Written as few tensor ops as possible: every
    # op costs 10–60 µs at (256, 5, 5) on CPU, more than the arithmetic (this runs per iteration).
    delta = G.shape[-1] * torch.finfo(dtype).eps
    A = G * (s[:, :, None] * s[:, None, :])
    A = torch.diagonal_scatter(A, 1 + delta + mu * s * s, dim1=1, dim2=2)
    L, info = torch.linalg.cholesky_ex(A)
    gamma = torch.cholesky_solve((s * rhs)[:, :, None], L)[:, :, 0] * s
    # A failed factorization (non-finite entries) or a non-finite γ: γ = 0, a plain damped step.
    gamma = torch.where((info == 0)[:, None] & torch.isfinite(gamma), gamma, 0.0)
    return gamma.to(dtype)


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

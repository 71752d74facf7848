"""Anderson acceleration with a per-sample damping estimate and an optional lazy start.

Anderson acceleration mixes the last few secant pairs of the residual to extrapolate towards
its root; here it runs on every sample of a batch at once, in the difference form, with a
mixing solve that is well-posed for any history (:func:`_mixing`). A damping it is not given is
estimated per sample from its first secant pair (:func:`_secant_damping`), and with ``lazy`` it
takes plain damped steps until they stop paying (``irn.solvers._rules.slow_iteration``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ._batched import combine, gram, project
from ._rules import slow_iteration
from .base import SolverConfig, check_damping, check_positive_int
from .stats import SolverStats
from .tracking import Residual, Tracker, damped, select

__all__ = ["Anderson", "anderson"]


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
    tr = Tracker("anderson", y, r, tol, scale)
    bsz, n = y.shape
    # More differences than iterations are never stored: the buffers need no more slots.
    m = max(1, min(int(memory), int(max_iter)))
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
    mixing = lazy is None or tr.static  # lazy's test reads the host: compiled solves mix
    rate_prev = None
    while tr.iterations < max_iter and not tr.done():
        if y_prev is not None and not estimated:  # the first pair, from a β = 1 step
            damping = _secant_damping(y - y_prev, r - r_prev)
            estimated = True
        elif y_prev is not None and not mixing:  # lazy: mix once a damped step is too slow
            # Judged on the batch's worst rate and residual, read back as two numbers (a few
            # tensor ops: each costs about as much as a small state's arithmetic on a CPU).
            worst = torch.where(tr.active, tr.res / res_prev, 0.0).max()
            rate, res_max = torch.stack((worst, tr.history_max[-1])).tolist()
            mixing = slow_iteration(rate, rate_prev, res_max, tol, lazy)
            rate_prev = rate
        step = damped(y, r, damping)
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
        y = select(tr.active, step, y)
        r = residual(y)
        tr.evals += 1
        tr.update(y, r)
    y, stats = tr.result()
    if adaptive and isinstance(damping, torch.Tensor):
        stats.damping = damping.detach()
    return y, stats


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


@dataclass(frozen=True)
class Anderson(SolverConfig):
    """Anderson acceleration with ``memory`` differences of the damped map ``y − β r(y)``
    (``damping`` β: None estimates it per sample; ``lazy``: mix only once damped steps
    contract slower than this factor, see :func:`irn.solvers.anderson`)."""

    memory: int = 5
    damping: float | None = None
    lazy: float | None = None
    kind: ClassVar[str] = "nonlinear"
    name: ClassVar[str] = "anderson"
    spectral: ClassVar[str | None] = "damping"
    starts_at_x: ClassVar[bool] = True  # its first step from x is the damped predictor
    # "auto" on a field with no declared spectrum: damped steps while they contract by ½.
    auto_without_spectrum: ClassVar[dict[str, Any]] = {"lazy": 0.5}

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory", check_positive_int("Anderson", "memory", self.memory))
        object.__setattr__(self, "damping", check_damping("Anderson", "damping", self.damping))
        lazy = self.lazy
        if lazy is not None:
            try:
                ok = not isinstance(lazy, bool) and 0 < float(lazy) < 1
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"Anderson: lazy must be a float in (0, 1) or None, got {lazy!r}")
            object.__setattr__(self, "lazy", float(lazy))

    def function(self):
        return anderson

"""Restarted GMRES for ``A v = b``, matrix-free, with one small system per sample.

``matvec`` maps a ``(batch, n)`` tensor to ``(batch, n)`` and must act on each row separately
(a block-diagonal operator), which is what a vector-Jacobian product of a per-sample map is.
It returns ``(v, SolverStats)`` with the per-sample relative residual
``‖b_i − A v_i‖ / ‖b_i‖``.

Why hand-written: ``torch`` has no matrix-free Krylov solver, and scipy's works on one
system at a time on NumPy arrays; here the whole batch advances in a few tensor ops per
iteration, on any device, and stays differentiable (so it can also be unrolled).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ._batched import combine, project
from .base import SolverConfig, check_positive_int
from .stats import SolverStats, relative_residual

__all__ = ["GMRES", "MatVec", "gmres"]

MatVec = Callable[[torch.Tensor], torch.Tensor]


def _norm(v: torch.Tensor) -> torch.Tensor:
    # A row norm whose gradient stays finite at zero (frozen samples carry zero vectors, and
    # GMRES may be unrolled by autograd).
    return torch.sqrt((v * v).sum(1).clamp_min(torch.finfo(v.dtype).tiny))


def gmres(
    matvec: MatVec,
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 50,
    restart: int = 20,
) -> tuple[torch.Tensor, SolverStats]:
    """Restarted GMRES(m) on every sample of the batch at once.

    Minimizes ``‖b − A x‖`` over ``x0 + K_k(A, r0)`` per sample: Arnoldi with classical
    Gram–Schmidt applied twice ("CGS2": as stable as modified Gram–Schmidt, in two batched
    passes instead of k small ones) and Givens rotations. A sample whose residual estimate
    reaches ``tol`` (or whose Krylov space breaks down, i.e. it is solved exactly) is frozen:
    its later Arnoldi columns are unit columns with a zero right-hand side, adding nothing.

    The residuals in the returned stats are the true ones after every restart; for the last
    cycle they are GMRES's own estimate ``|g_{k+1}|`` (equal in exact arithmetic), which saves
    one product.

    Args:
        matvec: ``v ↦ A v`` on ``(batch, n)``.
        b: Right-hand side ``(batch, n)``.
        x0: Initial guess (default zero, which costs no product).
        tol: Relative residual tolerance ``‖b − A x‖ ≤ tol ‖b‖`` per sample.
        max_iter: Total Arnoldi steps (matrix-vector products) over all restarts.
        restart: Krylov dimension before a restart.
    """
    bsz, n = b.shape
    x = torch.zeros_like(b) if x0 is None else x0
    r = b - matvec(x) if x0 is not None else b
    evals = int(x0 is not None)
    res = relative_residual(r, b)
    done = res <= tol
    total = 0
    history = [float(res.max())]
    eps, tiny = torch.finfo(b.dtype).eps, torch.finfo(b.dtype).tiny
    bnorm = torch.linalg.vector_norm(b.detach(), dim=1).clamp_min(torch.finfo(b.dtype).tiny)
    # A preallocated basis is written in place; unrolled (differentiable) solves keep a list.
    inplace = not (torch.is_grad_enabled() and b.requires_grad)
    while total < max_iter and not bool(done.all()):
        m = min(restart, max_iter - total)
        beta = _norm(r)
        active = ~done
        v0 = torch.where(active[:, None], r / beta.clamp_min(tiny)[:, None], torch.zeros_like(r))
        if inplace:
            basis = b.new_empty(bsz, m + 1, n)  # only the filled slots are ever read
            basis[:, 0] = v0
        else:
            vs = [v0]
        cols: list[torch.Tensor] = []  # columns of the rotated (triangular) Hessenberg matrix
        cs: list[torch.Tensor] = []
        sn: list[torch.Tensor] = []
        g = [torch.where(active, beta, torch.zeros_like(beta))]  # rotated right-hand side
        estimate = res
        for k in range(m):
            Vk = basis[:, : k + 1] if inplace else torch.stack(vs, 1)
            w = matvec(Vk[:, k])
            evals += 1
            hcol = project(Vk, w)
            w = w - combine(hcol, Vk)
            h2 = project(Vk, w)  # second pass: restores orthogonality
            w = w - combine(h2, Vk)
            hcol = hcol + h2
            hk1 = _norm(w)
            # hk1 ~ 0 is a "happy breakdown": the sample is solved exactly in this space.
            # Relative to the column, so tiny (e.g. 1e-22) states are solved like any other.
            ok = hk1 > eps * hcol.abs().amax(1).clamp_min(tiny)
            v_next = torch.where(ok[:, None], w / hk1.clamp_min(tiny)[:, None], torch.zeros_like(w))
            if inplace:
                basis[:, k + 1] = v_next
            else:
                vs.append(v_next)
            h = list(hcol.unbind(1))
            for j in range(k):  # apply the earlier rotations to the new column
                h[j], h[j + 1] = cs[j] * h[j] + sn[j] * h[j + 1], -sn[j] * h[j] + cs[j] * h[j + 1]
            rho = torch.hypot(h[k], hk1).clamp_min(tiny)  # hypot: no underflow of the squares
            # Frozen samples get a unit column (c = 1, s = 0) and a zero right-hand side entry.
            c = torch.where(active, h[k] / rho, torch.ones_like(rho))
            s = torch.where(active, hk1 / rho, torch.zeros_like(rho))
            col = torch.stack(h[:k] + [rho], 1)
            unit = torch.zeros_like(col)
            unit[:, k] = 1.0
            cols.append(torch.where(active[:, None], col, unit))
            gk = torch.where(active, g[k], torch.zeros_like(g[k]))
            g[k] = c * gk
            g.append(-s * gk)
            cs.append(c)
            sn.append(s)
            # Each sample's estimate is recorded while it is active (then it stays fixed).
            estimate = torch.where(active, g[k + 1].detach().abs() / bnorm, estimate)
            active = active & (estimate > tol)
            if not bool(active.any()):
                break
        k_used = len(cols)
        R = torch.stack([torch.nn.functional.pad(c_, (0, k_used - c_.shape[1])) for c_ in cols], 2)
        # The small triangular solve runs in float32 or wider (no half-precision CPU kernel).
        work = torch.promote_types(R.dtype, torch.float32)
        rhs = torch.stack(g[:k_used], 1)[..., None].to(work)
        y = torch.linalg.solve_triangular(R.to(work), rhs, upper=True).squeeze(-1).to(b.dtype)
        V = basis[:, :k_used] if inplace else torch.stack(vs[:k_used], 1)
        x = x + combine(y, V)
        total += k_used
        res = estimate
        done = res <= tol
        if not bool(done.all()) and total < max_iter:
            r = b - matvec(x)  # the true residual, to restart from
            evals += 1
            res = relative_residual(r, b)
            done = res <= tol
        history.append(float(res.max()))
    return x, SolverStats("gmres", total, evals, res.detach(), tol, history)


@dataclass(frozen=True)
class GMRES(SolverConfig):
    """Restarted GMRES(``restart``) for a linear system."""

    restart: int = 20
    kind: ClassVar[str] = "linear"
    name: ClassVar[str] = "gmres"

    def __post_init__(self) -> None:
        object.__setattr__(self, "restart", check_positive_int("GMRES", "restart", self.restart))

    def function(self):
        return gmres

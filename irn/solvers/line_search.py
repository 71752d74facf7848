"""Backtracking (Armijo) line search per sample, shared by Newton–Krylov and L-BFGS."""

from __future__ import annotations

import torch

__all__ = ["armijo"]


def armijo(evaluate, y, values, d, slope, active, max_halvings=10, c=1e-4):
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

"""Row-wise products of a stack of vectors, picking the faster CPU kernel by size.

``bmm`` runs one small GEMV per sample: slow for short vectors, fastest for long ones; a
broadcast product and sum is the reverse. The operand layout matters as much: for
``project`` the per-sample vector must be the *row* (``w Vᵀ``), not the column (``V w``).
Measured with torch 2.13 on one thread of a 2-core AMD EPYC: at ``(512, 5, 512)`` project
takes 0.25 ms as ``w Vᵀ``, 0.62 ms broadcast and 2.2 ms as ``V w``; combine 0.21 ms as bmm
vs 0.63 ms broadcast. At ``(256, 5, 64)`` broadcasting wins both (40–70 µs vs 70–280 µs).
"""

from __future__ import annotations

import torch

_LONG = 256  # vector length from which bmm wins


def project(V: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(V_bk · w_b)`` for ``V: (batch, k, n)``, ``w: (batch, n)`` → ``(batch, k)``."""
    if V.shape[-1] >= _LONG:
        return torch.bmm(w[:, None, :], V.transpose(1, 2))[:, 0]
    return (V * w[:, None, :]).sum(2)


def combine(coef: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``Σ_k coef_bk V_bk`` for ``coef: (batch, k)``, ``V: (batch, k, n)`` → ``(batch, n)``."""
    if V.shape[-1] >= _LONG:
        return torch.bmm(coef[:, None, :], V)[:, 0]
    return (coef[:, :, None] * V).sum(1)


def gram(W: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """``(W_bp · V_bk)`` for ``W: (batch, p, n)``, ``V: (batch, k, n)`` → ``(batch, p, k)``."""
    if V.shape[-1] >= _LONG:
        return torch.bmm(W, V.transpose(1, 2))
    return (W[:, :, None, :] * V[:, None, :, :]).sum(3)

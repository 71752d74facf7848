"""The benchmark problems: fields whose Jacobian spectrum is known."""

from __future__ import annotations

import torch
from torch import nn

SIZES = {"small": (64, 256), "large": (512, 512)}  # name -> (state dim, batch)


def _unit_spectral(n: int, g: torch.Generator, dtype) -> torch.Tensor:
    w = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (w / torch.linalg.matrix_norm(w, 2)).to(dtype)


class ShiftedMLP(nn.Module):
    """F(y) = shift·y + scale·W2 tanh(W1 y) with ‖W1‖₂ = ‖W2‖₂ = 1.

    The eigenvalues of ∂F/∂y lie in the disc with centre ``shift`` and radius ``scale``, which
    the field declares as ``center``/``radius`` (the same protocol as
    :class:`irn.SpectralNormalized`). ``shift=-1, scale=0.9`` is the issue's problem (b): a
    backward-Euler step (θ = h = 1) on which plain fixed-point iteration diverges.
    """

    def __init__(self, n: int, shift: float = -1.0, scale: float = 0.9, seed: int = 0,
                 dtype=torch.float32):  # fmt: skip
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W1 = nn.Parameter(_unit_spectral(n, g, dtype))
        self.W2 = nn.Parameter(_unit_spectral(n, g, dtype))
        self.center, self.radius = float(shift), float(scale)

    def forward(self, t, y):
        return self.center * y + self.radius * torch.tanh(y @ self.W1.T) @ self.W2.T


def problem(kind: str, size: str, dtype=torch.float32, seed: int = 0):
    """``(field, x)``: ``kind`` "contractive" (F = 0.5·MLP, Picard contracts by ≤ 0.5) or
    "picard-divergent" (problem (b): F = −y + 0.9·MLP; forward Euler is stable on it, with
    growth factors |1 + hλ| ≤ 0.9, but Picard iteration on the implicit step diverges)."""
    n, batch = SIZES[size]
    if kind not in ("contractive", "picard-divergent"):
        raise ValueError(
            f"unknown problem kind {kind!r}; choose 'contractive' or 'picard-divergent'"
        )
    shift, scale = (0.0, 0.5) if kind == "contractive" else (-1.0, 0.9)
    field = ShiftedMLP(n, shift, scale, seed=seed, dtype=dtype)
    x = torch.randn(batch, n, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    return field, x

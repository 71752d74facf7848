"""The benchmark problems: fields whose Jacobian spectrum is known."""

from __future__ import annotations

import torch
from torch import nn

SIZES = {"small": (64, 256), "large": (512, 512)}  # name -> (state dim, batch) on a CPU
# On a GPU the CPU sizes are pure launch overhead; these are the GPU sizes.
CUDA_SIZES = {"small": (512, 4096), "large": (2048, 8192)}


def dims(size: str) -> tuple[int, int]:
    """``(state dim, batch)`` of a named size on the benchmarks' device."""
    from . import common

    return (CUDA_SIZES if common.DEVICE.type == "cuda" else SIZES)[size]


def _unit_spectral(n: int, g: torch.Generator, dtype) -> torch.Tensor:
    w = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (w / torch.linalg.matrix_norm(w, 2)).to(dtype)


class ShiftedMLP(nn.Module):
    """F(y) = shift·y + scale·W2 tanh(W1 y) with ‖W1‖₂ = ‖W2‖₂ = 1.

    The eigenvalues of ∂F/∂y lie in the disc with centre ``shift`` and radius ``scale``. With
    ``declared=True`` the field says so through ``center``/``radius`` (the protocol of
    :class:`irn.SpectralNormalized`), and irn derives its damping and solver from it; with
    ``declared=False`` it is a *plain* field, as most users' fields are, and irn must find
    its way alone (as torchdeq always does). ``shift=-1, scale=0.9`` is problem (b): a
    backward-Euler step (θ = h = 1) on which plain fixed-point iteration diverges.
    """

    def __init__(self, n: int, shift: float = -1.0, scale: float = 0.9, seed: int = 0,
                 dtype=torch.float32, declared: bool = True):  # fmt: skip
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W1 = nn.Parameter(_unit_spectral(n, g, dtype))
        self.W2 = nn.Parameter(_unit_spectral(n, g, dtype))
        self.shift, self.scale = float(shift), float(scale)
        if declared:
            self.center, self.radius = self.shift, self.scale

    def forward(self, t, y):
        return self.shift * y + self.scale * torch.tanh(y @ self.W1.T) @ self.W2.T


def problem(kind: str, size: str, dtype=torch.float32, seed: int = 0, declared: bool = True,
            device=None):  # fmt: skip
    """``(field, x)`` on ``device`` (default: the benchmarks' :data:`~benchmarks.common.DEVICE`):
    ``kind`` "contractive" (F = 0.5·MLP, Picard contracts by ≤ 0.5) or "picard-divergent"
    (problem (b): F = −y + 0.9·MLP; forward Euler is stable on it, with growth factors
    |1 + hλ| ≤ 0.9, but Picard iteration on the implicit step diverges). ``declared`` says
    whether the field states its spectral disc."""
    from . import common

    n, batch = dims(size)
    if kind not in ("contractive", "picard-divergent"):
        raise ValueError(
            f"unknown problem kind {kind!r}; choose 'contractive' or 'picard-divergent'"
        )
    device = common.DEVICE if device is None else device
    shift, scale = (0.0, 0.5) if kind == "contractive" else (-1.0, 0.9)
    field = ShiftedMLP(n, shift, scale, seed=seed, dtype=dtype, declared=declared).to(device)
    x = torch.randn(batch, n, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    return field, x.to(device)

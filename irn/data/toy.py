"""Small regression and classification sets: sin x on a grid, two interleaved spirals."""

from __future__ import annotations

import math

import torch

from ._common import check_dtype, make_generator


# ---------------------------------------------------------------------------- regression / spirals
def sine_regression(
    n: int = 20, *, x_range: tuple[float, float] = (-5.0, 5.0), dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample f(x) = sin x on ``n`` equispaced points of [−5, 5] (paper §4.1: 20 train, 40 val).

    Returns:
        ``(x, y)``, both shaped ``(n, 1)``.
    """
    check_dtype(dtype)
    x = torch.linspace(x_range[0], x_range[1], n, dtype=torch.float64).unsqueeze(1)
    return x.to(dtype), torch.sin(x).to(dtype)


def two_spirals(
    n: int = 400,
    *,
    noise: float = 0.0,
    turns: float = 3.0,
    radius: tuple[float, float] = (6.5, 0.5),
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate two interleaved spirals (Lang & Witbrock; the reference ``ex_spiral``).

    Class 0: r(s) (sin φ(s), cos φ(s)) with φ = 2π·turns·s and r going linearly from 6.5 to 0.5,
    s ∈ [0, 1] equispaced; class 1 is its point reflection −(x, y). With ``n = 194`` this is the
    classic 97-point-per-spiral benchmark. The reference code draws 2·400 points and takes
    ``x[0::2]`` for training and ``x[1::2]`` for validation; that works here too.

    Args:
        n: Total number of points; class 0 gets ``n - n // 2``, class 1 gets ``n // 2``.
        noise: Standard deviation of isotropic Gaussian noise added to the points.
        turns: Number of turns of each spiral.
        radius: Start and end radius.
        seed: Seed for the noise (``None``: nondeterministic).
        generator: Generator to draw from; overrides ``seed``.
        dtype: Floating dtype of ``x``.

    Returns:
        ``(x, y)``: points ``(n, 2)`` (class 0 first) and labels ``(n,)`` of dtype long.
    """
    check_dtype(dtype)
    if n < 2 or noise < 0:
        raise ValueError("need n >= 2 and noise >= 0")
    counts = (n - n // 2, n // 2)
    parts = []
    for sign, m in zip((1.0, -1.0), counts, strict=True):
        s = torch.linspace(0.0, 1.0, m, dtype=torch.float64)
        phi = 2.0 * math.pi * turns * s
        r = radius[0] + (radius[1] - radius[0]) * s
        parts.append(sign * r[:, None] * torch.stack((torch.sin(phi), torch.cos(phi)), 1))
    x = torch.cat(parts)
    if noise > 0:
        gen = make_generator(seed, generator)
        x = x + noise * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    y = torch.cat([torch.full((m,), k, dtype=torch.long) for k, m in enumerate(counts)])
    return x.to(dtype), y

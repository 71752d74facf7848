"""Offline data sets for the experiments of Reshniak & Webster (arXiv:1905.10479).

Every generator returns CPU ``torch`` tensors, takes ``dtype`` (default ``torch.float32``) and,
where randomness is involved, a ``seed`` or a ``torch.Generator``. Values are computed in float64
and cast at the end, so a given seed yields the same data in every dtype. Nothing here touches the
network: digits come from scikit-learn's bundled copy and MNIST is read from IDX files on disk.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.integrate import solve_ivp

__all__ = [
    "LV_INITIAL_CONDITIONS",
    "LV_PARAMS",
    "DataSplit",
    "LotkaVolterraSplit",
    "add_gaussian_noise",
    "digits",
    "lotka_volterra",
    "lotka_volterra_field",
    "lotka_volterra_invariant",
    "lotka_volterra_split",
    "mnist_from_idx",
    "read_idx",
    "sine_regression",
    "stiff_ode",
    "stiff_ode_field",
    "stiff_ode_solution",
    "two_spirals",
]

#: (a, b, d, g) of the paper's system ż1 = a z1 − b z1 z2, ż2 = d z1 z2 − g z2.
LV_PARAMS: tuple[float, float, float, float] = (2.0 / 3.0, 4.0 / 3.0, 1.0, 1.0)
#: The paper's 14 initial conditions (1, 0.5 + 0.1 k), k = 0..13.
LV_INITIAL_CONDITIONS: tuple[tuple[float, float], ...] = tuple(
    (1.0, 0.5 + 0.1 * k) for k in range(14)
)

_STIFF_RATE = 20.0
_Params = tuple[float, float, float, float]
# The reference fields serve torch code and scipy's solve_ivp alike, so they are generic.
_ArrayT = TypeVar("_ArrayT", np.ndarray, torch.Tensor)


class LotkaVolterraSplit(NamedTuple):
    """Paper split of the Lotka–Volterra trajectories (odd k train, even k validate)."""

    times: torch.Tensor
    train: torch.Tensor
    validation: torch.Tensor


class DataSplit(NamedTuple):
    """Train/test split of a classification data set."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _check_dtype(dtype: torch.dtype) -> None:
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")


def _make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    # An explicit generator wins so callers can thread one stream through several draws.
    if generator is not None:
        return generator
    gen = torch.Generator()
    if seed is None:
        gen.seed()  # explicit opt-out of reproducibility
    else:
        gen.manual_seed(seed)
    return gen


def _xp(x: Any) -> Any:
    return torch if isinstance(x, torch.Tensor) else np


# --------------------------------------------------------------------------------------- ODE data
def lotka_volterra_field(t: float | _ArrayT, z: _ArrayT, params: _Params = LV_PARAMS) -> _ArrayT:
    """Lotka–Volterra vector field ż1 = a z1 − b z1 z2, ż2 = d z1 z2 − g z2.

    Args:
        t: Time (unused: the system is autonomous; kept for the ``f(t, z)`` convention).
        z: States with the two components on the last axis; numpy array or torch tensor.
        params: ``(a, b, d, g)``; the paper uses (2/3, 4/3, 1, 1).

    Returns:
        ż with the same shape and array type as ``z``.
    """
    a, b, d, g = params
    xp = _xp(z)
    z1, z2 = z[..., 0], z[..., 1]
    return xp.stack((a * z1 - b * z1 * z2, d * z1 * z2 - g * z2), -1)


def lotka_volterra_invariant(z: _ArrayT, params: _Params = LV_PARAMS) -> _ArrayT:
    """First integral V = d z1 − g ln z1 + b z2 − a ln z2, constant along exact trajectories.

    Args:
        z: Positive states with the two components on the last axis (numpy or torch).
        params: ``(a, b, d, g)`` as in :func:`lotka_volterra_field`.

    Returns:
        V with the shape of ``z`` minus its last axis.
    """
    a, b, d, g = params
    xp = _xp(z)
    z1, z2 = z[..., 0], z[..., 1]
    return d * z1 - g * xp.log(z1) + b * z2 - a * xp.log(z2)


def lotka_volterra(
    initial_conditions: ArrayLike | torch.Tensor | None = None,
    *,
    t_final: float = 10.0,
    n_times: int = 51,
    params: _Params = LV_PARAMS,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lotka–Volterra trajectories (paper §4.2), solved with ``scipy.integrate.solve_ivp``.

    Solves ż1 = 2/3 z1 − 4/3 z1 z2, ż2 = z1 z2 − z2 on [0, T] and samples it at ``n_times``
    equally spaced times (paper: T = 10, 51 points, h = 0.2). DOP853 with tolerances far below the
    paper's rtol = 1e-6 keeps the data an exact reference for the learned θ-schemes.

    Args:
        initial_conditions: ``(n_traj, 2)`` array-like; ``None`` uses the paper's 14 points
            (1, 0.5 + 0.1 k), k = 0..13 (:data:`LV_INITIAL_CONDITIONS`).
        t_final: Final time T.
        n_times: Number of sample times, including t = 0 and t = T.
        params: ``(a, b, d, g)``.
        rtol: Relative tolerance of the integrator (must be ≤ 1e-6).
        atol: Absolute tolerance of the integrator.
        dtype: Floating dtype of the returned tensors.

    Returns:
        ``(times, states)``: times ``(n_times,)`` and states ``(n_traj, n_times, 2)``.
    """
    _check_dtype(dtype)
    if rtol > 1e-6:
        raise ValueError(f"rtol must be <= 1e-6 (paper setting or tighter), got {rtol}")
    if n_times < 2 or t_final <= 0:
        raise ValueError("need n_times >= 2 and t_final > 0")
    ics = np.asarray(
        LV_INITIAL_CONDITIONS if initial_conditions is None else initial_conditions,
        dtype=np.float64,
    ).reshape(-1, 2)
    times = np.linspace(0.0, t_final, n_times)
    states = np.empty((ics.shape[0], n_times, 2))
    for i, z0 in enumerate(ics):
        sol = solve_ivp(
            lotka_volterra_field,
            (0.0, t_final),
            z0,
            method="DOP853",
            t_eval=times,
            rtol=rtol,
            atol=atol,
            args=(params,),
        )
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed for initial condition {z0}: {sol.message}")
        states[i] = sol.y.T
    return torch.from_numpy(times).to(dtype), torch.from_numpy(states).to(dtype)


def lotka_volterra_split(**kwargs: Any) -> LotkaVolterraSplit:
    """Return the paper's split: of the 14 trajectories, odd k train and even k validate.

    Keyword arguments other than ``initial_conditions`` go to :func:`lotka_volterra`.

    Returns:
        ``LotkaVolterraSplit(times, train, validation)`` with states shaped ``(7, n_times, 2)``.
    """
    if "initial_conditions" in kwargs:
        raise TypeError("lotka_volterra_split always uses the paper's initial conditions")
    times, states = lotka_volterra(**kwargs)
    return LotkaVolterraSplit(times, states[1::2], states[0::2])


def stiff_ode_field(t: float | _ArrayT, y: _ArrayT) -> _ArrayT:
    """Stiff scalar field y′ = −20 (y − cos t) (numpy or torch inputs)."""
    return -_STIFF_RATE * (y - _xp(y).cos(t))


def stiff_ode_solution(t: _ArrayT, t0: float | _ArrayT, y0: float | _ArrayT) -> _ArrayT:
    """Closed-form solution of y′ = −20 (y − cos t), y(t0) = y0.

    y(t) = p(t) + (y0 − p(t0)) e^{−20 (t − t0)} with the particular solution
    p(t) = (400 cos t + 20 sin t) / 401. Arguments broadcast (numpy or torch).
    """
    xp = _xp(t)

    def particular(s: float | _ArrayT) -> _ArrayT:
        return (400.0 * xp.cos(s) + 20.0 * xp.sin(s)) / 401.0

    return particular(t) + (y0 - particular(t0)) * xp.exp(-_STIFF_RATE * (t - t0))


def stiff_ode(
    n: int = 50,
    *,
    t_span: float = 2.0,
    n_times: int = 21,
    t0_range: tuple[float, float] = (0.0, 2.0),
    y0_range: tuple[float, float] = (-0.5, 1.5),
    include_origin: bool = True,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample exact trajectories of the stiff ODE y′ = −20 (y − cos t) (paper §4.3).

    Start times t0 ~ U(t0_range) and values y0 ~ U(y0_range); each sample is evaluated at
    ``n_times`` equispaced points of [t0, t0 + t_span] (paper: span 2, 21 points, h = 0.1; 50 train
    and 20 validation samples). With ``include_origin`` the first sample is t0 = 0, y0 = 0 as in the
    paper. The equation is linear, so :func:`stiff_ode_solution` is used instead of an integrator.

    Args:
        n: Number of samples.
        t_span: Length of each time interval.
        n_times: Points per trajectory, including both ends.
        t0_range: Range of the uniform start time.
        y0_range: Range of the uniform initial value.
        include_origin: Force the first sample to (t0, y0) = (0, 0).
        seed: Seed of a fresh generator (``None``: nondeterministic).
        generator: Generator to draw from; overrides ``seed``.
        dtype: Floating dtype of the returned tensors.

    Returns:
        ``(t0, times, states)`` shaped ``(n,)``, ``(n, n_times)`` and ``(n, n_times, 1)``.
    """
    _check_dtype(dtype)
    if n < 1 or n_times < 2:
        raise ValueError("need n >= 1 and n_times >= 2")
    gen = _make_generator(seed, generator)
    u = torch.rand(2, n, generator=gen, dtype=torch.float64)
    t0 = t0_range[0] + (t0_range[1] - t0_range[0]) * u[0]
    y0 = y0_range[0] + (y0_range[1] - y0_range[0]) * u[1]
    if include_origin:
        t0[0], y0[0] = 0.0, 0.0
    times = t0[:, None] + torch.linspace(0.0, t_span, n_times, dtype=torch.float64)
    states = stiff_ode_solution(times, t0[:, None], y0[:, None])
    return t0.to(dtype), times.to(dtype), states.unsqueeze(-1).to(dtype)


# ---------------------------------------------------------------------------- regression / spirals
def sine_regression(
    n: int = 20, *, x_range: tuple[float, float] = (-5.0, 5.0), dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample f(x) = sin x on ``n`` equispaced points of [−5, 5] (paper §4.1: 20 train, 40 val).

    Returns:
        ``(x, y)``, both shaped ``(n, 1)``.
    """
    _check_dtype(dtype)
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
    _check_dtype(dtype)
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
        gen = _make_generator(seed, generator)
        x = x + noise * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    y = torch.cat([torch.full((m,), k, dtype=torch.long) for k, m in enumerate(counts)])
    return x.to(dtype), y


# ------------------------------------------------------------------------------------------ images
def digits(
    *,
    test_fraction: float = 0.2,
    n_train: int | None = None,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> DataSplit:
    """Load scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes, no download).

    Pixels (integers 0..16) are divided by 16. The split is a seeded random permutation: its first
    ``round(test_fraction · 1797)`` images form the test set, the rest the training set.

    Args:
        test_fraction: Fraction of the 1797 images held out, in [0, 1).
        n_train: Keep only the first ``n_train`` training images (e.g. to mimic small-data runs).
        seed: Seed of the permutation (``None``: nondeterministic).
        generator: Generator to draw from; overrides ``seed``.
        dtype: Floating dtype of the images.

    Returns:
        ``DataSplit(x_train, y_train, x_test, y_test)``; images ``(N, 1, 8, 8)`` in [0, 1],
        labels long.
    """
    from sklearn.datasets import load_digits  # deferred: sklearn is slow to import

    _check_dtype(dtype)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float64) / 16.0).unsqueeze(1).to(dtype)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    gen = _make_generator(seed, generator)
    perm = torch.randperm(len(y), generator=gen)
    n_test = round(test_fraction * len(y))
    test, train = perm[:n_test], perm[n_test:]
    if n_train is not None:
        if not 0 < n_train <= len(train):
            raise ValueError(f"n_train must be in [1, {len(train)}], got {n_train}")
        train = train[:n_train]
    return DataSplit(x[train], y[train], x[test], y[test])


# IDX type codes (third magic byte) -> big-endian numpy dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an IDX file (the MNIST format), plain or gzip-compressed.

    Header: 2 zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions, then one big-endian uint32 per dimension; the data
    follow in C order. Compression is detected from the gzip magic bytes, not the file name.

    Returns:
        A tensor with the stored shape and native dtype (``uint8`` for MNIST).

    Raises:
        ValueError: Naming the file, if the magic number or the size does not match.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: corrupt gzip stream ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        magic = raw[:4].hex() or "empty"
        raise ValueError(f"{path}: not an IDX file (bad magic number 0x{magic})")
    ndim, dtype = raw[3], np.dtype(_IDX_TYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: size mismatch: header says shape {shape} ({expected} bytes), "
            f"file has {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(data.astype(dtype.newbyteorder("="), copy=True))


def mnist_from_idx(
    images_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST-style images and labels from IDX files the user already has.

    Images must have magic 0x00000803 (ubyte, 3-D) and labels 0x00000801 (ubyte, 1-D), with the
    same count. The paper used the first 1000 training and first 166 test images: pass ``limit``.

    Returns:
        ``(images, labels)``: images ``(N, 1, H, W)`` scaled to [0, 1] (28×28 for MNIST), labels
        ``(N,)`` long.

    Raises:
        ValueError: Naming the offending file, on a wrong magic number, size or count.
    """
    _check_dtype(dtype)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"{images_path}: expected an image file (magic 0x00000803)")
    if labels.dtype != torch.uint8 or labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected a label file (magic 0x00000801)")
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return (images.to(torch.float64) / 255.0).unsqueeze(1).to(dtype), labels.long()


# ------------------------------------------------------------------------------------------- noise
def add_gaussian_noise(
    x: torch.Tensor,
    std: float,
    *,
    clamp: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return x + ε with ε ~ N(0, std²) i.i.d., optionally clamped (paper §4.4 robustness test).

    The 2020 runs used unclamped noise; the 2021 runs and ``torchattacks.GN`` clamp to (0, 1).

    Args:
        x: Floating-point input; not modified.
        std: Noise standard deviation; ``0`` returns an unchanged copy (no clamping either).
        clamp: ``(low, high)`` bounds applied after adding the noise.
        generator: Generator for the noise (must live on ``x.device``).

    Raises:
        ValueError: If ``std < 0`` or ``clamp`` has low > high.
        TypeError: If ``x`` is not floating point.
    """
    if std < 0:
        raise ValueError(f"std must be non-negative, got {std}")
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got {x.dtype}")
    if clamp is not None and clamp[0] > clamp[1]:
        raise ValueError(f"clamp must satisfy low <= high, got {clamp}")
    if std == 0:
        return x.clone()
    noisy = x + std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return noisy.clamp(clamp[0], clamp[1]) if clamp is not None else noisy

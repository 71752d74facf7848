"""Helpers shared by the data modules: dtype checks, seeded generators, split records."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch


class DataSplit(NamedTuple):
    """Train/test split of a classification data set."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def check_dtype(dtype: torch.dtype) -> None:
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")


def make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    # An explicit generator wins so callers can thread one stream through several draws.
    if generator is not None:
        return generator
    gen = torch.Generator()
    if seed is None:
        gen.seed()  # explicit opt-out of reproducibility
    else:
        gen.manual_seed(seed)
    return gen


def array_namespace(x: Any) -> Any:
    return torch if isinstance(x, torch.Tensor) else np


def require(module: str, feature: str):
    """Import an optional dependency of the ``data`` extra, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = {"sklearn": "scikit-learn"}.get(module.split(".")[0], module.split(".")[0])
        raise ImportError(
            f"{feature} needs {package}, which irn does not install by default: "
            f"pip install 'irn[data]' (or pip install {package})"
        ) from err

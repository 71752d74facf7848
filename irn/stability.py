"""Linear stability of the θ-methods: ``y' = λy`` gives ``y_{k+1} = R(hλ) y_k``."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["stability_function"]


def stability_function(z, theta: float):
    """``R(z) = (1 + (1−θ) z) / (1 − θ z)``, the growth factor of one θ-step at ``z = hλ``.

    Both the linear and the one-leg scheme share it. Works elementwise on complex (or real)
    tensors, NumPy arrays and Python numbers, returning the same kind; ``R`` has a pole at
    ``z = 1/θ`` (division by zero gives ``inf``/``nan`` as the array library does).
    """
    if not 0.0 <= float(theta) <= 1.0:
        raise ValueError(f"theta must lie in [0, 1], got {theta}")
    if isinstance(z, torch.Tensor):
        return (1 + (1 - theta) * z) / (1 - theta * z)
    if isinstance(z, np.ndarray):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (1 + (1 - theta) * z) / (1 - theta * z)
    z = complex(z) if isinstance(z, complex) else z
    return (1 + (1 - theta) * z) / (1 - theta * z)

"""Evaluation (batched loss and metrics, top-k accuracy) and the memory autograd saves for
backward: the public path of :mod:`irn.training.metrics`, whose names this module re-exports."""

from __future__ import annotations

# One list of names, the implementation's: this module adds nothing and hides nothing.
from .training.metrics import *  # noqa: F403
from .training.metrics import __all__  # noqa: F401

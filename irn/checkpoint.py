"""Checkpoints (weights, optimizer, schedule, RNG states, training progress): the public path
of ``irn.training.checkpoint``, whose names this module re-exports."""

from __future__ import annotations

# One list of names, the implementation's: this module adds nothing and hides nothing.
from .training.checkpoint import *  # noqa: F403
from .training.checkpoint import __all__  # noqa: F401

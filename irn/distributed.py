"""Data-parallel training with ``torch.distributed`` (one process per device, the same global
batch): the public path of ``irn.training.distributed``, whose names this module re-exports.
Every helper is a no-op (or the identity) outside a process group."""

from __future__ import annotations

# One list of names, the implementation's: this module adds nothing and hides nothing.
from .training.distributed import *  # noqa: F403
from .training.distributed import __all__  # noqa: F401

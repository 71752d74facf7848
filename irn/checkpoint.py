"""Checkpoints (weights, optimizer, schedule, RNG states, training progress): the public path
of ``irn.training.checkpoint``, whose names this module re-exports."""

from __future__ import annotations

from .training.checkpoint import (
    FORMAT,
    CheckpointError,
    capture_rng,
    load,
    load_into,
    read_checkpoint,
    restore_rng,
    save,
    save_training,
    unwrap,
    write,
)

__all__ = [
    "FORMAT",
    "CheckpointError",
    "capture_rng",
    "load",
    "load_into",
    "read_checkpoint",
    "restore_rng",
    "save",
    "save_training",
    "unwrap",
    "write",
]

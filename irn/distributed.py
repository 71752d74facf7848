"""Data-parallel training with ``torch.distributed`` (one process per device, the same global
batch): the public path of ``irn.training.distributed``, whose names this module re-exports.
Every helper is a no-op (or the identity) outside a process group."""

from __future__ import annotations

from .training.distributed import (
    active,
    all_reduce_max,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    broadcast_,
    cleanup,
    device,
    init_from_env,
    is_main,
    rank,
    shard,
    sync_rng,
    world_size,
)

__all__ = [
    "active",
    "all_reduce_max",
    "all_reduce_mean",
    "all_reduce_sum",
    "barrier",
    "broadcast_",
    "cleanup",
    "device",
    "init_from_env",
    "is_main",
    "rank",
    "shard",
    "sync_rng",
    "world_size",
]

"""Data-parallel training with ``torch.distributed``: one process per device, same global batch.

With ``W`` processes (ranks) every global batch ``B`` is split into shards ``B_r`` and each
rank computes the gradient of its shard's mean loss. DistributedDataParallel averages gradients
over ranks, so rank ``r`` weights its loss by ``W·|B_r|/|B|``::

    (1/W) Σ_r W·|B_r|/|B| · ∇ mean_{B_r} ℓ  =  ∇ mean_B ℓ,

the single-process gradient of the global batch, also when ``|B|`` is not a multiple of ``W``
(:func:`irn.train.fit` does this). The θ-step solves are per sample, so nothing else couples the
ranks: gradient all-reduce is all an :class:`~irn.ImplicitResNet` needs.

Every helper here is a no-op (or the identity) outside a process group, so the same script runs
under plain ``python`` and under ``torchrun``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist

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


def active() -> bool:
    """True inside an initialized process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_from_env(backend: str | None = None, timeout: float | None = None) -> bool:
    """Join the process group described by torchrun's environment variables.

    torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
    Without ``WORLD_SIZE`` (plain ``python``) or with ``WORLD_SIZE=1`` this does nothing.

    Args:
        backend: ``"nccl"`` when CUDA is available (each rank then uses GPU ``LOCAL_RANK``),
            else ``"gloo"``, unless given.
        timeout: Seconds a collective may wait for the other ranks (torch's default if None).

    Returns:
        True if a process group of more than one rank is active afterwards.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return active()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    kwargs = {} if timeout is None else {"timeout": timedelta(seconds=timeout)}
    dist.init_process_group(backend, **kwargs)
    return active()


def cleanup() -> None:
    """Leave the process group (if any); call once at the end of a distributed script."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of ranks (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, the rank that logs, shows progress bars and writes files."""
    return rank() == 0


def device() -> torch.device:
    """Where this rank's model and data belong: GPU ``LOCAL_RANK`` when CUDA is available (the
    one :func:`init_from_env` selected for NCCL), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank arrives here (no-op outside a process group)."""
    if active():
        dist.barrier()


def _device() -> torch.device:
    """Where collectives need their tensors: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce(values, op: str) -> torch.Tensor:
    # Python numbers become float64: torch's default float32 would round the sums.
    t = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=torch.float64)
    if not active():
        return t.clone()
    buf = t.to(_device(), copy=True)
    dist.all_reduce(buf, op=getattr(dist.ReduceOp, op))
    return buf.to(t.device)


def all_reduce_sum(values: torch.Tensor | float | Sequence[float]) -> torch.Tensor:
    """Sum over ranks: a new tensor on the input's device (a copy outside a process group);
    Python numbers are summed as float64."""
    return _reduce(values, "SUM")


def all_reduce_mean(values: torch.Tensor | float | Sequence[float]) -> torch.Tensor:
    """Mean over ranks: the sum divided by :func:`world_size` (floating point input)."""
    return all_reduce_sum(values) / world_size()


def all_reduce_max(values: torch.Tensor | float | Sequence[float]) -> torch.Tensor:
    """Maximum over ranks, e.g. of a flag that one rank raised and all must act on."""
    return _reduce(values, "MAX")


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s values; returns it."""
    if active():
        buf = tensor.to(_device(), copy=True)
        dist.broadcast(buf, src)
        tensor.copy_(buf)
    return tensor


def sync_rng() -> None:
    """Give every rank rank 0's global RNG states (CPU, and CUDA when in use): ranks whose
    modules drew different amounts (e.g. dropout on unequal shards) stay in step, and a
    checkpoint's RNG state then holds for all of them. No-op outside a process group."""
    if not active():
        return
    torch.set_rng_state(broadcast_(torch.get_rng_state()))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(broadcast_(torch.cuda.get_rng_state()))


def shard(count: int, parts: int | None = None, index: int | None = None) -> tuple[int, int]:
    """``(start, stop)`` of shard ``index`` when ``count`` items are split into ``parts``.

    Contiguous shards as :func:`torch.tensor_split` makes them (the first ``count % parts`` get
    one more item); defaults: :func:`world_size` parts, this process's :func:`rank`.
    """
    parts = world_size() if parts is None else parts
    index = rank() if index is None else index
    base, extra = divmod(count, parts)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)

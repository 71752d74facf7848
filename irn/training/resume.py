"""A training run in a checkpoint: what :func:`irn.train.fit` writes, and how it continues.

A run after epoch ``k`` is the state ``(θ_k, optimizer_k, schedule_k, RNG_k, history_k)``; the
next epoch reads all of it, so a run resumed from that state (same config, same thread count)
repeats the uninterrupted run's epochs ``k + 1, ...`` bit for bit. Rank 0 writes the file;
every rank reads it.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from .checkpoint import (
    CheckpointError,
    capture_rng,
    load_into,
    read_checkpoint,
    restore_rng,
    save_training,
)
from .config import History, TrainConfig

__all__ = ["check_target", "resume_run", "same_file", "save_run"]

PathLike = str | os.PathLike[str]


def same_file(a: PathLike, b: PathLike) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def check_target(checkpoint: PathLike | None, resume: PathLike | None, overwrite: bool) -> None:
    """Refuse to replace an existing checkpoint that this run does not continue.

    Raises:
        FileExistsError: If ``checkpoint`` exists, is not the file ``resume`` names, and
            ``overwrite`` is False (decided on rank 0, the rank that writes, for all ranks).
    """
    if checkpoint is None or overwrite or (resume is not None and same_file(resume, checkpoint)):
        return
    clash = distributed.is_main() and Path(checkpoint).exists()
    if distributed.world_size() > 1:
        clash = bool(distributed.all_reduce_max(float(clash)))
    if clash:
        raise FileExistsError(
            f"checkpoint {checkpoint} exists and this run would replace it: pass "
            f"resume={str(checkpoint)!r} to continue that run, another checkpoint path for a "
            "new run, or overwrite=True to replace it"
        )


def save_run(
    path: PathLike,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    plateau: Any | None,
    shuffler: torch.Generator,
    history: History,
    cfg: TrainConfig,
) -> int:
    """Write the training checkpoint (rank 0) and return the number of epochs it holds."""
    if distributed.is_main():
        training = {
            "epoch": len(history),
            "history": history.as_dict(),
            "config": dataclasses.asdict(cfg),
            "world_size": distributed.world_size(),
            "rng": capture_rng(shuffler),
        }
        save_training(path, net, optimizer, plateau, training)
    distributed.barrier()  # the file is complete before any rank goes on (and may read it)
    return len(history)


def resume_run(
    path: PathLike,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    plateau: Any | None,
    shuffler: torch.Generator,
    cfg: TrainConfig,
) -> tuple[int, History]:
    """Load the run saved by :func:`save_run` into the model, optimizer, schedule and
    generators; returns the epochs it holds and its history. A config that differs from the
    saved one (other than ``epochs`` and ``progress``) is allowed, with a ``UserWarning``."""
    ckpt = read_checkpoint(path)
    training = ckpt["training"]
    if training is None:
        raise CheckpointError(
            f"checkpoint {path} holds no training state (written by save(), not by "
            "fit(checkpoint=...)); use load() for weights only"
        )
    load_into(net, ckpt, path, optimizer=optimizer, scheduler=plateau)
    restore_rng(training["rng"], shuffler)
    ignored = {"epochs", "progress"}
    changed = sorted(
        k for k, v in training["config"].items() if k not in ignored and getattr(cfg, k, v) != v
    )
    if changed:
        warnings.warn(
            f"resuming {path} with a different TrainConfig ({', '.join(changed)}); the run will "
            "differ from an uninterrupted one",
            UserWarning,
            stacklevel=4,
        )
    return int(training["epoch"]), History.from_dict(training["history"])

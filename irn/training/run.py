"""The state of one :func:`irn.train.fit` call and what happens around each epoch.

After epoch ``k`` (:class:`~irn.training.epoch.EpochRunner`'s steps) the run records the
epoch's row, evaluates ``val``, steps the lr schedule (``lr ← max(lr·decay, min_lr)`` every
epoch, or on a plateau of the objective), writes the checkpoint when due, logs, and asks the
callback whether to stop; inside a process group every rank takes the same decisions.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..layers import ThetaLayer
from . import distributed
from .config import History, LossFn, TrainConfig
from .epoch import EpochRunner, TrainingError, epoch_record, reduce_ranks, where
from .metrics import evaluate
from .resume import save_run

__all__ = ["Run"]


@dataclass
class Run:
    """Everything :func:`~irn.train.fit` holds while it trains (built after the checks)."""

    model: nn.Module  # as given: the model, or a DistributedDataParallel wrapper
    net: nn.Module  # the model itself
    loss_fn: LossFn
    train: tuple[Tensor, Tensor]
    cfg: TrainConfig
    optimizer: torch.optim.Optimizer
    plateau: Any | None  # ReduceLROnPlateau, or None
    shuffler: torch.Generator
    bsz: int  # the global batch size
    history: History
    val: tuple[Tensor, Tensor] | None = None
    callback: Callable[[int, History], bool | None] | None = None
    logger: Callable[[int, dict[str, object]], None] | None = None
    checkpoint: str | os.PathLike[str] | None = None
    every: int = 1  # epochs between checkpoints
    saved: int | None = None  # epochs held by the checkpoint file (None: not written yet)
    loop: EpochRunner = field(init=False)
    implicit: bool = field(init=False)  # a ThetaLayer inside: log solver statistics

    def __post_init__(self) -> None:
        x, y = self.train
        finite_rows = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
        bad_rows = None if bool(finite_rows.all()) else ~finite_rows
        self.loop = EpochRunner(self._runner(), self.net, self.loss_fn, x, y, self.cfg,
                                self.optimizer, self.shuffler, bad_rows, self.bsz)  # fmt: skip
        self.implicit = any(isinstance(m, ThetaLayer) for m in self.net.modules())

    def _runner(self) -> nn.Module:
        """What the forward calls: in a process group, the model in DistributedDataParallel."""
        ddp = nn.parallel.DistributedDataParallel
        if distributed.world_size() == 1 or isinstance(self.model, ddp):
            return self.model
        device = next(self.net.parameters()).device
        return ddp(self.net, device_ids=[device] if device.type == "cuda" else None)

    def epoch(self, epoch: int) -> dict[str, object]:
        """Train one epoch, append its row to the history and step the lr schedule; returns
        the row (with ``unconverged_solves``, which the history does not keep)."""
        clock = time.perf_counter()
        self.loop.runner.train()
        tot = reduce_ranks(self.loop.run(epoch))
        if tot["count"] == 0:
            raise TrainingError(
                f"every batch of epoch {epoch} was non-finite and skipped; training cannot "
                "go on", epoch, None,
            )  # fmt: skip
        lr = self.optimizer.param_groups[0]["lr"]
        record = epoch_record(tot, self.cfg, self.implicit, lr)
        wall = time.perf_counter() - clock
        if distributed.world_size() > 1:  # the slowest rank's, so every rank logs the same
            wall = float(distributed.all_reduce_max([wall])[0])
        record["wall_time"] = wall
        if self.val is not None:
            record["val_loss"] = self._val_loss()
        self.history.append(record)
        self._schedule(tot)
        return record

    def finish(self, epoch: int, record: dict[str, object]) -> bool:
        """After the epoch: checkpoint when due, log, ask the callback; True: stop."""
        distributed.sync_rng()
        due = (epoch + 1) % self.every == 0 or epoch + 1 == self.cfg.epochs
        if due:
            self._save()
        if self.logger is not None and distributed.is_main():
            self.logger(epoch, record)
        stop = self.callback is not None and bool(self.callback(epoch, self.history))
        if distributed.world_size() > 1:  # one rank's callback stops them all
            stop = bool(distributed.all_reduce_max(float(stop)))
        if stop and self.saved != len(self.history):
            self._save()
        return stop

    def _save(self) -> None:
        if self.checkpoint is not None:
            self.saved = save_run(self.checkpoint, self.net, self.optimizer, self.plateau,
                                  self.shuffler, self.history, self.cfg)  # fmt: skip

    def _schedule(self, tot: Counter) -> None:
        if self.plateau is not None:
            self.plateau.step(tot["objective"] / tot["count"])  # what the optimizer minimizes
        elif self.cfg.lr_decay < 1:
            for group in self.optimizer.param_groups:
                group["lr"] = max(group["lr"] * self.cfg.lr_decay, self.cfg.min_lr)

    def _val_loss(self) -> float:
        """Validation loss; in a process group each rank evaluates a shard and the sums add."""
        xv, yv = self.val
        net, loss_fn, bsz = self.net, self.loss_fn, self.bsz
        if distributed.world_size() == 1:
            return evaluate(net, xv, yv, loss_fn=loss_fn, batch_size=bsz)
        lo, hi = distributed.shard(xv.shape[0])
        part = 0.0
        if hi > lo:
            part = (hi - lo) * evaluate(net, xv[lo:hi], yv[lo:hi], loss_fn=loss_fn, batch_size=bsz)
        return float(distributed.all_reduce_sum([part])[0]) / xv.shape[0]

    def annotate(self, err: BaseException) -> None:
        """Attach the run so far to an exception leaving :func:`fit` (and say so in its
        notes)."""
        epoch, batch = self.loop.epoch, self.loop.batch
        try:
            err.history, err.checkpoint = self.history, self.saved  # type: ignore[attr-defined]
            err.epoch, err.batch = epoch, batch  # type: ignore[attr-defined]
        except AttributeError:  # an exception type that takes no attributes
            return
        note = f"irn.train.fit stopped in {where(epoch, batch)}; err.history holds "
        note += f"the {len(self.history)} completed epochs"
        if self.checkpoint is not None:
            held = "none written yet" if self.saved is None else f"it holds {self.saved} epochs"
            note += f"; last checkpoint {self.checkpoint}: {held}"
        if hasattr(err, "add_note"):  # Python >= 3.11
            err.add_note(note)

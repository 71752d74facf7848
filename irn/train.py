"""The training loop shared by the book and the experiment scripts.

Every step minimizes ``loss_fn(model(x_B), y_B) + α_div·div + α_TV·TV`` over a batch ``B`` with
Adam (paper-notes §4): full batch by default, an optional plateau schedule, the trajectory
regularizers for an :class:`~irn.ImplicitResNet`, and a log of what the paper plots: data loss,
regularizer terms and solver iterations. Any other ``nn.Module`` trains too, without the extras.

Faults never poison the parameters: a batch whose inputs, loss or gradients are not finite is
either skipped or reported with its epoch and batch (``TrainConfig.on_nonfinite``), before the
optimizer steps. Any error leaving :func:`fit` carries the history so far (``err.history``).
Checkpoints (:mod:`irn.checkpoint`) hold everything a bit-identical resume needs, and inside a
``torch.distributed`` process group the same loop trains data-parallel (:mod:`irn.distributed`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm

from . import distributed
from .checkpoint import (
    CheckpointError,
    capture_rng,
    load,
    load_into,
    read_checkpoint,
    restore_rng,
    save,
    save_training,
    unwrap,
)
from .epoch import EpochRunner, TrainingError, reduce_ranks, where
from .layers import ThetaLayer
from .metrics import accuracy, evaluate
from .models import ImplicitResNet

__all__ = [
    "CheckpointError",
    "History",
    "TrainConfig",
    "TrainingError",
    "accuracy",
    "evaluate",
    "fit",
    "load",
    "save",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
NONFINITE = ("raise", "skip")


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`fit`. Defaults: Adam at 1e-3, full batch, no regularizers;
    the paper's 1D runs use epochs=3000, p=2, lr_decay=0.7, lr_patience=50, min_lr=1e-6."""

    epochs: int = 100  # passes over the training set (a resumed run continues up to this)
    lr: float = 1e-3  # Adam learning rate
    batch_size: int | None = None  # None: full batch, as in the paper's small problems
    weight_decay: float = 0.0  # Adam's L2 penalty
    seed: int = 0  # seeds torch's global RNG (random θ/h), the shuffling and the probes
    alpha_div: float = 0.0  # weight of the divergence term (ImplicitResNet only)
    alpha_tv: float = 0.0  # weight of the total-variation term (non-zero only for shared=False)
    p: float = 0.0  # divergence step weights (t/T)^p: p > 0 stresses the late steps
    samples: int = 1  # Hutchinson probes per state, drawn afresh every step
    grad_clip: float | None = None  # max global gradient norm; None: no clipping
    lr_decay: float = 1.0  # lr factor: every epoch, or on a plateau when lr_patience is set
    lr_patience: int | None = None  # plateau epochs before a decay (the 1D script: 50, 0.7)
    min_lr: float = 0.0  # the lr never decays below this
    progress: bool = True  # tqdm bar on stderr (rank 0 only); False prints nothing at all
    # A batch with non-finite inputs, loss or gradients: "raise" a TrainingError naming the
    # epoch and batch (default: it is almost always a bug or a diverging run, and skipping
    # silently changes the objective), or "skip" it (counted in History.skipped).
    on_nonfinite: str = "raise"

    def __post_init__(self) -> None:
        checks = {
            "epochs >= 0": self.epochs >= 0,
            "0 < lr < inf": 0 < self.lr < math.inf,
            "batch_size >= 1 or None": self.batch_size is None or self.batch_size >= 1,
            "samples >= 1": self.samples >= 1,
            "p >= 0": self.p >= 0,
            "alpha_div, alpha_tv >= 0": self.alpha_div >= 0 and self.alpha_tv >= 0,
            "grad_clip > 0 or None": self.grad_clip is None or self.grad_clip > 0,
            "0 < lr_decay <= 1": 0 < self.lr_decay <= 1,
            "lr_patience >= 0 or None": self.lr_patience is None or self.lr_patience >= 0,
            f"on_nonfinite in {NONFINITE}": self.on_nonfinite in NONFINITE,
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid TrainConfig: need {', '.join(failed)}")


@dataclass
class History:
    """Per-epoch records of :func:`fit`. A list that does not apply to the run stays empty; the
    solver lists need an :class:`~irn.ImplicitResNet`, the regularizer lists a non-zero α."""

    loss: list[float] = field(default_factory=list)  # mean data loss over the epoch's batches
    divergence: list[float] = field(default_factory=list)  # mean div term, without alpha_div
    total_variation: list[float] = field(default_factory=list)  # mean TV term, without alpha_tv
    val_loss: list[float] = field(default_factory=list)  # loss on val after the epoch (eval mode)
    iterations: list[float] = field(default_factory=list)  # forward iterations/step (explicit: 0)
    # Adjoint iterations per implicit step; None in an epoch without adjoint solves (θ = 0 or
    # backward="unrolled").
    backward_iterations: list[float | None] = field(default_factory=list)
    # Fraction of the epoch's per-sample solves (forward and adjoint, every implicit step) that
    # missed the tolerance. Per sample, so it does not depend on the batch size or on sharding.
    unconverged: list[float] = field(default_factory=list)
    # Non-finite batches skipped (on_nonfinite="skip"); the epoch's means leave them out.
    skipped: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # learning rate used during the epoch
    wall_time: list[float] = field(default_factory=list)  # seconds of training (val excluded)

    def __len__(self) -> int:
        return len(self.loss)

    def as_dict(self) -> dict[str, list]:
        """The records as plain lists (``None`` for missing values), ready for ``json.dump``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, records: dict[str, list]) -> History:
        """The inverse of :meth:`as_dict` (unknown keys are ignored, missing ones empty)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: list(v) for k, v in records.items() if k in names})


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    train: tuple[Tensor, Tensor],
    config: TrainConfig | None = None,
    *,
    val: tuple[Tensor, Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    callback: Callable[[int, History], bool | None] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    resume: str | os.PathLike[str] | None = None,
) -> History:
    """Train ``model`` on ``train = (x, y)`` and return its :class:`History`.

    Every step minimizes ``loss_fn(model(xb), yb) + α_div·div + α_TV·TV`` on a batch; the two
    regularizer terms (:func:`~irn.regularizers.trajectory_regularizer`, the paper's formula)
    need a top-level :class:`~irn.ImplicitResNet`. The run is reproducible: it calls
    ``torch.manual_seed(config.seed)`` (this resets the global RNG), shuffles mini-batches with
    its own seeded generator and draws Hutchinson probes from generators derived from the seed
    and the epoch. The data stay where they are: put them on the model's device.

    Inside a ``torch.distributed`` process group (see :func:`irn.distributed.init_from_env`)
    every rank passes the same ``train``; the model is wrapped in DistributedDataParallel
    (unless it already is), each rank trains its contiguous shard of every global batch of
    ``batch_size`` samples, and the gradients equal the single-process ones of that global batch
    up to rounding. Logged values are reduced over ranks (solver iterations are averaged over
    ranks and steps); only rank 0 shows progress and writes the checkpoint.

    Args:
        model: The network, called as ``model(x)``; left in train mode.
        loss_fn: ``loss_fn(output, target)``, a scalar averaged over the batch.
        train: Inputs and targets, batch dimension first.
        config: Hyperparameters (default ``TrainConfig()``).
        val: Optional validation ``(x, y)``, evaluated with ``loss_fn`` after every epoch.
        optimizer: Use this optimizer instead of ``Adam(lr, weight_decay)`` (which then are
            ignored); the lr schedule still applies to it.
        callback: Called as ``callback(epoch, history)`` after every epoch (after its
            checkpoint); returning ``True`` stops training.
        checkpoint: Write a training checkpoint here (atomically, replacing the file) after
            every ``checkpoint_every`` epochs, after the last epoch and when the callback stops.
        checkpoint_every: Epochs between checkpoints.
        resume: Continue the run saved in this checkpoint (model, optimizer, lr schedule, RNG
            states, history) up to ``config.epochs``; pass the same config and optimizer type.

    Raises:
        ValueError: If ``x`` and ``y`` differ in length, or a regularizer weight is set for a
            model that is not an :class:`~irn.ImplicitResNet` (it would silently do nothing).
        TrainingError: A non-finite batch under ``on_nonfinite="raise"``.
        CheckpointError: If ``resume`` is damaged or holds no training state.

    Any exception raised during training (a :class:`TrainingError`, a
    :class:`~irn.ConvergenceError` from a layer with ``on_failure="raise"``, ...) leaves with
    the attributes ``history`` (the completed epochs), ``epoch`` and ``batch`` (counting from 0,
    ``batch`` None after the batches) and ``checkpoint`` (the epochs the last written checkpoint
    holds, or None); the checkpoint file on disk is the last good one.
    """
    cfg = config if config is not None else TrainConfig()
    x, y = train
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"train inputs and targets differ in length: {x.shape[0]} != {y.shape[0]}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    net = unwrap(model)
    if (cfg.alpha_div > 0 or cfg.alpha_tv > 0) and not isinstance(net, ImplicitResNet):
        raise ValueError(
            f"alpha_div/alpha_tv need an ImplicitResNet model, got {type(net).__name__}"
        )
    n, ws = x.shape[0], distributed.world_size()
    if n == 0:
        raise ValueError("the training set is empty")
    bsz = n if cfg.batch_size is None else min(cfg.batch_size, n)
    if min(bsz, n % bsz or bsz) < ws:
        smallest = min(bsz, n % bsz or bsz)
        raise ValueError(f"every batch needs >= {ws} samples (one per rank), one has {smallest}")
    torch.manual_seed(cfg.seed)
    shuffler = torch.Generator().manual_seed(cfg.seed)
    if optimizer is None:
        params = [q for q in net.parameters() if q.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plateau = None
    if cfg.lr_patience is not None and cfg.lr_decay < 1:
        # cooldown = patience, as the reference 1D script (ReduceLROnPlateau(0.7, 50, 50)).
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=cfg.lr_decay, patience=cfg.lr_patience,
            cooldown=cfg.lr_patience, min_lr=cfg.min_lr,
        )  # fmt: skip
    history, start = History(), 0
    if resume is not None:
        start, history = _resume(resume, net, optimizer, plateau, shuffler, cfg)
    runner = model
    if ws > 1 and not isinstance(model, nn.parallel.DistributedDataParallel):
        device = next(net.parameters()).device
        ids = [device] if device.type == "cuda" else None
        runner = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    finite_rows = torch.isfinite(x.reshape(n, -1)).all(dim=1)
    bad_rows = None if bool(finite_rows.all()) else ~finite_rows
    loop = EpochRunner(runner, net, loss_fn, x, y, cfg, optimizer, shuffler, bad_rows, bsz)
    implicit = any(isinstance(m, ThetaLayer) for m in net.modules())  # log solver statistics
    show = cfg.progress and distributed.is_main()
    bar = tqdm(range(start, cfg.epochs), desc="fit", disable=not show, file=sys.stderr,
               initial=start, total=cfg.epochs)  # fmt: skip
    # Epochs held by the checkpoint file (the resumed one, if it is the same file).
    same = resume is not None and checkpoint is not None and _same_file(resume, checkpoint)
    saved = start if same else None
    try:
        for epoch in bar:
            clock = time.perf_counter()
            runner.train()
            tot = reduce_ranks(loop.run(epoch))
            if tot["count"] == 0:
                raise TrainingError(
                    f"every batch of epoch {epoch} was non-finite and skipped; training cannot "
                    "go on", epoch, None,
                )  # fmt: skip
            _record(history, tot, cfg, implicit, optimizer)
            wall = time.perf_counter() - clock
            if ws > 1:  # the slowest rank's time, so that every rank logs the same history
                wall = float(distributed.all_reduce_max([wall])[0])
            history.wall_time.append(wall)
            if val is not None:
                history.val_loss.append(_val_loss(net, val, loss_fn, bsz))
            if plateau is not None:
                plateau.step(tot["objective"] / tot["count"])  # what the optimizer minimizes
            elif cfg.lr_decay < 1:
                for group in optimizer.param_groups:
                    group["lr"] = max(group["lr"] * cfg.lr_decay, cfg.min_lr)
            shown = {"loss": history.loss, "val": history.val_loss, "iters": history.iterations}
            bar.set_postfix({k: f"{v[-1]:.3g}" for k, v in shown.items() if v}, refresh=False)
            if ws > 1:
                _sync_rng()
            due = (epoch + 1) % checkpoint_every == 0 or epoch + 1 == cfg.epochs
            if checkpoint is not None and due:
                saved = _save(checkpoint, net, optimizer, plateau, shuffler, history, cfg)
            stop = callback is not None and bool(callback(epoch, history))
            if ws > 1:  # one rank's callback stops them all
                stop = bool(distributed.all_reduce_max(float(stop)))
            if stop:
                if checkpoint is not None and saved != len(history):
                    saved = _save(checkpoint, net, optimizer, plateau, shuffler, history, cfg)
                break
    except BaseException as err:
        _annotate(err, history, loop, checkpoint, saved)
        raise
    finally:
        bar.close()
    return history


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _annotate(err: BaseException, history: History, loop: EpochRunner, path, saved) -> None:
    """Attach the run so far to an exception leaving :func:`fit` (and say so in its notes)."""
    try:
        err.history, err.checkpoint = history, saved  # type: ignore[attr-defined]
        err.epoch, err.batch = loop.epoch, loop.batch  # type: ignore[attr-defined]
    except AttributeError:  # an exception type that takes no attributes
        return
    note = f"irn.train.fit stopped in {where(loop.epoch, loop.batch)}; err.history holds "
    note += f"the {len(history)} completed epochs"
    if path is not None:
        held = "none written yet" if saved is None else f"it holds {saved} epochs"
        note += f"; last checkpoint {path}: {held}"
    if hasattr(err, "add_note"):  # Python >= 3.11
        err.add_note(note)


def _record(history: History, tot: Counter, cfg: TrainConfig, implicit: bool, optimizer) -> None:
    count = tot["count"]
    history.loss.append(tot["loss"] / count)
    if cfg.alpha_div:
        history.divergence.append(tot["div"] / count)
    if cfg.alpha_tv:
        history.total_variation.append(tot["tv"] / count)
    if implicit:
        history.iterations.append(tot["forward"] / max(tot["steps"], 1))
        adj = tot["adjoints"]
        history.backward_iterations.append(tot["backward"] / adj if adj else None)
        history.unconverged.append(tot["failed"] / tot["solves"] if tot["solves"] else 0.0)
    history.skipped.append(int(tot["skipped"]))
    history.lr.append(optimizer.param_groups[0]["lr"])


def _val_loss(net: nn.Module, val: tuple[Tensor, Tensor], loss_fn: LossFn, bsz: int) -> float:
    """Validation loss; in a process group each rank evaluates a shard and the sums add up."""
    xv, yv = val
    if distributed.world_size() == 1:
        return evaluate(net, xv, yv, loss_fn=loss_fn, batch_size=bsz)
    lo, hi = distributed.shard(xv.shape[0])
    part = 0.0
    if hi > lo:
        part = (hi - lo) * evaluate(net, xv[lo:hi], yv[lo:hi], loss_fn=loss_fn, batch_size=bsz)
    return float(distributed.all_reduce_sum([part])[0]) / xv.shape[0]


def _sync_rng() -> None:
    """Give every rank rank 0's global RNG state: ranks whose modules drew different amounts
    (e.g. dropout on unequal shards) stay in step, and the checkpoint's state holds for all."""
    torch.set_rng_state(distributed.broadcast_(torch.get_rng_state()))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(distributed.broadcast_(torch.cuda.get_rng_state()))


def _save(path, net, optimizer, plateau, shuffler, history: History, cfg: TrainConfig) -> int:
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


def _resume(path, net, optimizer, plateau, shuffler, cfg: TrainConfig) -> tuple[int, History]:
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
            stacklevel=3,
        )
    return int(training["epoch"]), History.from_dict(training["history"])

"""The training loop shared by the book and the experiment scripts: :func:`fit`.

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

import os
import sys
from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..models import ImplicitResNet
from . import distributed
from .checkpoint import unwrap
from .config import History, LossFn, TrainConfig
from .resume import check_target, resume_run, same_file
from .run import Run

__all__ = ["Logger", "check_inputs", "check_optimizer", "fit"]

Logger = Callable[[int, dict[str, object]], None]
_SHOWN = {"loss": "loss", "val_loss": "val", "iterations": "iters"}  # on the progress bar


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    train: tuple[Tensor, Tensor],
    config: TrainConfig | None = None,
    *,
    val: tuple[Tensor, Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    callback: Callable[[int, History], bool | None] | None = None,
    logger: Logger | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    resume: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> History:
    """Train ``model`` on ``train = (x, y)`` and return its :class:`History`.

    Every step minimizes ``loss_fn(model(xb), yb) + α_div·div + α_TV·TV`` on a batch; the two
    regularizer terms (:func:`~irn.regularizers.trajectory_regularizer`, the paper's formula)
    need a top-level :class:`~irn.ImplicitResNet`. The run is reproducible: it calls
    ``torch.manual_seed(config.seed)`` (this resets the global RNG), shuffles mini-batches with
    its own seeded generator and draws Hutchinson probes from generators derived from the seed
    and the epoch. The data stay where they are: put them on the model's device. Solver
    statistics come from every :class:`~irn.ThetaLayer` in the model, however deeply wrapped.

    Inside a ``torch.distributed`` process group (see :func:`irn.distributed.init_from_env`)
    every rank passes the same ``train``; the model is wrapped in DistributedDataParallel
    (unless it already is), each rank trains its contiguous shard of every global batch of
    ``batch_size`` samples, and the gradients equal the single-process ones of that global batch
    up to rounding. Logged values are reduced over ranks (solver iterations are averaged over
    ranks and steps); only rank 0 shows progress, logs and writes the checkpoint.

    Args:
        model: The network, called as ``model(x)``; left in train mode.
        loss_fn: ``loss_fn(output, target)``, a scalar averaged over the batch.
        train: Inputs and targets, batch dimension first.
        config: Hyperparameters (default ``TrainConfig()``).
        val: Optional validation ``(x, y)``, evaluated with ``loss_fn`` after every epoch.
        optimizer: Use this optimizer instead of ``Adam(lr, weight_decay)`` (which then are
            ignored); the lr schedule still applies to it. It must hold model parameters.
        callback: Called as ``callback(epoch, history)`` after every epoch (after its
            checkpoint and its log); returning ``True`` stops training.
        logger: Called as ``logger(epoch, record)`` after every epoch's checkpoint, on rank 0:
            ``record`` is the epoch's row of the history (the lists that apply) plus
            ``unconverged_solves``, the count behind ``unconverged``; e.g.
            :class:`~irn.train.TensorBoardLogger`.
        checkpoint: Write a training checkpoint here (atomically) after every
            ``checkpoint_every`` epochs, after the last epoch and when the callback stops.
            An existing file is replaced only when ``resume`` names it (the run continues) or
            with ``overwrite=True``.
        checkpoint_every: Epochs between checkpoints.
        resume: Continue the run saved in this checkpoint (model, optimizer, lr schedule, RNG
            states, history) up to ``config.epochs``; pass the same config and optimizer type.
        overwrite: Let ``checkpoint`` replace an existing file that ``resume`` does not name.

    Raises:
        ValueError: If ``x`` and ``y`` differ in length, a regularizer weight is set for a
            model that is not an :class:`~irn.ImplicitResNet` (it would silently do nothing),
            or ``optimizer`` holds none of the model's parameters (it would train nothing).
        FileExistsError: If ``checkpoint`` exists and neither ``resume`` nor ``overwrite``
            allows replacing it (nothing has been trained yet).
        TrainingError: A non-finite batch under ``on_nonfinite="raise"``.
        CheckpointError: If ``resume`` is damaged, holds no training state, or holds the state
            of another optimizer class.

    Any exception raised during training (a :class:`TrainingError`, a
    :class:`~irn.ConvergenceError` from a layer with ``on_failure="raise"``, ...) leaves with
    the attributes ``history`` (the completed epochs), ``epoch`` and ``batch`` (counting from 0,
    ``batch`` None after the batches) and ``checkpoint`` (the epochs the last written checkpoint
    holds, or None); the checkpoint file on disk is the last good one.
    """
    cfg = config if config is not None else TrainConfig()
    net = unwrap(model)
    bsz = check_inputs(net, train, cfg, checkpoint_every)
    check_target(checkpoint, resume, overwrite)
    if optimizer is None:
        params = [q for q in net.parameters() if q.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    check_optimizer(net, optimizer)
    torch.manual_seed(cfg.seed)
    shuffler = torch.Generator().manual_seed(cfg.seed)
    plateau = _plateau(optimizer, cfg)
    history, start = History(), 0
    if resume is not None:
        start, history = resume_run(resume, net, optimizer, plateau, shuffler, cfg)
    # Epochs held by the checkpoint file (the resumed one, if it is the same file).
    same = resume is not None and checkpoint is not None and same_file(resume, checkpoint)
    run = Run(model, net, loss_fn, train, cfg, optimizer, plateau, shuffler, bsz, history,
              val=val, callback=callback, logger=logger, checkpoint=checkpoint,
              every=checkpoint_every, saved=start if same else None)  # fmt: skip
    show = cfg.progress and distributed.is_main()
    bar = tqdm(range(start, cfg.epochs), desc="fit", disable=not show, file=sys.stderr,
               initial=start, total=cfg.epochs)  # fmt: skip
    try:
        for epoch in bar:
            record = run.epoch(epoch)
            bar.set_postfix({v: f"{record[k]:.3g}" for k, v in _SHOWN.items() if k in record},
                            refresh=False)  # fmt: skip
            if run.finish(epoch, record):
                break
    except BaseException as err:
        run.annotate(err)
        raise
    finally:
        bar.close()
    return run.history


def check_inputs(net: nn.Module, train: tuple[Tensor, Tensor], cfg: TrainConfig,
                 checkpoint_every: int) -> int:  # fmt: skip
    """Check what :func:`fit` was given; returns the global batch size."""
    x, y = train
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"train inputs and targets differ in length: {x.shape[0]} != {y.shape[0]}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if cfg.regularized and not isinstance(net, ImplicitResNet):
        raise ValueError(
            f"alpha_div/alpha_tv need an ImplicitResNet model, got {type(net).__name__}"
        )
    n, ws = x.shape[0], distributed.world_size()
    if n == 0:
        raise ValueError("the training set is empty")
    bsz = n if cfg.batch_size is None else min(cfg.batch_size, n)
    smallest = min(bsz, n % bsz or bsz)
    if smallest < ws:
        raise ValueError(f"every batch needs >= {ws} samples (one per rank), one has {smallest}")
    return bsz


def check_optimizer(net: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Refuse an optimizer that holds none of the model's parameters: every step would move
    other tensors (a copy of the model, a model built earlier) and train nothing."""
    own = {id(q) for q in net.parameters()}
    held = [q for group in optimizer.param_groups for q in group["params"]]
    if not any(id(q) in own for q in held):
        raise ValueError(
            f"the optimizer ({type(optimizer).__name__}) holds {len(held)} parameter tensors "
            f"and none of them belongs to the model ({type(net).__name__}): it would train "
            "nothing. Build it from this model's parameters, e.g. "
            "torch.optim.Adam(model.parameters()), after any copy or re-creation of the model"
        )


def _plateau(optimizer: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.lr_patience is None or cfg.lr_decay >= 1:
        return None
    # cooldown = patience, as the reference 1D script (ReduceLROnPlateau(0.7, 50, 50)).
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=cfg.lr_decay, patience=cfg.lr_patience,
        cooldown=cfg.lr_patience, min_lr=cfg.min_lr,
    )  # fmt: skip

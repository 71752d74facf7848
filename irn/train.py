"""The training loop shared by the book and the experiment scripts.

Adam, full batch by default, an optional plateau schedule (paper-notes §4), the trajectory
regularizers for an :class:`~irn.ImplicitResNet`, and a log of what the paper plots: data loss,
regularizer terms and solver iterations. Any other ``nn.Module`` trains too, without the extras.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .layers import ThetaStats
from .models import ImplicitResNet, Trajectory
from .regularizers import trajectory_regularizer

__all__ = ["History", "TrainConfig", "accuracy", "evaluate", "fit", "load", "save"]

LossFn = Callable[[Tensor, Tensor], Tensor]
Metric = Callable[[Tensor, Tensor], float | Tensor]
_FORMAT = "irn.checkpoint/1"  # marks files written by save(); bump if the layout changes


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`fit`. Defaults: Adam at 1e-3, full batch, no regularizers;
    the paper's 1D runs use epochs=3000, p=2, lr_decay=0.7, lr_patience=50, min_lr=1e-6."""

    epochs: int = 100  # passes over the training set
    lr: float = 1e-3  # Adam learning rate
    batch_size: int | None = None  # None: full batch, as in the paper's small problems
    weight_decay: float = 0.0  # Adam's L2 penalty
    seed: int = 0  # seeds torch's global RNG (probes, random θ/h) and the batch shuffling
    alpha_div: float = 0.0  # weight of the divergence term (ImplicitResNet only)
    alpha_tv: float = 0.0  # weight of the total-variation term (non-zero only for shared=False)
    p: float = 0.0  # divergence step weights (t/T)^p: p > 0 stresses the late steps
    samples: int = 1  # Hutchinson probes per state, drawn afresh every step
    grad_clip: float | None = None  # max global gradient norm; None: no clipping
    lr_decay: float = 1.0  # lr factor: every epoch, or on a plateau when lr_patience is set
    lr_patience: int | None = None  # plateau epochs before a decay (the 1D script: 50, 0.7)
    min_lr: float = 0.0  # the lr never decays below this
    progress: bool = True  # tqdm bar on stderr; False prints nothing at all

    def __post_init__(self) -> None:
        checks = {
            "epochs >= 0": self.epochs >= 0,
            "lr > 0": self.lr > 0,
            "batch_size >= 1 or None": self.batch_size is None or self.batch_size >= 1,
            "samples >= 1": self.samples >= 1,
            "p >= 0": self.p >= 0,
            "alpha_div, alpha_tv >= 0": self.alpha_div >= 0 and self.alpha_tv >= 0,
            "grad_clip > 0 or None": self.grad_clip is None or self.grad_clip > 0,
            "0 < lr_decay <= 1": 0 < self.lr_decay <= 1,
            "lr_patience >= 0 or None": self.lr_patience is None or self.lr_patience >= 0,
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
    unconverged: list[float] = field(default_factory=list)  # failed fraction, forward + adjoint
    lr: list[float] = field(default_factory=list)  # learning rate used during the epoch
    wall_time: list[float] = field(default_factory=list)  # seconds of training (val excluded)

    def __len__(self) -> int:
        return len(self.loss)

    def as_dict(self) -> dict[str, list]:
        """The records as plain lists (``None`` for missing values), ready for ``json.dump``."""
        return dataclasses.asdict(self)


def _regularizer_terms(
    model: ImplicitResNet, traj: Trajectory, cfg: TrainConfig
) -> tuple[Tensor, Tensor]:
    """Unweighted (divergence, TV) terms; a term whose α is 0 is not computed (unlike with
    ``return_terms=True``, which would build T + 1 double-backward VJPs just to log a 0·div)."""
    zero = traj.states[-1].new_zeros(())
    args = (model.fields, traj.times, traj.states)
    div = tv = zero
    if cfg.alpha_div:
        div = trajectory_regularizer(*args, alpha_div=1.0, p=cfg.p, samples=cfg.samples)
    if cfg.alpha_tv:
        tv = trajectory_regularizer(*args, alpha_tv=1.0)
    return div, tv


def _count_solves(stats: Sequence[ThetaStats], tot: Counter) -> None:
    """Add one batch's solver statistics (read after backward, so the adjoint ones are set)."""
    for s in stats:
        tot["steps"] += 1
        tot["forward"] += s.iterations
        if s.implicit:  # an explicit step solves nothing
            tot["solves"] += 1
            tot["failed"] += not s.converged
        if s.backward is not None:
            tot["adjoints"] += 1
            tot["backward"] += s.backward.iterations
            tot["solves"] += 1
            tot["failed"] += not s.backward.converged


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    train: tuple[Tensor, Tensor],
    config: TrainConfig | None = None,
    *,
    val: tuple[Tensor, Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    callback: Callable[[int, History], bool | None] | None = None,
) -> History:
    """Train ``model`` on ``train = (x, y)`` and return its :class:`History`.

    Every step minimizes ``loss_fn(model(xb), yb) + α_div·div + α_TV·TV`` on a batch; the two
    regularizer terms (:func:`~irn.regularizers.trajectory_regularizer`, the paper's formula)
    need a top-level :class:`~irn.ImplicitResNet`. The run is reproducible: it calls
    ``torch.manual_seed(config.seed)`` (this resets the global RNG) and shuffles mini-batches
    with its own seeded generator. The data stay where they are: put them on the model's device.

    Args:
        model: The network, called as ``model(x)``; left in train mode.
        loss_fn: ``loss_fn(output, target)``, a scalar averaged over the batch.
        train: Inputs and targets, batch dimension first.
        config: Hyperparameters (default ``TrainConfig()``).
        val: Optional validation ``(x, y)``, evaluated with ``loss_fn`` after every epoch.
        optimizer: Use this optimizer instead of ``Adam(lr, weight_decay)`` (which then are
            ignored); the lr schedule still applies to it.
        callback: Called as ``callback(epoch, history)`` after every epoch; returning ``True``
            stops training.

    Raises:
        ValueError: If ``x`` and ``y`` differ in length, or a regularizer weight is set for a
            model that is not an :class:`~irn.ImplicitResNet` (it would silently do nothing).
    """
    cfg = config if config is not None else TrainConfig()
    x, y = train
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"train inputs and targets differ in length: {x.shape[0]} != {y.shape[0]}")
    implicit = isinstance(model, ImplicitResNet)
    regularize = cfg.alpha_div > 0 or cfg.alpha_tv > 0
    if regularize and not implicit:
        raise ValueError(
            f"alpha_div/alpha_tv need an ImplicitResNet model, got {type(model).__name__}"
        )
    torch.manual_seed(cfg.seed)
    shuffler = torch.Generator().manual_seed(cfg.seed)
    if optimizer is None:
        params = [q for q in model.parameters() if q.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plateau = None
    if cfg.lr_patience is not None and cfg.lr_decay < 1:
        # cooldown = patience, as the reference 1D script (ReduceLROnPlateau(0.7, 50, 50)).
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=cfg.lr_decay, patience=cfg.lr_patience,
            cooldown=cfg.lr_patience, min_lr=cfg.min_lr,
        )  # fmt: skip
    n = x.shape[0]
    bsz = n if cfg.batch_size is None else min(cfg.batch_size, n)
    history = History()
    bar = tqdm(range(cfg.epochs), desc="fit", disable=not cfg.progress, file=sys.stderr)
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        tot: Counter = Counter()
        # Full batch keeps the data order; mini-batches get a fresh permutation every epoch.
        order = torch.randperm(n, generator=shuffler).to(x.device) if bsz < n else None
        for i in range(0, n, bsz):
            xb, yb = (x, y) if order is None else (x[order[i : i + bsz]], y[order[i : i + bsz]])
            optimizer.zero_grad(set_to_none=True)
            out, traj = model(xb, return_trajectory=True) if implicit else (model(xb), None)
            data = loss_fn(out, yb)
            objective = data
            if regularize:
                div, tv = _regularizer_terms(model, traj, cfg)
                objective = objective + cfg.alpha_div * div + cfg.alpha_tv * tv
                tot["div"] += len(xb) * float(div.detach())
                tot["tv"] += len(xb) * float(tv.detach())
            objective.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            # Weighted by batch size: the epoch mean of a mean-reduced loss over all samples.
            tot["loss"] += len(xb) * float(data.detach())
            tot["objective"] += len(xb) * float(objective.detach())
            if traj is not None:
                _count_solves(traj.stats, tot)

        history.loss.append(tot["loss"] / n)
        if cfg.alpha_div:
            history.divergence.append(tot["div"] / n)
        if cfg.alpha_tv:
            history.total_variation.append(tot["tv"] / n)
        if implicit:
            history.iterations.append(tot["forward"] / max(tot["steps"], 1))
            adj = tot["adjoints"]
            history.backward_iterations.append(tot["backward"] / adj if adj else None)
            history.unconverged.append(tot["failed"] / tot["solves"] if tot["solves"] else 0.0)
        history.lr.append(optimizer.param_groups[0]["lr"])
        history.wall_time.append(time.perf_counter() - start)
        if val is not None:
            history.val_loss.append(evaluate(model, *val, loss_fn=loss_fn, batch_size=bsz))

        if plateau is not None:
            plateau.step(tot["objective"] / n)  # the quantity the optimizer actually minimizes
        elif cfg.lr_decay < 1:
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] * cfg.lr_decay, cfg.min_lr)
        shown = {"loss": history.loss, "val": history.val_loss, "iters": history.iterations}
        bar.set_postfix({k: f"{v[-1]:.3g}" for k, v in shown.items() if v}, refresh=False)
        if callback is not None and callback(epoch, history):
            break
    bar.close()
    return history


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn | None = None,
    metric: Metric | None = None,
    batch_size: int | None = None,
) -> float | tuple[float, float]:
    """Loss and/or metric of ``model`` on ``(x, y)``, in eval mode and without gradients.

    Batch values are combined weighted by batch size, which is exact for batch means (as
    ``loss_fn`` and ``metric`` are assumed to be). Every submodule's train/eval mode is
    restored afterwards, even on error.

    Returns:
        The loss, the metric, or ``(loss, metric)`` when both are given.

    Raises:
        ValueError: If neither ``loss_fn`` nor ``metric`` is given.
    """
    if loss_fn is None and metric is None:
        raise ValueError("evaluate needs a loss_fn, a metric or both")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        n = x.shape[0]
        bsz = n if batch_size is None else batch_size
        loss = score = 0.0
        for i in range(0, n, bsz):
            out, yb = model(x[i : i + bsz]), y[i : i + bsz]
            if loss_fn is not None:
                loss += len(yb) * float(loss_fn(out, yb))
            if metric is not None:
                score += len(yb) * float(metric(out, yb))
    finally:
        for m, mode in modes:  # attribute, not .train(): train() would reset the children
            m.training = mode
    if loss_fn is None:
        return score / n
    return loss / n if metric is None else (loss / n, score / n)


def accuracy(logits: Tensor, labels: Tensor, k: int = 1) -> float:
    """Fraction of samples whose label is among the ``k`` largest logits (top-k accuracy).

    ``logits`` are ``(batch, classes)``. One logit per sample, ``(batch,)`` or ``(batch, 1)``,
    is read as binary classification: class 1 where the logit is positive (``k`` must be 1).
    """
    labels = labels.reshape(-1)
    if logits.dim() == 1 or logits.shape[1] == 1:
        if k != 1:
            raise ValueError(f"top-{k} accuracy needs (batch, classes) logits, got one logit")
        return float(((logits.reshape(-1) > 0).long() == labels).double().mean())
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must lie in [1, {logits.shape[1]}], got {k}")
    hits = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return float(hits.double().mean())


def save(
    model: nn.Module, path: str | os.PathLike[str], *, overwrite: bool = False, **extra: Any
) -> Path:
    """Write ``model.state_dict()`` and JSON-able metadata ``extra`` to ``path``.

    The file is written to a temporary file in the same folder and then moved into place, so an
    interrupted save never leaves a truncated checkpoint or destroys the previous one.

    Returns:
        The path written.

    Raises:
        FileExistsError: If ``path`` exists and ``overwrite`` is False.
        TypeError: If ``extra`` is not JSON-serializable (checked before anything is written).
    """
    path = Path(path)
    exists = FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if path.exists() and not overwrite:
        raise exists
    meta = json.dumps(extra)  # a string keeps the file loadable with weights_only=True
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": _FORMAT, "state_dict": model.state_dict(), "extra": meta}, f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:  # unlike os.replace, a hard link fails if path appeared meanwhile
                os.link(tmp, path)
            except FileExistsError:
                raise exists from None
            except OSError:  # no hard links on this file system: check, then replace
                if path.exists():
                    raise exists from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load(model: nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save` (or a plain saved state dict) into ``model``.

    Tensors are read onto the CPU (``weights_only``) and copied to the model's device.

    Returns:
        The ``extra`` metadata given to :func:`save` (``{}`` for a plain state dict).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        RuntimeError: If the checkpoint's keys or shapes do not match the model (strict).
        ValueError: If the file holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and obj.get("format") == _FORMAT:
        state, extra = obj["state_dict"], json.loads(obj["extra"])
    elif isinstance(obj, dict) and all(isinstance(v, Tensor) for v in obj.values()):
        state, extra = obj, {}
    else:
        raise ValueError(f"{path} holds no state dict (got {type(obj).__name__})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # missing/unexpected keys or shapes: say which file
        raise RuntimeError(f"checkpoint {path} does not fit the model: {err}") from err
    return extra

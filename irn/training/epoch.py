"""One epoch of :func:`irn.train.fit`: batches, fault checks, solver counts.

Each step minimizes ``ℓ_B = loss_fn(model(x_B), y_B) + α_div·div + α_TV·TV`` over a batch ``B``.
A step runs only if its inputs, ``ℓ_B`` and the gradients ``∇ℓ_B`` are finite, so a bad batch
never reaches the optimizer: it is skipped or raised as a :class:`TrainingError` that names it.
Inside a process group a rank trains its shard ``B_r`` of every global batch with the weight
``W·|B_r|/|B|`` (see :mod:`irn.distributed`), and the epoch's sums are added over ranks.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers import ThetaStats, record_stats
from ..models import ImplicitChain, ImplicitResNet, Trajectory
from ..regularizers import trajectory_regularizer
from . import distributed
from .config import History, LossFn, TrainConfig

__all__ = [
    "EpochRunner",
    "TrainingError",
    "count_solves",
    "epoch_record",
    "probe_seed",
    "reduce_ranks",
    "where",
]


class TrainingError(RuntimeError):
    """A batch was not finite under ``on_nonfinite="raise"``, or an epoch had no finite batch.

    Attributes:
        history: The :class:`History` of the epochs completed before the fault.
        epoch: The epoch it happened in (counting from 0).
        batch: The batch (counting from 0; None: after the epoch's batches).
    """

    def __init__(self, message: str, epoch: int, batch: int | None) -> None:
        super().__init__(message)
        self.history: History | None = None
        self.epoch, self.batch = epoch, batch


def where(epoch: int, batch: int | None) -> str:
    part = "after its batches" if batch is None else f"batch {batch}"
    return f"epoch {epoch}, {part} (counting from 0)"


def probe_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for the Hutchinson probes of one epoch on one rank. Derived, not stored: a
    resumed run draws the same probes without saving a generator, and ranks draw different
    probes for their different samples."""
    digest = hashlib.blake2b(f"irn.probes/{seed}/{epoch}/{rank}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def _regularizer_terms(
    model: ImplicitResNet, traj: Trajectory, cfg: TrainConfig, probes: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Unweighted (divergence, TV) terms; a term whose α is 0 is not computed (unlike with
    ``return_terms=True``, which would build T + 1 double-backward VJPs just to log a 0·div)."""
    zero = traj.states[-1].new_zeros(())
    args = (model.fields, traj.times, traj.states)
    div = tv = zero
    if cfg.alpha_div:
        div = trajectory_regularizer(
            *args, alpha_div=1.0, p=cfg.p, samples=cfg.samples, generator=probes
        )
    if cfg.alpha_tv:
        tv = trajectory_regularizer(*args, alpha_tv=1.0)
    return div, tv


def count_solves(stats: Sequence[ThetaStats], tot: Counter) -> None:
    """Add one batch's solver statistics (read after backward, so the adjoint ones are set)."""
    for s in stats:
        tot["steps"] += 1
        tot["forward"] += s.iterations
        solves = [s.forward] if s.implicit else []  # an explicit step solves nothing
        if s.backward is not None:
            tot["adjoints"] += 1
            tot["backward"] += s.backward.iterations
            solves.append(s.backward)
        for solve in solves:
            tot["solves"] += solve.residuals.numel()
            tot["failed"] += int((~solve.sample_converged).sum())


@dataclass
class _Batch:
    """One rank's forward pass over its shard of a global batch."""

    data: Tensor  # the data loss
    objective: Tensor  # what the step minimizes: data + α_div·div + α_TV·TV
    div: Tensor | None  # the unweighted regularizer terms (None: no regularizer)
    tv: Tensor | None
    stats: Sequence[ThetaStats]  # every θ-step's stats (adjoint ones set by backward)


@dataclass
class EpochRunner:
    """One rank's part of an epoch: its shard of every global batch, the fault checks."""

    runner: nn.Module  # called for the forward: the DDP wrapper, or the model itself
    net: nn.Module  # the model (parameters, fields, checkpoints)
    loss_fn: LossFn
    x: Tensor
    y: Tensor
    cfg: TrainConfig
    optimizer: torch.optim.Optimizer
    shuffler: torch.Generator
    bad_rows: Tensor | None  # True where an input row holds nan/inf (None: none does)
    bsz: int
    epoch: int = 0
    batch: int | None = None

    def run(self, epoch: int) -> Counter:
        """Train one epoch; returns this rank's sums (loss·samples, solver counts, ...)."""
        n = self.x.shape[0]
        self.epoch, tot = epoch, Counter()
        probes = None
        if self.cfg.alpha_div:
            probes = torch.Generator(self.x.device)
            probes.manual_seed(probe_seed(self.cfg.seed, epoch, distributed.rank()))
        # Full batch keeps the data order; mini-batches get a fresh permutation every epoch.
        order = None
        if self.bsz < n:
            order = torch.randperm(n, generator=self.shuffler).to(self.x.device)
        for b, i in enumerate(range(0, n, self.bsz)):
            self.batch = b
            self._step(i, order, probes, tot)
        self.batch = None
        return tot

    def _step(self, i: int, order: Tensor | None, probes, tot: Counter) -> None:
        """One optimizer step on the global batch starting at ``i`` (or a skipped batch)."""
        size = min(self.bsz, self.x.shape[0] - i)  # this rank trains rows [lo, hi) of it
        lo, hi = distributed.shard(size)
        rows = slice(i, i + size) if order is None else order[i : i + size]
        if self.bad_rows is not None and bool(self.bad_rows[rows].any()):
            self._nonfinite(tot, "inputs")  # every rank sees the same global batch
            return
        mine = slice(i + lo, i + hi) if order is None else order[i + lo : i + hi]
        self.optimizer.zero_grad(set_to_none=True)
        out = self._forward(self.x[mine], self.y[mine], probes)
        if not self._agree_finite(out.objective):
            count_solves(out.stats, tot)
            self._nonfinite(tot, f"loss (data loss {float(out.data.detach()):.3g})")
            return
        # DDP averages gradients over ranks; this weight makes that the global batch mean.
        ws = distributed.world_size()
        (out.objective if ws == 1 else out.objective * (ws * (hi - lo) / size)).backward()
        if not self._finite_gradients():
            count_solves(out.stats, tot)
            self._nonfinite(tot, "gradients")
            return
        if self.cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self._add(out, hi - lo, tot)

    def _forward(self, xb: Tensor, yb: Tensor, probes: torch.Generator | None) -> _Batch:
        if isinstance(self.net, (ImplicitResNet, ImplicitChain)):
            out, traj = self.runner(xb, return_trajectory=True)
            stats = traj.stats
        else:  # any other model: every ThetaLayer inside it reports its stats here
            with record_stats() as stats:
                out = self.runner(xb)
            traj = None
        data = self.loss_fn(out, yb)
        objective, div, tv = data, None, None
        if self.cfg.regularized:
            div, tv = _regularizer_terms(self.net, traj, self.cfg, probes)
            objective = objective + self.cfg.alpha_div * div + self.cfg.alpha_tv * tv
        return _Batch(data, objective, div, tv, stats)

    @staticmethod
    def _agree_finite(objective: Tensor) -> bool:
        finite = bool(torch.isfinite(objective.detach()))
        if distributed.world_size() > 1:  # all ranks skip (or raise) together, or DDP hangs
            finite = not bool(distributed.all_reduce_max(float(not finite)))
        return finite

    def _finite_gradients(self) -> bool:
        # After DDP's all-reduce the gradients agree on every rank, and so does this test.
        grads = [q.grad for q in self.net.parameters() if q.grad is not None]
        return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    @staticmethod
    def _add(out: _Batch, samples: int, tot: Counter) -> None:
        # Weighted by batch size: the epoch mean of a mean-reduced loss over all samples.
        tot["count"] += samples
        tot["loss"] += samples * float(out.data.detach())
        tot["objective"] += samples * float(out.objective.detach())
        if out.div is not None:
            tot["div"] += samples * float(out.div.detach())
            tot["tv"] += samples * float(out.tv.detach())
        count_solves(out.stats, tot)

    def _nonfinite(self, tot: Counter, what: str) -> None:
        """Skip the batch or raise; the gradients are dropped and nothing was stepped."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.on_nonfinite == "raise":
            raise TrainingError(
                f"non-finite {what} in {where(self.epoch, self.batch)}; the parameters were not "
                "updated. TrainConfig(on_nonfinite='skip') skips such batches",
                self.epoch,
                self.batch,
            )
        tot["skipped"] += 1


_SUMMED = ("count", "loss", "objective", "div", "tv", "steps", "forward", "adjoints",
           "backward", "solves", "failed")  # fmt: skip


def reduce_ranks(tot: Counter) -> Counter:
    """Sum the ranks' records (``skipped`` is decided jointly, so it already agrees)."""
    if distributed.world_size() == 1:
        return tot
    sums = distributed.all_reduce_sum([float(tot[k]) for k in _SUMMED])  # float64
    return Counter({**tot, **dict(zip(_SUMMED, sums.tolist(), strict=True))})


def epoch_record(tot: Counter, cfg: TrainConfig, implicit: bool, lr: float) -> dict[str, object]:
    """One epoch's row of the :class:`History` from the summed records, plus
    ``unconverged_solves`` (the count behind the ``unconverged`` fraction) for a logger."""
    count = tot["count"]
    record: dict[str, object] = {"loss": tot["loss"] / count}
    if cfg.alpha_div:
        record["divergence"] = tot["div"] / count
    if cfg.alpha_tv:
        record["total_variation"] = tot["tv"] / count
    if implicit:
        record["iterations"] = tot["forward"] / max(tot["steps"], 1)
        adj = tot["adjoints"]
        record["backward_iterations"] = tot["backward"] / adj if adj else None
        record["unconverged"] = tot["failed"] / tot["solves"] if tot["solves"] else 0.0
        record["unconverged_solves"] = int(tot["failed"])
    record["skipped"] = int(tot["skipped"])
    record["lr"] = lr
    return record

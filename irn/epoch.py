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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from . import distributed
from .layers import ThetaStats, record_stats
from .models import ImplicitChain, ImplicitResNet, Trajectory
from .regularizers import trajectory_regularizer

if TYPE_CHECKING:
    from .train import History, TrainConfig

__all__ = ["EpochRunner", "TrainingError", "count_solves", "where"]

LossFn = Callable[[Tensor, Tensor], Tensor]


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
        cfg, x, y, n = self.cfg, self.x, self.y, self.x.shape[0]
        self.epoch, tot = epoch, Counter()
        implicit = isinstance(self.net, (ImplicitResNet, ImplicitChain))
        ws, regularize = distributed.world_size(), cfg.alpha_div > 0 or cfg.alpha_tv > 0
        probes = None
        if cfg.alpha_div:
            probes = torch.Generator(x.device)
            probes.manual_seed(probe_seed(cfg.seed, epoch, distributed.rank()))
        # Full batch keeps the data order; mini-batches get a fresh permutation every epoch.
        order = torch.randperm(n, generator=self.shuffler).to(x.device) if self.bsz < n else None
        for b, i in enumerate(range(0, n, self.bsz)):
            self.batch = b
            size = min(self.bsz, n - i)  # the global batch; this rank trains rows [lo, hi) of it
            lo, hi = distributed.shard(size)
            rows = slice(i, i + size) if order is None else order[i : i + size]
            if self.bad_rows is not None and bool(self.bad_rows[rows].any()):
                self._nonfinite(tot, "inputs")  # every rank sees the same global batch
                continue
            mine = slice(i + lo, i + hi) if order is None else order[i + lo : i + hi]
            xb, yb = x[mine], y[mine]
            self.optimizer.zero_grad(set_to_none=True)
            recorded: list = []
            if implicit:
                out, traj = self.runner(xb, return_trajectory=True)
            else:  # any other model: every ThetaLayer inside it reports its stats here
                with record_stats() as recorded:
                    out = self.runner(xb)
                traj = None
            data = self.loss_fn(out, yb)
            objective = data
            if regularize:
                div, tv = _regularizer_terms(self.net, traj, cfg, probes)
                objective = objective + cfg.alpha_div * div + cfg.alpha_tv * tv
            finite = bool(torch.isfinite(objective.detach()))
            if ws > 1:  # all ranks must skip (or raise) together, or DDP would wait forever
                finite = not bool(distributed.all_reduce_max(float(not finite)))
            if not finite:
                self._count(traj, recorded, tot)
                self._nonfinite(tot, f"loss (data loss {float(data.detach()):.3g})")
                continue
            # DDP averages gradients over ranks; this weight makes that the global batch mean.
            (objective if ws == 1 else objective * (ws * (hi - lo) / size)).backward()
            grads = [q.grad for q in self.net.parameters() if q.grad is not None]
            # After DDP's all-reduce the gradients agree on every rank, and so does this test.
            if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
                self._count(traj, recorded, tot)
                self._nonfinite(tot, "gradients")
                continue
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
            self.optimizer.step()
            # Weighted by batch size: the epoch mean of a mean-reduced loss over all samples.
            tot["count"] += hi - lo
            tot["loss"] += (hi - lo) * float(data.detach())
            tot["objective"] += (hi - lo) * float(objective.detach())
            if regularize:
                tot["div"] += (hi - lo) * float(div.detach())
                tot["tv"] += (hi - lo) * float(tv.detach())
            self._count(traj, recorded, tot)
        self.batch = None
        return tot

    @staticmethod
    def _count(traj: Trajectory | None, recorded: list, tot: Counter) -> None:
        count_solves(traj.stats if traj is not None else recorded, tot)

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

"""What :func:`irn.train.fit` is told and what it returns: :class:`TrainConfig`, :class:`History`.

Every step minimizes ``loss_fn(model(x_B), y_B) + α_div·div + α_TV·TV`` over a batch ``B``;
the config holds ``α_div``, ``α_TV``, the Adam and schedule parameters and the fault policy, and
the history one row per epoch of what the paper plots (losses, regularizer terms, iterations).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["NONFINITE", "History", "LossFn", "TrainConfig"]

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

    @property
    def regularized(self) -> bool:
        """True when a trajectory regularizer is weighted (it needs an ImplicitResNet)."""
        return self.alpha_div > 0 or self.alpha_tv > 0


@dataclass
class History:
    """Per-epoch records of :func:`fit`. A list that does not apply to the run stays empty; the
    solver lists need a :class:`~irn.ThetaLayer` in the model, the regularizer lists a
    non-zero α."""

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

    def append(self, record: Mapping[str, object]) -> None:
        """Add one epoch's row: every key of ``record`` that names a list of the history
        (others, such as the logger-only ``unconverged_solves``, are left out)."""
        for name in _FIELDS:
            if name in record:
                getattr(self, name).append(record[name])

    def as_dict(self) -> dict[str, list]:
        """The records as plain lists (``None`` for missing values), ready for ``json.dump``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, records: Mapping[str, list]) -> History:
        """The inverse of :meth:`as_dict` (unknown keys are ignored, missing ones empty)."""
        return cls(**{k: list(v) for k, v in records.items() if k in _FIELDS})


_FIELDS = tuple(f.name for f in dataclasses.fields(History))

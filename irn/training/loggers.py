"""Loggers for :func:`irn.train.fit`: ``logger(epoch, record)`` after every epoch, on rank 0.

``record`` is the epoch's row of the :class:`~irn.train.History` (the lists that apply to the
run) plus ``unconverged_solves``, the count of per-sample solves, forward and adjoint, that
missed their tolerance: ``unconverged = unconverged_solves / solves``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["TAGS", "TensorBoardLogger"]

# The scalar each record key is written as; keys not listed keep their own name.
TAGS = {
    "loss": "loss/train",
    "val_loss": "loss/val",
    "divergence": "regularizer/divergence",
    "total_variation": "regularizer/total_variation",
    "lr": "lr",
    "iterations": "solver/forward_iterations",
    "backward_iterations": "solver/adjoint_iterations",
    "unconverged": "solver/unconverged_fraction",
    "unconverged_solves": "solver/unconverged_solves",
    "skipped": "faults/skipped_batches",
    "wall_time": "time/epoch_seconds",
}


class TensorBoardLogger:
    """Write every number of the epoch's record as a TensorBoard scalar at step ``epoch``:
    the losses, the learning rate, the solver statistics (forward and adjoint iterations per
    step, the unconverged fraction and count), skipped batches and the epoch's time; a value
    that is ``None`` (no adjoint solve that epoch) is left out. See ``TAGS``.

    Use: ``fit(..., logger=TensorBoardLogger("runs/exp1"))``, then ``tensorboard --logdir runs``.
    The events are flushed after every epoch, so a running job can be watched; :meth:`close`
    (or a ``with`` block) ends the file. Nothing is written before the first record.

    Args:
        log_dir: Folder of the event files (created if missing).
        **writer_options: Passed on to ``torch.utils.tensorboard.SummaryWriter``.

    Raises:
        ImportError: If the ``tensorboard`` package is missing (``pip install 'irn[tensorboard]'``).
    """

    def __init__(self, log_dir: str | os.PathLike[str], **writer_options) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch ships the writer, but it needs the tensorboard package
            raise ImportError(
                "TensorBoardLogger needs the tensorboard package: pip install 'irn[tensorboard]' "
                f"(or pip install tensorboard); {err}"
            ) from err
        self.log_dir = os.fspath(log_dir)
        self._make_writer = lambda: SummaryWriter(log_dir=self.log_dir, **writer_options)
        self._writer = None

    @property
    def writer(self):
        """The ``SummaryWriter``, made at the first use: a logger built on every rank of a
        process group writes files only on rank 0, the only rank :func:`fit` logs on."""
        if self._writer is None:
            self._writer = self._make_writer()
        return self._writer

    def __call__(self, epoch: int, record: Mapping[str, object]) -> None:
        for key, value in record.items():
            if value is not None:
                self.writer.add_scalar(TAGS.get(key, key), value, global_step=epoch)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file (if one was written)."""
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

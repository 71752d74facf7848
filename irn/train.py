"""Training: :func:`fit` minimizes ``loss_fn(model(x_B), y_B) + α_div·div + α_TV·TV`` over
batches ``B``, with checkpoints, bit-identical resumption, data parallelism and loggers.

The public path of the training API; the code lives in ``irn.training`` (``fit``,
``config``, ``checkpoint``, ``metrics``, ``loggers``, ...), which this module re-exports.
"""

from __future__ import annotations

from .training.checkpoint import CheckpointError, load, save
from .training.config import History, TrainConfig
from .training.epoch import TrainingError
from .training.fit import fit
from .training.loggers import TensorBoardLogger
from .training.metrics import accuracy, evaluate

__all__ = [
    "CheckpointError",
    "History",
    "TensorBoardLogger",
    "TrainConfig",
    "TrainingError",
    "accuracy",
    "evaluate",
    "fit",
    "load",
    "save",
]

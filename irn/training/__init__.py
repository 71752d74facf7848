"""The training machinery behind :mod:`irn.train`, one concern per module.

``config`` (:class:`TrainConfig`, :class:`History`), ``fit`` (the loop), ``run`` (one call's
state around each epoch), ``epoch`` (batches, fault checks, solver counts), ``checkpoint`` (the
file format), ``resume`` (a run's state in a checkpoint), ``metrics`` (evaluation),
``distributed`` (process groups) and ``loggers`` (TensorBoard).

Import the public names from their public paths: :mod:`irn.train` (``fit``, ``TrainConfig``,
``History``, ``TensorBoardLogger``, ...), :mod:`irn.checkpoint`, :mod:`irn.metrics` and
:mod:`irn.distributed` re-export these modules. This package imports nothing on its own, so
``irn.training.fit`` is the module (the function is ``irn.train.fit``).
"""

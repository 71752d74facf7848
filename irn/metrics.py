"""Evaluation (batched loss and metrics, top-k accuracy) and the memory autograd saves for
backward: the public path of :mod:`irn.training.metrics`, whose names this module re-exports."""

from __future__ import annotations

from .training.metrics import accuracy, evaluate, saved_bytes

__all__ = ["accuracy", "evaluate", "saved_bytes"]

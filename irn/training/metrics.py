"""Evaluation of a trained model: batched loss and metrics, top-k accuracy; the memory that
autograd saves for backward.

``evaluate`` computes ``(1/n) Σ_B |B|·m(model(x_B), y_B)``, exact for batch means ``m``.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["accuracy", "evaluate", "saved_bytes"]

LossFn = Callable[[Tensor, Tensor], Tensor]
Metric = Callable[[Tensor, Tensor], float | Tensor]


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


def saved_bytes(fn: Callable[[], object], *, exclude=()) -> tuple[object, int]:
    """Run ``fn()`` and return ``(result, bytes)``: the bytes of the tensors that the autograd
    graph of the result still holds for backward when ``fn`` returns, each storage counted
    once, leaving out the storages of the tensors in ``exclude`` (e.g. the parameters and the
    input, which exist anyway).

    Saved tensors are tracked by weak references and counted if still alive when ``fn``
    returns: those of operations whose results were dropped inside ``fn`` (a solver's discarded
    iterates) are freed with them and not counted, and a freed storage whose address is reused
    is never mistaken for a live one. (An operation that saves its own output forms a
    reference cycle through its graph node; such a tensor lives until the cycle is collected.)
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    saved: list[weakref.ref] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    gc.collect()  # drop graphs kept only by reference cycles, as backward would never see them
    live: dict[int, int] = {}
    for ref in saved:
        t = ref()
        if t is not None:
            storage = t.untyped_storage()
            if storage.data_ptr() not in skip:
                live[storage.data_ptr()] = storage.nbytes()
    return out, sum(live.values())

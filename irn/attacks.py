"""L∞ adversarial attacks on a classifier: FGSM and PGD, gradients through the implicit layers.

For a loss ℓ(f(x), y) and a budget ε, the attacker looks for the perturbation δ with
``‖δ‖_∞ ≤ ε`` that maximizes ℓ(f(x + δ), y):

- FGSM (Goodfellow et al. 2015) takes one signed-gradient step, ``x + ε·sign(∇ₓℓ)``. For a
  linear score it is exact: the worst δ in the L∞ ball is ``ε·sign(w)`` and lowers the margin
  ``w·x`` by ``ε‖w‖₁`` (``tests/test_attacks.py`` checks this closed form).
- PGD (Madry et al. 2018) repeats ``x ← Π(x + a·sign(∇ₓℓ))`` for a fixed number of steps, Π
  the projection on the ball (and on the pixel range), step ``a = 2.5 ε / steps``.

The gradient ∇ₓℓ goes through every :class:`~irn.ThetaLayer` by its adjoint, so an implicit
network is attacked with its exact gradient, not a surrogate.

Why hand-written: the two attacks are ~40 lines; torchattacks (which the authors used) would add a
dependency with its own torchvision pin for that, and irn's version runs on batched tensors of
any shape with a seeded, deterministic PGD.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["fgsm", "pgd"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def _check(eps: float, clamp: tuple[float, float] | None) -> None:
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if clamp is not None and not clamp[0] < clamp[1]:
        raise ValueError(f"clamp must be (low, high) with low < high, got {clamp}")


def _grad_sign(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> Tensor:
    """sign(∇ₓ loss_fn(model(x), y)) with the loss summed over the batch (per-sample gradients
    that do not depend on the batch size)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model(x), y) * x.shape[0]  # mean-reduced loss → sum over the batch
        (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def _project(x_adv: Tensor, x: Tensor, eps: float, clamp) -> Tensor:
    x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
    return x_adv.clamp(*clamp) if clamp is not None else x_adv


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    loss_fn: LossFn = F.cross_entropy,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """Fast gradient sign method: ``Π(x + ε·sign(∇ₓ loss_fn(model(x), y)))``.

    Args:
        model: The classifier (put it in eval mode first: the attack does not change modes).
        x, y: Inputs and targets, batch dimension first.
        eps: L∞ budget ε ≥ 0 (``0`` returns a copy of ``x``).
        loss_fn: Mean-reduced loss, as for :func:`irn.train.fit`.
        clamp: Valid input range (pixels in [0, 1]); ``None`` for no range.

    Returns:
        The adversarial inputs, detached, with ``‖x_adv − x‖_∞ ≤ ε``.
    """
    _check(eps, clamp)
    if eps == 0 or x.shape[0] == 0:
        return x.detach().clone()
    return _project(x.detach() + eps * _grad_sign(model, x, y, loss_fn), x.detach(), eps, clamp)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    loss_fn: LossFn = F.cross_entropy,
    clamp: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """Projected gradient descent in the L∞ ball, started at ``x`` (no random start, so the
    attack is deterministic): ``x ← Π(x + a·sign(∇ₓℓ))``, ``steps`` times.

    Args:
        steps: Number of signed-gradient steps (≥ 1).
        step_size: a; default ``2.5·ε/steps`` (Madry et al.), enough to reach the ball's corners.
        Others: as for :func:`fgsm`.
    """
    _check(eps, clamp)
    steps = int(steps) if float(steps) == int(steps) else steps
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    x0 = x.detach()
    if eps == 0 or x.shape[0] == 0:
        return x0.clone()
    a = 2.5 * eps / steps if step_size is None else step_size
    x_adv = x0.clone()
    for _ in range(steps):
        x_adv = _project(x_adv + a * _grad_sign(model, x_adv, y, loss_fn), x0, eps, clamp)
    return x_adv

"""Networks of the robustness experiment (:mod:`irn.experiments.robustness`): the MLP and conv
fields on digits, and the paper's convolutional MNIST network (paper-notes §4.4, 26 Nov 2020).

Every implicit block runs T θ-steps ``y_{k+1} = y_k + h[(1−θ)F(y_k) + θF(y_{k+1})]`` of one
field F. How the field is constrained is the experiment's control variable:

- ``"band"``: F^{α,β}, the eigenvalues of ∂F/∂y in the disc on [α, β] (the same for every θ, or
  per θ from the R-limits with ``limits="stability"``);
- for θ = 0 only, ``explicit="contractive"``: the band [−2/h, 0], on which the explicit step's
  R(hλ) = 1 + hλ has |R| ≤ 1 (it never amplifies), and ``explicit="plain"``: no spectral
  constraint at all, the residual block a practitioner would write.
"""

from __future__ import annotations

from torch import nn

from ..fields import MLP, ConvField, SpectralNormalized
from ..models import ImplicitChain, ImplicitResNet
from ..stability import eigenvalue_limits

__all__ = ["EXPLICIT", "band", "blocks", "build_model"]

EXPLICIT = ("band", "contractive", "plain")


def band(config, theta: float) -> tuple[float, float] | None:
    """Eigenvalue band ``(α, β)`` of ∂F/∂y for this θ, or None for an unconstrained field."""
    if theta == 0 and config.explicit == "contractive":
        return -2.0 / config.h, 0.0
    if theta == 0 and config.explicit == "plain":
        return None
    if config.limits == "eigenvalues":
        return config.alpha, config.beta
    return eigenvalue_limits(theta, config.h, config.r_min, config.r_max)


def _field(inner: nn.Module, limits) -> nn.Module:
    return inner if limits is None else SpectralNormalized(inner, alpha=limits[0], beta=limits[1])


def _block(config, theta: float, field: nn.Module, **maps) -> ImplicitResNet:
    return ImplicitResNet(
        field, steps=config.steps, interval=config.interval, theta=theta, codim=config.codim,
        tol=config.tol, on_failure="ignore", backward=config.backward, **maps,
    )  # fmt: skip


def build_model(config, theta: float, image_shape, classes: int) -> nn.Module:
    """The classifier for this θ: see :func:`paper_conv_net` for MNIST with ``field="conv"``,
    else embedding → one implicit block → linear classifier."""
    limits = band(config, theta)
    channels, height, width = image_shape
    if config.field == "conv" and config.data == "mnist":
        return paper_conv_net(config, theta, channels, classes)
    state = config.dim + config.codim
    if config.field == "mlp":
        inner = MLP(state, config.width, config.depth, config.activation)
        input_map = nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, config.dim))
        output_map = nn.Linear(state, classes)
    else:
        inner = ConvField(state, config.width, 3, config.depth, config.activation,
                          input_shape=(height, width))  # fmt: skip
        input_map = nn.Conv2d(channels, config.dim, 3, padding=1)
        pooled = (min(4, height), min(4, width))  # 8×8 digits stay 4×4
        output_map = nn.Sequential(
            nn.AdaptiveAvgPool2d(pooled),
            nn.Flatten(),
            nn.Linear(state * pooled[0] * pooled[1], classes),
        )
    return _block(config, theta, _field(inner, limits), input_map=input_map, output_map=output_map)


def paper_conv_net(config, theta: float, in_channels: int, classes: int) -> ImplicitChain:
    """The paper's MNIST network (26 Nov 2020 run): Conv(7×7, stride 2) → MaxPool(3, stride 2)
    → IRN(c) → Conv(3×3, stride 2) → IRN(2c) → Conv(3×3, stride 2) → IRN(4c) → average pool →
    linear, with c = ``config.dim`` (the paper: 8) and on 28×28 inputs the blocks at 7×7, 4×4
    and 2×2. Each IRN block is T θ-steps of one pre-activation conv field (``config.depth``
    ReLU–conv pairs, hidden channels equal to the block's); ``config.width`` is not used."""
    c = config.dim
    sizes = ((c, 7), (2 * c, 4), (4 * c, 2))  # (channels, spatial size) of the three blocks

    def irn_block(channels: int, size: int) -> ImplicitResNet:
        state = channels + config.codim
        inner = ConvField(state, state, 3, config.depth, config.activation,
                          input_shape=(size, size))  # fmt: skip
        return _block(config, theta, _field(inner, band(config, theta)))

    def shrink(block: int) -> nn.Module:  # drop the codim channels before the next conv
        return _Narrow(sizes[block][0]) if config.codim else nn.Identity()

    return ImplicitChain(
        nn.Conv2d(in_channels, c, 7, stride=2, padding=3),
        nn.MaxPool2d(3, stride=2, padding=1),
        irn_block(*sizes[0]),
        shrink(0),
        nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
        irn_block(*sizes[1]),
        shrink(1),
        nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1),
        irn_block(*sizes[2]),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * c + config.codim, classes),
    )


class _Narrow(nn.Module):
    """Keep the first ``channels`` channels (the block's codim channels are dropped)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x[:, : self.channels]


def blocks(net: nn.Module, x):
    """``[(block, u)]``: every implicit block of ``net`` and its input ``u`` for inputs ``x``
    (for an :class:`~irn.ImplicitResNet`, the network itself on ``x``: it maps its input)."""
    if isinstance(net, ImplicitResNet):
        return [(net, x)]
    out, u = [], x
    for module in net:
        if isinstance(module, ImplicitResNet):
            out.append((module, u))
        u = module(u)
    return out

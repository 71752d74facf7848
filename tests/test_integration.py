"""The pieces together: a spectrally normalized convolutional IRN learns digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import irn
from irn.train import TrainConfig, accuracy, evaluate, fit


def test_conv_irn_on_digits_trains_with_regularizers():
    torch.manual_seed(0)
    data = irn.data.digits(n_train=200, seed=0)
    field = irn.SpectralNormalized(irn.ConvField(4, width=4), alpha=-2.0, beta=0.5)
    net = irn.ImplicitResNet(
        field,
        steps=2,
        interval=2.0,
        theta=1.0,
        tol=1e-5,
        input_map=nn.Conv2d(1, 3, 3, padding=1),
        codim=1,
        output_map=nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 10)),
    )
    config = TrainConfig(epochs=6, lr=1e-2, batch_size=50, alpha_div=0.05, progress=False)
    history = fit(net, F.cross_entropy, (data.x_train, data.y_train), config)
    assert history.loss[-1] < 0.6 * history.loss[0]
    assert max(history.unconverged) == 0.0  # every forward and adjoint solve converged
    assert all(k > 0 for k in history.iterations) and len(history.divergence) == 6
    # The declared disc: centre -0.75, radius 1.25 · max σ(ϑ). It bounds the damped contraction
    # by that radius / 1.75, and "auto" picks fixed-point iteration while that is at most 1/2.
    layer = net.layers[0]
    radius = 1.25 * float(torch.sigmoid(field.scale.detach()).max())
    assert layer.contraction() == pytest.approx(radius / 1.75)
    assert layer.method() == ("fixed-point" if radius / 1.75 <= 0.5 else "anderson")
    assert layer.damping() == pytest.approx(1 / 1.75)
    acc = evaluate(net, data.x_test, data.y_test, metric=accuracy)
    assert acc > 0.5  # well above chance (0.1) after six short epochs
    # Robustness check runs end to end on noisy inputs.
    noisy = irn.data.add_gaussian_noise(
        data.x_test, 0.3, generator=torch.Generator().manual_seed(1)
    )
    assert 0.0 <= evaluate(net, noisy, data.y_test, metric=accuracy) <= 1.0

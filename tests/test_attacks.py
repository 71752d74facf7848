"""FGSM and PGD (irn.attacks): the closed form on a linear model, the budget and the pixel
range, and gradients through implicit layers (adjoint and unrolled agree)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import irn
from irn import attacks


def _linear(seed=0, d=12):
    torch.manual_seed(seed)
    model = nn.Linear(d, 2).double()
    x = torch.rand(64, d, dtype=torch.float64) * 0.5 + 0.25  # inside [0, 1], away from edges
    y = model(x).argmax(1)  # labelled by the model: every margin is positive
    return model, x, y


def _margin(model, x, y):
    z = model(x)
    return z.gather(1, y[:, None]).squeeze(1) - z.gather(1, 1 - y[:, None]).squeeze(1)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_linear_model_worst_case_in_closed_form(seed, attack):
    """For a linear score the worst δ with ‖δ‖_∞ ≤ ε is −ε·sign(w_y − w_other): it lowers the
    margin by exactly ε‖w_y − w_other‖₁, and no δ in the ball lowers it more (Hölder)."""
    model, x, y = _linear(seed)
    eps = 0.1
    fn = attacks.fgsm if attack == "fgsm" else attacks.pgd
    adv = fn(model, x, y, eps, clamp=None)
    w = model.weight.detach()
    diff = w[y] - w[1 - y]  # (batch, d)
    drop = _margin(model, x, y) - _margin(model, adv, y)
    torch.testing.assert_close(drop, eps * diff.abs().sum(1), rtol=1e-10, atol=1e-12)
    assert float((adv - x).abs().max()) <= eps + 1e-15


def test_budget_and_pixel_range():
    model, x, y = _linear(1)
    x = x.clone()
    x[:, 0] = 0.0  # at the edge: the clamp must hold it inside [0, 1]
    for fn in (attacks.fgsm, attacks.pgd):
        adv = fn(model, x, y, 0.3)
        assert float((adv - x).abs().max()) <= 0.3 + 1e-15
        assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
        assert not adv.requires_grad


def test_zero_budget_and_empty_batch():
    model, x, y = _linear(2)
    assert torch.equal(attacks.fgsm(model, x, y, 0.0), x)
    assert torch.equal(attacks.pgd(model, x, y, 0.0), x)
    empty = attacks.pgd(model, x[:0], y[:0], 0.1)
    assert empty.shape == (0, x.shape[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"eps": -0.1}, "eps"), ({"eps": 0.1, "steps": 0}, "steps"),
     ({"eps": 0.1, "steps": 2.5}, "steps"), ({"eps": 0.1, "step_size": 0.0}, "step_size"),
     ({"eps": 0.1, "clamp": (1.0, 0.0)}, "clamp")],
)  # fmt: skip
def test_bad_options_are_refused(kwargs, match):
    model, x, y = _linear()
    with pytest.raises(ValueError, match=match):
        attacks.pgd(model, x, y, **kwargs)


def test_pgd_is_at_least_as_strong_as_fgsm_on_a_nonlinear_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3)).double()
    x = torch.rand(128, 8, dtype=torch.float64)
    y = net(x).argmax(1)
    loss = nn.functional.cross_entropy
    f_adv, p_adv = attacks.fgsm(net, x, y, 0.2), attacks.pgd(net, x, y, 0.2, steps=20)
    with torch.no_grad():
        clean, f, p = (float(loss(net(v), y)) for v in (x, f_adv, p_adv))
    assert clean < f <= p * (1 + 1e-9)


def test_gradients_through_implicit_layers_adjoint_equals_unrolled():
    """The attack differentiates through the θ-steps by the adjoint; the unrolled graph gives
    the same signed gradient, hence the same adversarial input."""
    torch.manual_seed(3)
    field = irn.SpectralNormalized(irn.MLP(6, 16), alpha=-2.0, beta=0.5)
    advs = []
    for backward in ("adjoint", "unrolled"):
        net = irn.ImplicitResNet(
            field, steps=2, theta=1.0, tol=1e-12, max_iter=200, backward=backward,
            input_map=nn.Linear(5, 6), output_map=nn.Linear(6, 3),
        ).double()  # fmt: skip
        torch.manual_seed(4)
        net.load_state_dict(advs[0][1]) if advs else None
        net.eval()
        x = torch.rand(32, 5, dtype=torch.float64)
        y = torch.arange(32) % 3
        advs.append((attacks.fgsm(net, x, y, 0.05), net.state_dict()))
    assert torch.equal(advs[0][0], advs[1][0])

"""irn.models.ImplicitResNet: composition of θ-steps, trajectories, per-step fields,
augmentation, randomized θ and h without shared state, pickling."""

from __future__ import annotations

import pickle
import threading

import pytest
import torch
from fields import DT, Affine, TanhConv, TanhField
from torch import nn

import irn
from irn.regularizers import total_variation, trajectory_regularizer


def test_steps_compose_theta_layers():
    field = TanhField(3)
    net = irn.ImplicitResNet(field, steps=4, interval=2.0, theta=0.5, tol=1e-12)
    x = torch.randn(5, 3, dtype=DT)
    y, traj = net(x, t0=1.0, return_trajectory=True)
    layer = irn.ThetaLayer(field, theta=0.5, h=0.5, tol=1e-12)
    ref, t = x, 1.0
    for _ in range(4):
        ref, t = layer(ref, t), t + 0.5
    torch.testing.assert_close(y, ref)
    assert traj.times == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    assert len(traj.states) == 5 and torch.equal(traj.states[0], x)
    assert len(traj.iterations) == 4 and all(s.converged for s in traj.stats)


def test_explicit_network_is_a_resnet():
    field = TanhField(3)
    net = irn.ImplicitResNet(field, steps=3, interval=0.3, theta=0.0)
    x = torch.randn(2, 3, dtype=DT)
    ref = x
    for k in range(3):
        ref = ref + 0.1 * field(0.1 * k, ref)
    torch.testing.assert_close(net(x), ref, rtol=0, atol=1e-15)


def test_per_step_fields_and_total_variation():
    net = irn.ImplicitResNet(Affine(3), steps=3, shared=False, theta=1.0)
    assert len(net.fields) == 3 and net.fields[0] is not net.fields[1]
    assert float(total_variation(net.fields).detach()) == 0.0  # deep copies start equal
    with torch.no_grad():
        net.fields[2].b.add_(1.0)
    assert float(total_variation(net.fields).detach()) == pytest.approx(3.0)
    shared = irn.ImplicitResNet(Affine(3), steps=3, theta=1.0)
    assert len(shared.fields) == 1


def test_sequence_of_fields_and_gradients_reach_all_of_them():
    fields = [TanhField(4) for _ in range(3)]
    net = irn.ImplicitResNet(fields, interval=1.5, theta=1.0, output_map=nn.Linear(4, 2, dtype=DT))
    assert net.steps == 3 and net.h == pytest.approx(0.5)
    x = torch.randn(6, 4, dtype=DT)
    out, traj = net(x, return_trajectory=True)
    reg = trajectory_regularizer(net.fields, traj.times, traj.states, alpha_div=0.1, exact=True)
    (out.square().sum() + reg).backward()
    assert all(f.W.grad is not None and f.W.grad.abs().sum() > 0 for f in fields)
    with pytest.raises(ValueError, match="steps=2"):
        irn.ImplicitResNet(fields, steps=2)


def test_codim_augments_vectors_and_images():
    net = irn.ImplicitResNet(TanhField(5), codim=2, theta=0.5)
    y = net(torch.randn(4, 3, dtype=DT))
    assert y.shape == (4, 5)

    img = irn.ImplicitResNet(TanhConv(3, 0.2), codim=1, theta=1.0)
    x = torch.randn(2, 2, 4, 4, dtype=DT)
    assert img.augment(x)[:, 2].abs().sum() == 0
    assert img(x).shape == (2, 3, 4, 4)


def test_random_theta_and_h_only_in_training():
    net = irn.ImplicitResNet(TanhField(3), steps=2, theta=1.0, random_theta=(0.5, 1.0),
                             random_h=(0.5, 1.5))  # fmt: skip
    x = torch.randn(2, 3, dtype=DT)
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.train()
    torch.manual_seed(1)
    a = net(x)
    b = net(x)
    assert not torch.allclose(a, b)
    assert net.layers[0].theta == 1.0 and net.layers[0].h == 0.5  # restored


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"steps": 0}, "steps"),
        ({"interval": 0.0}, "interval"),
        ({"codim": -1}, "codim"),
        ({"random_theta": (0.5, 1.5)}, "random_theta"),
        ({"random_h": (1.0, 0.5)}, "random_h"),
        ({"theta": 2.0}, "theta"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        irn.ImplicitResNet(TanhField(2), **kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"steps": 2.5}, "steps must be an integer"),
    ({"steps": 2, "codim": 1.5}, "codim must be an integer"),
    ({"steps": 2, "random_h": (0.0, 0.0)}, "random_h must have low > 0"),
])  # fmt: skip
def test_non_integer_sizes_and_zero_step_factors_are_refused(kwargs, match):
    """Truncating steps=2.5 to 2 without a word changed the network; h = 0 steps nothing."""
    with pytest.raises(ValueError, match=match):
        irn.ImplicitResNet(irn.MLP(2), **kwargs)
    assert irn.ImplicitResNet(irn.MLP(2), steps=2.0).steps == 2  # integral floats are fine


def test_implicit_resnet_names_codim_when_the_field_does_not_fit():
    net = irn.ImplicitResNet(irn.MLP(2, 8), steps=2, codim=1)
    with pytest.raises(ValueError, match=r"codim=1.*irn.MLP\(dim=3\)"):
        net(torch.randn(4, 2))
    irn.ImplicitResNet(irn.MLP(3, 8), steps=2, codim=1)(torch.randn(4, 2))


def test_random_theta_and_h_never_write_layer_attributes():
    net = irn.ImplicitResNet(TanhField(3), steps=4, random_theta=(0.2, 1.0), random_h=(0.5, 1.5))
    before = [(layer.theta, layer.h) for layer in net.layers]

    def work():
        for _ in range(20):
            net(torch.randn(3, 3, dtype=torch.float64))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(layer.theta, layer.h) for layer in net.layers] == before
    with pytest.raises(AttributeError):
        net.layers[0].h = 2.0  # θ and h are read-only; pass them per call instead


def _spectral_model():
    field = irn.SpectralNormalized(irn.ConvField(2, width=3, input_shape=(5, 5)), -2.0, 0.5)
    return irn.ImplicitResNet(field, steps=2, output_map=nn.Flatten())


def test_spectrally_normalized_models_pickle_and_torch_save(tmp_path):
    torch.manual_seed(3)
    model = irn.ImplicitResNet(
        irn.SpectralNormalized(irn.MLP(3, 8), -1.0, 0.5), steps=2, output_map=nn.Linear(3, 2)
    )
    conv = _spectral_model()
    for m, x in ((model, torch.randn(4, 3)), (conv, torch.randn(2, 2, 5, 5))):
        m.eval()
        expected = m(x)
        clone = pickle.loads(pickle.dumps(m))
        torch.testing.assert_close(clone(x), expected, rtol=0, atol=0)
        path = tmp_path / "model.pt"
        torch.save(m, path)
        loaded = torch.load(path, weights_only=False)
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
        # The clone is a working, still parametrized model: training updates its estimate.
        loaded.train()
        loaded(x).sum().backward()
        assert irn.spectral.power_iterate(loaded) > 0

"""Tests of irn.fields: MLP, ConvField and the spectral parametrization F^{α,β}."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import irn
from irn.fields import MLP, ConvField, SpectralNormalized, frozen, make_activation
from irn.spectral import SpectralNorm, power_iterate

DT = torch.float64


def make_mlp(seed: int, gain: float = 5.0, activation: str = "relu") -> MLP:
    torch.manual_seed(seed)
    field = MLP(4, width=12, depth=2, activation=activation).to(DT)
    with torch.no_grad():
        for p in field.parameters():
            p.mul_(gain)  # large weights: the plain field leaves the disc
    return field


def make_conv(seed: int, gain: float = 10.0) -> ConvField:
    torch.manual_seed(seed)
    field = ConvField(2, width=3, kernel_size=3, depth=2).to(DT)
    with torch.no_grad():
        for p in field.parameters():
            p.mul_(gain)
    return field


def jacobian_eigenvalues(f, y: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the dense per-sample Jacobians ∂f/∂y, concatenated over the batch."""
    eigs = []
    for yi in y:
        jac = torch.func.jacrev(lambda z: f(0.0, z[None])[0])(yi)
        n = yi.numel()
        eigs.append(torch.linalg.eigvals(jac.reshape(n, n)))
    return torch.cat(eigs)


def scaled_plain(field: nn.Module, wrapped: SpectralNormalized):
    """The plain (not normalized) field put through the same affine map as ``wrapped``."""
    scale = torch.sigmoid(wrapped.scale.detach())
    return lambda t, y: wrapped.center * y + wrapped.radius * scale * field(t, y)


BANDS = [(-1.0, 1.0), (-3.0, -0.5), (0.2, 2.0)]


@pytest.mark.parametrize("alpha,beta", BANDS)
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_eigenvalues_in_disc_and_plain_field_violates(kind, alpha, beta) -> None:
    field = make_mlp(10) if kind == "mlp" else make_conv(11)
    y = torch.randn(3, 4, dtype=DT) if kind == "mlp" else torch.randn(3, 2, 4, 4, dtype=DT)
    plain = copy.deepcopy(field)
    sn = SpectralNormalized(field, alpha, beta).to(DT)
    with torch.no_grad():
        sn.scale.normal_()  # elementwise σ(ϑ) ≠ const: the radius uses its maximum
    sn(0.0, y)  # lazy convolutions learn the input shape here
    power_iterate(sn, 300)
    sn.eval()
    bound = sn.radius * torch.sigmoid(sn.scale).max().item()
    assert bound == pytest.approx(sn.disc_radius)
    dist = (jacobian_eigenvalues(sn, y) - sn.center).abs()
    assert dist.max().item() <= bound * (1 + 1e-6) + 1e-9
    plain_dist = (jacobian_eigenvalues(scaled_plain(plain, sn), y) - sn.center).abs()
    assert plain_dist.max().item() > 1.5 * bound


def test_center_radius_and_validation() -> None:
    sn = SpectralNormalized(MLP(3), alpha=-2.5, beta=1.0)
    assert sn.center == pytest.approx(-0.75)
    assert sn.radius == pytest.approx(1.75)
    assert sn.disc_radius == pytest.approx(1.75 * 0.5)
    with pytest.raises(ValueError, match="alpha"):
        SpectralNormalized(MLP(3), alpha=1.0, beta=1.0)
    with pytest.raises(ValueError, match="alpha"):
        SpectralNormalized(MLP(3), alpha=2.0, beta=-1.0)


def test_scale_init_and_shapes() -> None:
    learned = SpectralNormalized(MLP(5))
    assert learned.scale.shape == (5,)
    assert isinstance(learned.scale, nn.Parameter)
    torch.testing.assert_close(torch.sigmoid(learned.scale), torch.full((5,), 0.5))
    fixed = SpectralNormalized(ConvField(3), learn_scale=False)
    assert fixed.scale.shape == (3, 1, 1)
    assert "scale" not in dict(fixed.named_parameters())
    torch.testing.assert_close(torch.sigmoid(fixed.scale), torch.full((3, 1, 1), 0.99))

    class Bare(nn.Module):
        def forward(self, t, y):
            return torch.tanh(y)

    assert SpectralNormalized(Bare()).scale.shape == ()
    assert SpectralNormalized(MLP(5), scale_shape=(1,)).scale.shape == (1,)


def test_activations() -> None:
    for name in ["tanh", "relu", "gelu", "softplus", "elu", "sigmoid", "ReLU"]:
        assert MLP(2, 4, activation=name)(0.0, torch.randn(3, 2)).shape == (3, 2)
    act = nn.LeakyReLU(0.2)
    field = MLP(2, 4, depth=3, activation=act)
    acts = [m for m in field.net if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 3 and all(a is not act for a in acts)
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(2, activation="swish2")
    with pytest.raises(ValueError, match="unknown activation"):
        ConvField(2, activation="nope")
    with pytest.raises(ValueError, match="unknown activation"):
        make_activation(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depth"):
        MLP(2, depth=0)


def test_structure_and_shapes() -> None:
    mlp = MLP(3, width=7, depth=3)
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 7), (7, 7), (7, 7), (7, 3)]
    assert mlp.state_shape == (3,)
    conv = ConvField(2, width=5, kernel_size=5, depth=3)
    convs = [m for m in conv.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(2, 5), (5, 5), (5, 2)]
    assert isinstance(conv.net[0], nn.ReLU)  # pre-activation
    y = torch.randn(2, 2, 6, 7)
    assert conv(torch.tensor(0.3), y).shape == y.shape
    assert SpectralNormalized(conv)(0.0, y).shape == y.shape
    # a field normalized already is not normalized twice
    sn = SpectralNormalized(MLP(3, spectral_norm=True))
    assert sum(isinstance(m, SpectralNorm) for m in sn.modules()) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_dtypes_and_gradients(kind, dtype) -> None:
    torch.manual_seed(0)
    if kind == "mlp":
        sn, y = SpectralNormalized(MLP(4, 8)), torch.randn(5, 4, dtype=dtype)
    else:
        sn, y = SpectralNormalized(ConvField(2, input_shape=(5, 5))), torch.randn(3, 2, 5, 5)
        y = y.to(dtype)
    sn = sn.to(dtype).train()
    out = sn(0.0, y)
    sn(0.0, y)  # a second training-mode call (updates v) must not break the first graph
    assert out.dtype == dtype and out.shape == y.shape and torch.isfinite(out).all()
    out.square().sum().backward()
    for name, p in sn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert sn.scale.grad is not None


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_state_dict_roundtrip(kind) -> None:
    torch.manual_seed(1)
    make = (lambda: MLP(4, 8)) if kind == "mlp" else (lambda: ConvField(2, 3))
    y = torch.randn(2, 4) if kind == "mlp" else torch.randn(2, 2, 5, 5)
    sn = SpectralNormalized(make(), alpha=-2.0, beta=0.5).train()
    opt = torch.optim.SGD(sn.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        sn(0.0, y).square().sum().backward()
        opt.step()
    torch.manual_seed(2)
    fresh = SpectralNormalized(make(), alpha=-2.0, beta=0.5)  # conv: shape not known yet
    fresh.load_state_dict(sn.state_dict())
    sn.eval()
    fresh.eval()
    assert torch.equal(sn(0.0, y), fresh(0.0, y))


# torch's first forward-mode AD call scripts its jvp decompositions (a torch-internal warning).
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_frozen_jvp_vjp_match_autograd() -> None:
    torch.manual_seed(3)
    sn = SpectralNormalized(ConvField(2, 3, input_shape=(4, 4))).to(DT).train()
    y, dy = torch.randn(2, 2, 4, 4, dtype=DT), torch.randn(2, 2, 4, 4, dtype=DT)
    before = [m._v.clone() for m in sn.modules() if isinstance(m, SpectralNorm)]
    with frozen(sn):

        def f(z: torch.Tensor) -> torch.Tensor:
            return sn(0.0, z)

        out, jvp = torch.func.jvp(f, (y,), (dy,))
        out2, vjp_fn = torch.func.vjp(f, y)
        (vjp,) = vjp_fn(dy)
        _, jvp_ref = torch.autograd.functional.jvp(f, y, dy)
        yr = y.clone().requires_grad_()
        (vjp_ref,) = torch.autograd.grad(f(yr), yr, dy)
        # the per-sample Jacobians, batched with vmap, also run without buffer mutation
        jac = torch.func.vmap(torch.func.jacrev(lambda z: f(z[None])[0]))(y)
    after = [m._v.clone() for m in sn.modules() if isinstance(m, SpectralNorm)]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(jvp, jvp_ref)
    torch.testing.assert_close(vjp, vjp_ref)
    torch.testing.assert_close(torch.einsum("nijkabc,nabc->nijk", jac, dy), jvp)
    sn(0.0, y)  # outside frozen, training mode: the estimate moves again
    assert not torch.equal(before[0], sn.field.net[1].parametrizations.weight[0]._v)


def test_linear_field_is_the_affine_test_equation():
    A = torch.tensor([[0.0, 1.0], [-4.0, -0.5]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    y = torch.randn(7, 2, dtype=torch.float64)
    torch.testing.assert_close(irn.Linear(A)(0.0, y), y @ A.T)
    torch.testing.assert_close(irn.Linear(A, b)(0.3, y), y @ A.T + b)
    forced = irn.Linear(-20.0, b=lambda t: 20.0 * math.cos(t))
    y1 = torch.randn(4, 1, dtype=torch.float64)
    torch.testing.assert_close(forced(0.7, y1), -20.0 * y1 + 20.0 * math.cos(0.7))
    z = torch.randn(3, 2, dtype=torch.complex128)
    torch.testing.assert_close(irn.Linear(A)(0.0, z), z @ A.to(z.dtype).T)
    assert not list(irn.Linear(A).parameters())
    assert len(list(irn.Linear(A, b, trainable=True).parameters())) == 2


def test_linear_field_refuses_bad_shapes_at_construction():
    with pytest.raises(ValueError, match="square"):
        irn.Linear(torch.ones(2, 3))
    with pytest.raises(ValueError, match="b must have 2 entries"):
        irn.Linear(torch.eye(2), b=torch.ones(3))


def test_linear_field_gradcheck_in_a_theta_layer():
    A = torch.tensor([[-1.0, 2.0], [0.0, -3.0]], dtype=torch.float64)
    layer = irn.ThetaLayer(irn.Linear(A), theta=1.0, h=0.5, tol=1e-12)
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    # closed form: y = (I − hA)⁻¹ x for θ = 1
    expect = torch.linalg.solve(torch.eye(2, dtype=torch.float64) - 0.5 * A, x.detach().T).T
    torch.testing.assert_close(layer(x.detach()), expect)

"""Inexact gradients (irn/inexact.py): JFB and phantom backprop against closed forms and the
exact adjoint; the forward values never change."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import irn
from irn.inexact import JFB, Phantom
from irn.layers import Adjoint


class Scalar(nn.Module):
    """F(y) = a·y with a learnable a: θ = 1 gives y = x / (1 − ha)."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, t, y):
        return self.a * y


class Tanh(nn.Module):
    def __init__(self, n: int, scale: float, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(scale * torch.randn(n, n, generator=g, dtype=torch.float64) / n**0.5)
        self.c = nn.Parameter(0.1 * torch.randn(n, generator=g, dtype=torch.float64))

    def forward(self, t, y):
        return torch.tanh(y @ self.W.T + self.c)


def _grad_x(backward, a=-0.8, h=0.5):
    layer = irn.ThetaLayer(Scalar(a), theta=1.0, h=h, backward=backward, tol=1e-13)
    x = torch.tensor([[1.3]], dtype=torch.float64, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    return float(x.grad), float(layer.field.a.grad), float(y.detach())


@pytest.mark.parametrize("steps,damping", [(1, 1.0), (1, 0.5), (3, 0.5), (5, 0.8), (10, 1.0)])
def test_phantom_is_the_truncated_neumann_series(steps, damping):
    """dz_k/dx = (1 − q^k)/(1 − ha) with q = 1 − λ + λha: relative error exactly q^k."""
    a, h = -0.8, 0.5
    gx, _, _ = _grad_x(Phantom(steps, damping), a, h)
    exact, _, _ = _grad_x("adjoint", a, h)
    q = 1 - damping + damping * h * a
    assert exact == pytest.approx(1 / (1 - h * a), rel=1e-12)
    assert gx == pytest.approx(exact * (1 - q**steps), rel=1e-12)


def test_jfb_is_one_undamped_step():
    """JFB: dz/dx = 1 (the inverse replaced by the identity); dz/da = h·y*."""
    a, h = -0.8, 0.5
    gx, ga, y = _grad_x("jfb", a, h)
    assert gx == pytest.approx(1.0, rel=1e-12)
    assert ga == pytest.approx(h * y, rel=1e-12)
    assert JFB() == Phantom(1, 1.0) and JFB().name == "jfb"


@pytest.mark.parametrize("backward", ["jfb", "phantom", Phantom(4, 0.7), "unrolled"])
@pytest.mark.parametrize("scheme", ["linear", "one-leg"])
@pytest.mark.parametrize("theta", [0.5, 1.0])
def test_forward_values_are_the_solvers_whatever_the_backward(backward, scheme, theta):
    field = Tanh(5, 0.9)
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    make = dict(theta=theta, h=0.7, scheme=scheme, tol=1e-12)
    exact = irn.ThetaLayer(field, backward="adjoint", **make)(x)
    other = irn.ThetaLayer(field, backward=backward, **make)(x)
    torch.testing.assert_close(other, exact, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backward", ["jfb", Phantom(3, 1.0)])
def test_gradcheck_where_exact_a_field_independent_of_y(backward):
    """Φ independent of y (F(t, y) = b(t)·tanh(c)): undamped steps are exact (q = (1−λ)I + λJ
    vanishes; a damped phantom gradient is 1 − (1−λ)^k times the exact one even here), so
    gradcheck checks the wiring of the x and parameter paths."""

    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Parameter(torch.randn(3, dtype=torch.float64))

        def forward(self, t, y):
            return torch.tanh(self.c).expand_as(y) * (1 + 0.1 * t)

    layer = irn.ThetaLayer(Const(), theta=1.0, h=0.5, backward=backward, tol=1e-12)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, c: layer(x), (x, layer.field.c))


def test_phantom_converges_to_the_adjoint_gradient():
    """On a contracting step, the phantom gradient's relative error falls geometrically with k
    and gradcheck passes once q^k is negligible."""
    field = Tanh(6, 0.6)
    x = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)

    def grads(backward):
        layer = irn.ThetaLayer(field, theta=1.0, h=0.5, backward=backward, tol=1e-13)
        (gx, gw) = torch.autograd.grad((layer(x) ** 2).sum(), (x, field.W))
        return torch.cat([gx.flatten(), gw.flatten()])

    exact = grads(Adjoint(tol=1e-13))
    errs = [float((grads(Phantom(k, 1.0)) - exact).norm() / exact.norm()) for k in (1, 2, 4, 8)]
    assert all(b < 0.6 * a for a, b in zip(errs, errs[1:], strict=False)), errs
    layer = irn.ThetaLayer(field, theta=1.0, h=0.5, backward=Phantom(60, 1.0), tol=1e-13)
    assert torch.autograd.gradcheck(lambda x: layer(x), (x,))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"backward": Phantom}, r"unknown backward"),
        ({"backward": "phantom-5"}, r"unknown backward"),
        ({"backward": Adjoint(), "adjoint_solver": "gmres"}, r"already says how"),
    ],
)
def test_bad_backward_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        irn.ThetaLayer(Tanh(2, 0.5), **kwargs)


@pytest.mark.parametrize("steps,damping", [(0, 0.5), (2.5, 0.5), (3, 0.0), (3, 1.5), (3, "1")])
def test_phantom_options_are_checked_when_built(steps, damping):
    with pytest.raises(ValueError, match="Phantom"):
        Phantom(steps, damping)


def test_adjoint_object_equals_the_shorthand_keywords():
    field = Tanh(4, 0.9)
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    a = irn.ThetaLayer(field, backward=Adjoint("gmres", tol=1e-9, max_iter=30))
    b = irn.ThetaLayer(field, adjoint_solver="gmres", adjoint_tol=1e-9, adjoint_max_iter=30)
    ga, gb = (torch.autograd.grad(lay(x).square().sum(), x)[0] for lay in (a, b))
    assert torch.equal(ga, gb)
    assert a.stats.backward.iterations == b.stats.backward.iterations
    assert (a.adjoint_solver, a.adjoint_tol, a.adjoint_max_iter) == ("gmres", 1e-9, 30)

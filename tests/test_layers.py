"""irn.layers.ThetaLayer: gradients of every registered solver, closed forms, stability, bad
input and failure policies, thread-local statistics."""

from __future__ import annotations

import itertools
import threading
import warnings

import pytest
import torch
from fields import DT, NONLINEAR, Affine, Scalar, TanhConv, TanhField
from torch import nn

import irn
from irn.stability import stability_function

# Every registered solver, with its defaults (see tests/fields.py): a new one is gradchecked here.
SOLVERS = NONLINEAR
SCHEMES = ["linear", "one-leg"]
BACKWARDS = ["adjoint", "unrolled"]


def _functional(layer: irn.ThetaLayer, t: float = 0.3):
    names = [n for n, _ in layer.named_parameters()]

    def fn(x, *params):
        state = dict(zip(names, params, strict=True))
        return torch.func.functional_call(layer, state, (x,), {"t": t})

    return fn, [p for _, p in layer.named_parameters()]


@pytest.mark.parametrize(
    "scheme,solver,backward", list(itertools.product(SCHEMES, SOLVERS, BACKWARDS))
)
def test_gradcheck_every_combination(scheme, solver, backward):
    """IFT (adjoint) and unrolled gradients w.r.t. input and parameters, against finite
    differences of the forward solve, in float64."""
    layer = irn.ThetaLayer(
        TanhField(4),
        theta=0.7,
        h=0.5,
        scheme=scheme,
        solver=solver,
        tol=1e-12,
        max_iter=200,
        backward=backward,
        adjoint_tol=1e-12,
        on_failure="raise",
    )
    x = torch.randn(3, 4, dtype=DT, requires_grad=True)
    fn, params = _functional(layer)
    assert torch.autograd.gradcheck(fn, (x, *params), atol=1e-6, rtol=1e-4)


def _affine_closed_form(field: Affine, x, theta, h):
    """(I − θhA) y = (I + (1−θ)hA) x + h b: both schemes, for an affine field."""
    n = x.shape[1]
    eye = torch.eye(n, dtype=DT)
    M, N = eye - theta * h * field.A, eye + (1 - theta) * h * field.A
    return torch.linalg.solve(M, (x @ N.T + h * field.b).T).T


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("theta", [0.5, 1.0])
def test_affine_field_matches_closed_form(scheme, solver, theta):
    h, n = 0.8, 5
    field = Affine(n)
    layer = irn.ThetaLayer(
        field, theta=theta, h=h, scheme=scheme, solver=solver, tol=1e-13, max_iter=300,
        adjoint_tol=1e-13, on_failure="raise",
    )  # fmt: skip
    x = torch.randn(4, n, dtype=DT, requires_grad=True)
    c = torch.randn(4, n, dtype=DT)
    y = layer(x)
    with torch.no_grad():
        y_exact = _affine_closed_form(field, x, theta, h)
    torch.testing.assert_close(y, y_exact, rtol=0, atol=1e-11)
    # Gradients of L = <c, y>: v = M⁻ᵀc, ∇x = Nᵀv, ∇b = h Σ v, ∇A = h Σ v ((1−θ)x + θy)ᵀ.
    (y * c).sum().backward()
    eye = torch.eye(n, dtype=DT)
    M, N = eye - theta * h * field.A.detach(), eye + (1 - theta) * h * field.A.detach()
    v = torch.linalg.solve(M.T, c.T).T
    z = (1 - theta) * x.detach() + theta * y_exact
    torch.testing.assert_close(x.grad, v @ N, rtol=0, atol=1e-10)
    torch.testing.assert_close(field.b.grad, h * v.sum(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(field.A.grad, h * v.T @ z, rtol=0, atol=1e-10)
    assert layer.stats.backward_converged and layer.stats.backward_iterations >= 1


@pytest.mark.parametrize("scheme", SCHEMES)
def test_theta_zero_is_forward_euler_exactly(scheme):
    field = TanhField(6)
    x = torch.randn(5, 6, dtype=DT)
    y = irn.ThetaLayer(field, theta=0.0, h=0.3, scheme=scheme)(x, t=0.2)
    assert torch.equal(y, x + 0.3 * field(0.2, x))


@pytest.mark.parametrize("theta", [0.0, 0.5, 1.0])
def test_stiff_step_follows_stability_function(theta):
    """y' = λy with hλ = −20: one step multiplies by R(hλ); θ = 1 damps it to 1/21."""
    lam, h = -200.0, 0.1
    x = torch.linspace(-1, 1, 7, dtype=DT)[:, None]
    layer = irn.ThetaLayer(Scalar(lam), theta=theta, h=h, solver="newton", tol=1e-13)
    y = layer(x)
    R = stability_function(torch.tensor(h * lam, dtype=DT), theta)
    torch.testing.assert_close(y, R * x, rtol=1e-12, atol=1e-13)
    if theta == 1.0:
        assert abs(float(R)) == pytest.approx(1 / 21) and float(y.abs().max()) < 0.05
    if theta == 0.0:
        assert float(y.abs().max()) == pytest.approx(19.0)  # forward Euler explodes


def test_stats_after_forward_and_backward():
    layer = irn.ThetaLayer(TanhField(4), theta=0.5, tol=1e-10)
    x = torch.randn(3, 4, dtype=DT, requires_grad=True)
    y = layer(x)
    s = layer.stats
    assert s.converged and s.iterations >= 1 and s.residual <= 1e-10
    assert s.forward.residuals.shape == (3,) and s.backward_iterations is None and s.implicit
    y.sum().backward()
    assert s.backward_converged and s.backward_residual <= 1e-10
    assert s.backward_iterations >= 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64(dtype):
    field = TanhField(8, dtype=dtype)
    layer = irn.ThetaLayer(field, theta=1.0, tol=1e-5)
    x = torch.randn(4, 8, dtype=dtype, requires_grad=True)
    y = layer(x)
    assert y.dtype == dtype and layer.stats.converged
    y.sum().backward()
    assert x.grad.dtype == dtype and field.W.grad is not None


def test_image_shaped_state():
    layer = irn.ThetaLayer(TanhConv(2, 0.3), theta=0.5, tol=1e-10)
    x = torch.randn(2, 2, 5, 5, dtype=DT, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape and layer.stats.converged
    r = y - x - 0.5 * (layer.field(0.0, x) + layer.field(1.0, y))
    assert float(r.detach().abs().max()) < 1e-8


class _WrongShape(nn.Module):
    def forward(self, t, y):
        return y[:, :1]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"theta": -0.1}, "theta"),
        ({"theta": 1.5}, "theta"),
        ({"h": 0.0}, "h must"),
        ({"h": -1.0}, "h must"),
        ({"scheme": "midpoint"}, "scheme"),
        ({"solver": "broyden"}, "solver"),
        ({"backward": "implicit"}, "backward"),  # ("phantom" is one now: irn.inexact)
        ({"on_failure": "panic"}, "on_failure"),
        ({"adjoint_solver": "cg"}, "adjoint_solver"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        irn.ThetaLayer(TanhField(3), **kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_raises(bad):
    x = torch.randn(2, 3, dtype=DT)
    x[1, 2] = bad
    with pytest.raises(ValueError, match="x contains non-finite"):
        irn.ThetaLayer(TanhField(3))(x)


@pytest.mark.parametrize("theta", [0.0, 1.0])
def test_field_with_wrong_output_shape_raises(theta):
    with pytest.raises(ValueError, match="field output shape"):
        irn.ThetaLayer(_WrongShape(), theta=theta)(torch.randn(2, 3))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_singular_step_is_reported_by_every_policy(solver, scheme):
    """θhλ = 1: I − θh∂F/∂y is singular and the step has no solution."""
    theta, h = 0.5, 0.5
    field = Scalar(1 / (theta * h))
    x = torch.randn(3, 2, dtype=DT)
    make = lambda policy: irn.ThetaLayer(  # noqa: E731
        field, theta=theta, h=h, scheme=scheme, solver=solver, max_iter=20, on_failure=policy
    )
    layer = make("warn")
    with pytest.warns(irn.ConvergenceWarning, match="did not converge"):
        layer(x)
    assert not layer.stats.converged
    with pytest.raises(irn.ConvergenceError, match="did not converge"):
        make("raise")(x)
    assert issubclass(irn.ConvergenceError, RuntimeError)
    layer = make("ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(x)
    assert not layer.stats.converged


def test_no_graph_when_gradients_are_off():
    layer = irn.ThetaLayer(TanhField(4), theta=1.0)
    with torch.no_grad():
        y = layer(torch.randn(2, 4, dtype=DT))
    assert y.grad_fn is None and layer.stats.converged


def test_repr_names_the_settings():
    text = repr(irn.ThetaLayer(TanhField(2), theta=0.5, scheme="one-leg"))
    assert "theta=0.5" in text and "one-leg" in text


def test_a_field_returning_a_tuple_gets_a_plain_message():
    class Tuple(nn.Module):
        def forward(self, t, y):
            return (y, y)

    with pytest.raises(ValueError, match="the field returned a tuple, not a tensor"):
        irn.ThetaLayer(Tuple())(torch.randn(2, 3))


def test_stats_never_cross_threads():
    layer = irn.ThetaLayer(TanhField(3), theta=1.0, tol=1e-10)
    inputs = {i: torch.randn(2 + i, 3, dtype=torch.float64) for i in range(4)}
    errors = []

    def work(i):
        for _ in range(25):
            _, own = layer(inputs[i], return_stats=True)
            seen = layer.stats
            if seen is not own or seen.forward.residuals.shape[0] != 2 + i:
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

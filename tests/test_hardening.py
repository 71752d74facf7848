"""Adversarial cases for the solvers and the layer: degenerate histories, tiny and empty
batches, exact fixed points, half precision, image states, inference mode (issue 7)."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from conftest import Scalar, TanhField
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

import irn
from irn.solvers.anderson import _mixing

SOLVERS = ["auto", "fixed-point", "anderson", "newton", "lbfgs"]
BACKWARDS = ["adjoint", "unrolled"]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dim,theta", [(1, 1.0), (1, 0.5), (2, 1.0), (3, 1.0)])
def test_the_reported_one_liner_never_raises(solver, dim, theta):
    """``ThetaLayer(MLP(1, 32), theta=1, h=1)(randn(128, 1))`` crashed in 19 of 20 seeds with a
    singular LU in Anderson's mixing; now every solver returns a finite output in every seed,
    the default one converged, and the gradients are finite."""
    for seed in range(20):
        torch.manual_seed(seed)
        layer = irn.ThetaLayer(
            irn.MLP(dim, 32), theta=theta, h=1.0, solver=solver, on_failure="ignore"
        )
        x = torch.randn(128, dim, requires_grad=True)
        y = layer(x)
        y.square().sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
        if solver in ("auto", "anderson"):
            assert layer.stats.converged, (seed, layer.stats.residual)


def test_the_reported_singular_gram_matrix():
    """The float64 Gram matrix that made ``torch.linalg.solve`` raise on another CPU
    (eigenvalues −3.7e-26, 1.6e-8, 2.7e-5): the mixing step is finite and solves the
    regularized least-squares problem."""
    G = torch.tensor(
        [
            [2.668166248450759e-05, 9.570021740860816e-07, -2.7629139264919662e-08],
            [9.570021740860816e-07, 4.999059778265673e-08, -1.4405893297524521e-10],
            [-2.7629139264919662e-08, -1.4405893297524521e-10, 7.439809069324603e-11],
        ],
        dtype=torch.float64,
    )[None]
    rhs = torch.tensor([[1e-6, 2e-8, -3e-10]], dtype=torch.float64)
    r = torch.full((1, 4), 1e-4, dtype=torch.float64)
    gamma = _mixing(G, rhs, r)
    assert torch.isfinite(gamma).all() and gamma.abs().max() > 0
    # Exactly singular (rank one, as in a 1-D state) and all-zero (a stalled iteration) too.
    v = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    for G2, rhs2 in ((torch.outer(v, v)[None], v[None]), (torch.zeros(1, 3, 3), torch.zeros(1, 3))):
        gamma = _mixing(G2.double(), rhs2.double(), r)
        assert torch.isfinite(gamma).all()
    assert torch.equal(
        _mixing(torch.zeros(1, 3, 3), torch.zeros(1, 3), r.float()), torch.zeros(1, 3)
    )


@pytest.mark.parametrize("solver,backward", list(itertools.product(SOLVERS, BACKWARDS)))
def test_half_the_batch_at_an_exact_fixed_point(solver, backward):
    """F(y) = tanh(W y) vanishes at y = 0: zero inputs are exact fixed points, solved by the
    predictor, while the other half iterates; gradients stay finite everywhere."""
    field = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Tanh()).double()
    layer = irn.ThetaLayer(
        _Seq(field), theta=1.0, h=0.5, solver=solver, backward=backward, on_failure="raise"
    )
    x = torch.randn(8, 4, dtype=torch.float64)
    x[::2] = 0.0
    x.requires_grad_(True)
    y = layer(x)
    assert torch.equal(y[::2].detach(), torch.zeros(4, 4, dtype=torch.float64))
    assert layer.stats.converged
    assert torch.equal(layer.stats.forward.residuals[::2], torch.zeros(4, dtype=torch.float64))
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()


class _Seq(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t, y):
        return self.net(y)


class _DeclaredAffine(nn.Module):
    """F(y) = c y + b with its spectrum declared: the predictor solves the step exactly."""

    center, radius = -3.0, 0.0

    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.randn(3, dtype=torch.float64))

    def forward(self, t, y):
        return self.center * y + self.b


@pytest.mark.parametrize("solver,backward", list(itertools.product(SOLVERS, BACKWARDS)))
def test_every_sample_solved_by_the_predictor(solver, backward):
    layer = irn.ThetaLayer(
        _DeclaredAffine(), theta=1.0, h=0.5, solver=solver, backward=backward, on_failure="raise"
    )
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert layer.stats.iterations == 0 and layer.stats.converged
    expected = (x + 0.5 * layer.field.b) / (1 + 0.5 * 3.0)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 2.5))


@pytest.mark.parametrize("solver,backward", list(itertools.product(SOLVERS, BACKWARDS)))
def test_batch_of_one_and_empty_batch(solver, backward):
    layer = irn.ThetaLayer(
        TanhField(3), theta=1.0, h=1.0, solver=solver, backward=backward, on_failure="raise"
    )
    x = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    layer(x).sum().backward()
    assert layer.stats.converged and torch.isfinite(x.grad).all()

    empty = torch.randn(0, 3, dtype=torch.float64, requires_grad=True)
    y, stats = layer(empty, return_stats=True)
    assert y.shape == (0, 3) and stats.converged and stats.iterations == 0
    y.sum().backward()
    assert empty.grad.shape == (0, 3)


@pytest.mark.parametrize(
    "solver,dtype",
    list(itertools.product(SOLVERS, [torch.float32, torch.float64, torch.bfloat16, torch.float16])),
)
def test_dtypes_including_half_precision(solver, dtype):
    """bfloat16/float16 states: no 'not implemented for Half' error, and the default tolerance
    is raised to 8 machine epsilons of the dtype, which the solvers reach."""
    torch.manual_seed(1)
    field = TanhField(6, dtype=dtype)
    layer = irn.ThetaLayer(field, theta=1.0, h=1.0, solver=solver, on_failure="raise")
    x = torch.randn(16, 6).to(dtype).requires_grad_(True)
    y = layer(x)
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert layer.stats.forward.tol == irn.solvers.default_tol(dtype)
    assert layer.stats.forward.tol == max(1e-6, 8 * torch.finfo(dtype).eps)
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_default_tolerance_is_unchanged_for_single_and_double_precision():
    assert irn.solvers.default_tol(torch.float32) == 1e-6
    assert irn.solvers.default_tol(torch.float64) == 1e-6
    assert irn.solvers.default_tol(torch.bfloat16) == 8 * 2.0**-7


def test_autocast_forward_runs():
    layer = irn.ThetaLayer(irn.MLP(1, 32), theta=1.0, h=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(64, 1))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("solver,backward", list(itertools.product(SOLVERS, BACKWARDS)))
def test_image_states(solver, backward):
    field = irn.ConvField(2, width=4, kernel_size=3, depth=1).double()
    layer = irn.ThetaLayer(field, theta=0.5, h=0.5, solver=solver, backward=backward)
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape and layer.stats.converged
    y.square().sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("solver", SOLVERS)
def test_inference_mode(solver):
    # This field's Lipschitz constant is 0.99: Picard needs about 50 iterations, so it gets
    # room for them (the test is about inference mode, not Picard's rate).
    layer = irn.ThetaLayer(TanhField(4), theta=1.0, h=1.0, solver=solver, max_iter=100)
    with torch.inference_mode():
        y = layer(torch.randn(5, 4, dtype=torch.float64))
    assert layer.stats.converged and y.shape == (5, 4)


@pytest.mark.parametrize("solver", ["fixed-point", "anderson", "newton", "lbfgs"])
def test_stalled_iteration_does_not_crash(solver):
    """θhλ = 1 makes the residual constant in y: every difference is zero or rounding noise.
    The solvers stall, stay finite and report failure instead of raising or extrapolating."""
    theta, h = 0.5, 0.5
    layer = irn.ThetaLayer(
        Scalar(1 / (theta * h)), theta=theta, h=h, solver=solver, max_iter=20, on_failure="ignore"
    )
    y = layer(torch.randn(4, 3, dtype=torch.float64))
    assert not layer.stats.converged
    assert torch.isfinite(y).all() and y.abs().max() < 1e6


def test_linear_solvers_with_a_zero_right_hand_side():
    A = torch.eye(3, dtype=torch.float64) * 2.0
    b = torch.zeros(4, 3, dtype=torch.float64)
    b[1] = 1.0
    for method in ("gmres", "fixed-point"):
        opts = {"omega": 0.5} if method == "fixed-point" else {}
        v, stats = irn.solvers.linear_solve(method, lambda w: w @ A.T, b, tol=1e-10, **opts)
        assert stats.converged and torch.equal(v[0], torch.zeros(3, dtype=torch.float64))
        torch.testing.assert_close(v[1], torch.full((3,), 0.5, dtype=torch.float64))


def test_warnings_are_deduplicated_per_layer_and_point_at_the_caller():
    layer = irn.ThetaLayer(TanhField(4, scale=3.0), theta=1.0, h=3.0, solver="fixed-point",
                           max_iter=2)  # fmt: skip
    x = torch.randn(6, 4, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            layer(x)
    assert len(caught) == 1
    assert caught[0].filename == __file__
    assert "warned once per layer" in str(caught[0].message)
    other = irn.ThetaLayer(TanhField(4, scale=3.0), theta=1.0, h=3.0, solver="fixed-point",
                           max_iter=2)  # fmt: skip
    with pytest.warns(irn.ConvergenceWarning):
        other(x)


def test_convergence_error_names_the_step_the_residual_and_what_to_try():
    net = irn.ImplicitResNet(
        TanhField(4, scale=3.0), steps=3, interval=9.0, solver="fixed-point", max_iter=2,
        on_failure="raise",
    )  # fmt: skip
    with pytest.raises(irn.ConvergenceError, match=r"step 1 of 3") as info:
        net(torch.randn(6, 4, dtype=torch.float64))
    msg = str(info.value)
    assert "max relative residual" in msg and "Try:" in msg and "max_iter (now 2)" in msg
    assert info.value.stats is not None and not info.value.stats.converged


def test_double_backward_through_the_adjoint_points_to_unrolled():
    layer = irn.ThetaLayer(TanhField(3), theta=1.0)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(layer(x).sum(), x, create_graph=False)
    with pytest.raises(RuntimeError, match="backward='unrolled'"):
        torch.autograd.grad(layer(x).sum(), x, create_graph=True)
    unrolled = irn.ThetaLayer(layer.field, theta=1.0, backward="unrolled", tol=1e-12)
    (g2,) = torch.autograd.grad(unrolled(x).sum(), x, create_graph=True)
    torch.autograd.grad(g2.sum(), x)  # second order works
    torch.testing.assert_close(g, g2.detach(), rtol=1e-5, atol=1e-8)


# derandomize: CI sees the same examples on every run; the falsifying examples found while
# writing the test stay as explicit @example cases.
@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@example(dim=1, batch=1, theta=1.0, h=1.0, scheme="linear", solver="fixed-point", seed=0)
@given(
    dim=st.integers(1, 4),
    batch=st.integers(0, 5),
    theta=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
    h=st.floats(0.05, 2.0),
    scheme=st.sampled_from(["linear", "one-leg"]),
    solver=st.sampled_from(SOLVERS),
    seed=st.integers(0, 2**16),
)
def test_property_affine_steps_match_the_closed_form(dim, batch, theta, h, scheme, solver, seed):
    """For F(y) = A y + b with ‖A‖₂ = 0.9/h (so I − θhA is invertible) every solver returns
    (I − θhA)⁻¹((I + (1−θ)hA)x + hb), the same for both schemes (F affine), at any batch size.
    Picard contracts by θh‖A‖ ≤ 0.9 per iteration: 400 iterations reach 1e-11 from O(1)."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    A = A / torch.linalg.matrix_norm(A, 2) * (0.9 / h)
    b = torch.randn(dim, generator=g, dtype=torch.float64)
    field = _Seq(_AffineMap(A, b))
    layer = irn.ThetaLayer(field, theta=theta, h=h, scheme=scheme, solver=solver, tol=1e-11,
                           max_iter=400, on_failure="raise")  # fmt: skip
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    eye = torch.eye(dim, dtype=torch.float64)
    rhs = x @ (eye + (1 - theta) * h * A).T + h * b
    expected = torch.linalg.solve(eye - theta * h * A, rhs.T).T
    torch.testing.assert_close(layer(x), expected, rtol=1e-8, atol=1e-9)


class _AffineMap(nn.Module):
    def __init__(self, A, b):
        super().__init__()
        self.A, self.b = A, b

    def forward(self, y):
        return y @ self.A.T + self.b


@pytest.mark.parametrize(
    "transform",
    [
        lambda f, x: torch.func.jvp(f, (x,), (torch.ones_like(x),)),
        lambda f, x: torch.func.jacrev(f)(x),
        lambda f, x: torch.func.vmap(f)(x[:, None]),
    ],
)
def test_torch_func_transforms_of_the_adjoint_raise_instead_of_returning_zero(transform):
    """A jvp through the adjoint layer used to return a zero tangent silently."""
    layer = irn.ThetaLayer(Scalar(-2.0), theta=1.0, h=0.5)
    x = torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="backward='unrolled'"):
        transform(layer, x)
    unrolled = irn.ThetaLayer(Scalar(-2.0), theta=1.0, h=0.5, backward="unrolled", tol=1e-12)
    _, tangent = torch.func.jvp(unrolled, (x,), (torch.ones_like(x),))
    torch.testing.assert_close(tangent, torch.full_like(x, 1 / 2.0))


def test_newton_on_tiny_states():
    """GMRES clamped norms at eps, so a state of size 1e-22 was never solved."""
    A = torch.diag(torch.tensor([-1000.0, -1.0], dtype=torch.float64))
    layer = irn.ThetaLayer(_Seq(_AffineMap(A, torch.zeros(2, dtype=torch.float64))), theta=1.0,
                           h=0.25, solver="newton", on_failure="raise")  # fmt: skip
    x = torch.tensor([[2.5e-22, 1e-22]], dtype=torch.float64)
    torch.testing.assert_close(layer(x), x / torch.tensor([251.0, 1.25], dtype=torch.float64))

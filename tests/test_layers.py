"""ThetaLayer: gradients, closed forms, stability, memory, bad input and failure policies."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
from conftest import Affine, Scalar, TanhField
from torch import nn

import irn
from irn.stability import stability_function

DT = torch.float64
SOLVERS = ["fixed-point", "anderson", "newton", "lbfgs"]
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


def _saved_bytes(layer, x):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    return total, y


@pytest.mark.parametrize("scheme", SCHEMES)
def test_adjoint_memory_does_not_grow_with_iterations(scheme):
    field = TanhField(32, dtype=torch.float32)
    x = torch.randn(16, 32, requires_grad=True)
    sizes = {}
    for backward, iters in itertools.product(BACKWARDS, (3, 40)):
        layer = irn.ThetaLayer(
            field, theta=1.0, scheme=scheme, solver="fixed-point", tol=1e-30,
            max_iter=iters, backward=backward, on_failure="ignore",
        )  # fmt: skip
        sizes[backward, iters], y = _saved_bytes(layer, x)
        assert layer.stats.iterations == iters
        y.sum().backward()
    assert sizes["adjoint", 3] == sizes["adjoint", 40] > 0
    assert sizes["unrolled", 40] > 5 * sizes["unrolled", 3]


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
    conv = nn.Conv2d(2, 2, 3, padding=1, dtype=DT)

    class ConvField(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, t, y):
            return 0.3 * torch.tanh(self.conv(y))

    layer = irn.ThetaLayer(ConvField(), theta=0.5, tol=1e-10)
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
        ({"backward": "phantom"}, "backward"),
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


def test_failed_adjoint_solve_follows_the_policy():
    field = TanhField(6, scale=3.0)
    x = torch.randn(4, 6, dtype=DT, requires_grad=True)
    for policy in ("warn", "raise", "ignore"):
        layer = irn.ThetaLayer(
            field, theta=1.0, tol=1e-12, max_iter=200, adjoint_tol=1e-14, adjoint_max_iter=1,
            on_failure=policy, adjoint_solver="fixed-point",
        )  # fmt: skip
        y = layer(x)
        if policy == "raise":
            with pytest.raises(irn.ConvergenceError, match="adjoint"):
                y.sum().backward()
        elif policy == "warn":
            with pytest.warns(irn.ConvergenceWarning, match="adjoint"):
                y.sum().backward()
        else:
            y.sum().backward()
        assert layer.stats.backward_converged is False


def test_no_graph_when_gradients_are_off():
    layer = irn.ThetaLayer(TanhField(4), theta=1.0)
    with torch.no_grad():
        y = layer(torch.randn(2, 4, dtype=DT))
    assert y.grad_fn is None and layer.stats.converged


def test_layer_reports_adjoint_and_unrolled_agree():
    field = TanhField(5)
    x = torch.randn(3, 5, dtype=DT, requires_grad=True)
    grads = []
    for backward in BACKWARDS:
        layer = irn.ThetaLayer(field, theta=1.0, tol=1e-13, backward=backward, adjoint_tol=1e-13)
        (g,) = torch.autograd.grad(layer(x).square().sum(), x)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-11)


def test_repr_names_the_settings():
    text = repr(irn.ThetaLayer(TanhField(2), theta=0.5, scheme="one-leg"))
    assert "theta=0.5" in text and "one-leg" in text


def test_power_iteration_advances_once_per_forward_not_during_the_solve():
    """The spectral-norm estimate changes once per layer call (at the predictor), so every
    evaluation inside the solve and the adjoint sees the same normalized weights."""
    import copy

    field = irn.SpectralNormalized(irn.MLP(4, width=8), alpha=-2.0, beta=0.5).double()
    twin = copy.deepcopy(field)
    layer = irn.ThetaLayer(field, theta=1.0, tol=1e-10, solver="newton")
    x = torch.randn(3, 4, dtype=DT, requires_grad=True)
    field.train(), twin.train()
    y = layer(x)
    assert layer.stats.converged and layer.stats.evaluations > 3
    twin(0.0, x)  # exactly one unfrozen evaluation
    for (name, a), (_, b) in zip(field.named_buffers(), twin.named_buffers(), strict=True):
        assert torch.equal(a, b), name
    y.sum().backward()
    assert x.grad is not None


class _DeclaredDisc(nn.Module):
    """F(y) = c·y + r·tanh(W y) with ‖W‖₂ = 1: declares its Jacobian disc (centre c, radius r)."""

    def __init__(self, n: int, center: float, radius: float):
        super().__init__()
        w = torch.randn(n, n, dtype=DT)
        self.W = nn.Parameter(w / torch.linalg.matrix_norm(w, 2))
        self.center, self.radius = center, radius

    def forward(self, t, y):
        return self.center * y + self.radius * torch.tanh(y @ self.W.T)


def test_auto_uses_the_declared_spectrum():
    stiff = _DeclaredDisc(6, center=-1.0, radius=0.9)
    layer = irn.ThetaLayer(stiff, theta=1.0, h=1.0, tol=1e-10)
    # I − θhJ has its spectrum in the disc |z − 2| ≤ 0.9: damping 1/2 contracts by 0.45.
    assert layer.contraction() == pytest.approx(0.45) and layer.damping() == pytest.approx(0.5)
    assert layer.method() == "fixed-point" and layer.adjoint_method() == "fixed-point"
    x = torch.randn(4, 6, dtype=DT, requires_grad=True)
    y = layer(x)
    assert layer.stats.forward.solver == "fixed-point" and layer.stats.converged
    (g,) = torch.autograd.grad(y.square().sum(), x)
    ref = irn.ThetaLayer(stiff, theta=1.0, solver="newton", adjoint_solver="gmres", tol=1e-12)
    (g_ref,) = torch.autograd.grad(ref(x).square().sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-10)
    assert layer.stats.backward.solver == "fixed-point"
    # Undeclared or too weakly contracting spectra fall back to Anderson and GMRES.
    plain = irn.ThetaLayer(TanhField(6), theta=1.0)
    assert plain.contraction() is None and plain.damping() == 1.0
    assert plain.method() == "anderson" and plain.adjoint_method() == "gmres"
    weak = irn.ThetaLayer(_DeclaredDisc(6, center=-0.2, radius=0.9), theta=1.0)
    assert weak.method() == "anderson"


def test_spectral_predictor_is_exact_for_linear_fields():
    """With F(y) = c·y the predictor x + hF(x)/(1 − θhc) is the solution: no iteration."""
    layer = irn.ThetaLayer(_DeclaredDisc(3, center=-5.0, radius=0.0), theta=0.5, h=0.4, tol=1e-12)
    x = torch.randn(2, 3, dtype=DT)
    y = layer(x)
    assert layer.stats.iterations == 0
    torch.testing.assert_close(y, x * (1 - 0.5 * 2.0) / (1 + 0.5 * 2.0))


@pytest.mark.parametrize("theta", [0.0, 0.5, 1.0])
def test_backward_through_an_empty_batch_gives_zero_gradients(theta):
    """An empty batch whose input does not require grad crashed in backward ('does not
    require grad'); nn.Linear gives zero gradients, and so does the layer now."""
    torch.manual_seed(0)
    layer = irn.ThetaLayer(irn.SpectralNormalized(irn.MLP(4), alpha=-1.0, beta=0.0),
                           theta=theta, h=0.5)  # fmt: skip
    y = layer(torch.randn(0, 4))
    assert y.shape == (0, 4)
    y.sum().backward()
    grads = [q.grad for q in layer.parameters() if q.requires_grad]
    assert grads and all(g is not None and not g.any() for g in grads)


def test_auto_solvers_take_the_options_of_the_solver_they_choose():
    """solver_options={"memory": 8} and adjoint_options={"restart": 30} were refused with a
    message about 'fixed-point', a solver the user never chose."""
    plain = irn.ThetaLayer(irn.MLP(3), theta=1.0, h=0.5, solver_options={"memory": 8},
                           adjoint_options={"restart": 30})  # fmt: skip
    assert plain.solver_config().memory == 8  # Anderson, for a field with no declared spectrum
    assert plain.adjoint_config().restart == 30
    declared = irn.ThetaLayer(irn.SpectralNormalized(irn.MLP(3), alpha=-1.0, beta=0.0),
                              theta=1.0, h=0.5, solver_options={"memory": 8})  # fmt: skip
    assert declared.solver_config().name == "fixed-point"  # memory does not apply: unused
    x = torch.randn(4, 3, requires_grad=True)
    plain(x).sum().backward()
    with pytest.raises(ValueError, match=r"solver='auto' chooses among .*unknown \['bogus'\]"):
        irn.ThetaLayer(irn.MLP(3), solver_options={"bogus": 1})
    with pytest.raises(ValueError, match="memory"):
        irn.ThetaLayer(irn.MLP(3), solver_options={"memory": 0})  # still validated

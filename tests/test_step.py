"""irn._step: one θ-step at its edges, for every registered solver (fields.FORWARD) and both
backward passes. Degenerate histories, exact fixed points, batches of one and none, half
precision, image states, inference mode, stalled iterations; where a solve starts (at x, the
predictor counted as an evaluation) and how often a spectral-norm estimate advances."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from fields import (
    DT,
    FORWARD,
    NONLINEAR,
    Autonomous,
    DeclaredAffine,
    FixedAffine,
    Scalar,
    Shifted,
    TanhField,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

import irn

BACKWARDS = ["adjoint", "unrolled"]


@pytest.mark.parametrize("solver", FORWARD)
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


@pytest.mark.parametrize("solver,backward", list(itertools.product(FORWARD, BACKWARDS)))
def test_half_the_batch_at_an_exact_fixed_point(solver, backward):
    """F(y) = tanh(W y) vanishes at y = 0: zero inputs are exact fixed points, solved by the
    predictor, while the other half iterates; gradients stay finite everywhere."""
    field = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Tanh()).double()
    layer = irn.ThetaLayer(
        Autonomous(field), theta=1.0, h=0.5, solver=solver, backward=backward, on_failure="raise"
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


@pytest.mark.parametrize("solver,backward", list(itertools.product(FORWARD, BACKWARDS)))
def test_every_sample_solved_by_the_predictor(solver, backward):
    layer = irn.ThetaLayer(
        DeclaredAffine(), theta=1.0, h=0.5, solver=solver, backward=backward, on_failure="raise"
    )
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert layer.stats.iterations == 0 and layer.stats.converged
    expected = (x + 0.5 * layer.field.b) / (1 + 0.5 * 3.0)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / 2.5))


@pytest.mark.parametrize("solver,backward", list(itertools.product(FORWARD, BACKWARDS)))
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


@pytest.mark.parametrize(
    "solver,dtype",
    list(itertools.product(FORWARD, [torch.float32, torch.float64, torch.bfloat16, torch.float16])),
)
def test_dtypes_including_half_precision(solver, dtype):
    """bfloat16/float16 states: no 'not implemented for Half' error, and the default tolerance
    is raised to what the dtype can reach (irn.precision: 8 machine epsilons of the state,
    float32 for a half-precision input, and half an epsilon of the dtype the field computes
    in), which the solvers reach."""
    torch.manual_seed(1)
    field = TanhField(6, dtype=dtype)
    layer = irn.ThetaLayer(field, theta=1.0, h=1.0, solver=solver, on_failure="raise")
    x = torch.randn(16, 6).to(dtype).requires_grad_(True)
    y = layer(x)
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert layer.stats.forward.tol == irn.solvers.default_tol(dtype)
    state = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
    assert layer.stats.forward.tol == max(
        1e-6, 8 * torch.finfo(state).eps, torch.finfo(dtype).eps / 2
    )
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_autocast_forward_runs():
    layer = irn.ThetaLayer(irn.MLP(1, 32), theta=1.0, h=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(64, 1))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("solver,backward", list(itertools.product(FORWARD, BACKWARDS)))
def test_image_states(solver, backward):
    field = irn.ConvField(2, width=4, kernel_size=3, depth=1).double()
    layer = irn.ThetaLayer(field, theta=0.5, h=0.5, solver=solver, backward=backward)
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape and layer.stats.converged
    y.square().sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("solver", FORWARD)
def test_inference_mode(solver):
    # This field's Lipschitz constant is 0.99: Picard needs about 50 iterations, so it gets
    # room for them (the test is about inference mode, not Picard's rate).
    layer = irn.ThetaLayer(TanhField(4), theta=1.0, h=1.0, solver=solver, max_iter=100)
    with torch.inference_mode():
        y = layer(torch.randn(5, 4, dtype=torch.float64))
    assert layer.stats.converged and y.shape == (5, 4)


@pytest.mark.parametrize("solver", NONLINEAR)
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
    solver=st.sampled_from(FORWARD),
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
    layer = irn.ThetaLayer(FixedAffine(A, b), theta=theta, h=h, scheme=scheme, solver=solver,
                           tol=1e-11, max_iter=400, on_failure="raise")  # fmt: skip
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    eye = torch.eye(dim, dtype=torch.float64)
    rhs = x @ (eye + (1 - theta) * h * A).T + h * b
    expected = torch.linalg.solve(eye - theta * h * A, rhs.T).T
    torch.testing.assert_close(layer(x), expected, rtol=1e-8, atol=1e-9)


# ----------------------------------------------------------------- where the solve starts
def test_starting_at_x_counts_the_predictor_as_an_evaluation_not_an_iteration():
    field = Shifted(5, -1.0, 0.9)
    x = torch.randn(8, 5, dtype=DT)
    anderson_layer = irn.ThetaLayer(field, theta=1.0, solver="anderson", tol=1e-10)
    newton_layer = irn.ThetaLayer(field, theta=1.0, solver="newton", tol=1e-10)
    with torch.no_grad():
        y = anderson_layer(x)
        ref = newton_layer(x)
    s = anderson_layer.stats
    # r(x), the predictor and one evaluation per further iteration; no separate F(t, x)
    assert s.evaluations == s.iterations + 2 and len(s.forward.history) == s.iterations + 2
    torch.testing.assert_close(y, ref, rtol=1e-8, atol=1e-8)
    # The linear scheme with θ < 1 keeps F(t, x) in Φ: it starts from the predictor itself.
    half = irn.ThetaLayer(field, theta=0.5, solver="anderson", tol=1e-10)
    with torch.no_grad():
        half(x)
    assert half.stats.evaluations == half.stats.iterations + 1


# ------------------------------------------------- the spectral-norm estimate, once a call
def test_start_at_x_advances_the_spectral_norm_once_per_forward():
    field = irn.MLP(4, width=8, spectral_norm=True)
    layer = irn.ThetaLayer(field, theta=1.0, solver="anderson")
    x = torch.randn(3, 4)
    v = [b.clone() for n, b in field.named_buffers() if n.endswith("_v")]
    layer(x)
    after = [b for n, b in field.named_buffers() if n.endswith("_v")]
    assert v and all(not torch.equal(a, b) for a, b in zip(v, after, strict=True))
    field.eval()
    before = [b.clone() for b in after]
    layer(x)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_power_iteration_advances_once_per_forward_not_during_the_solve():
    """The spectral-norm estimate changes once per layer call (at the predictor), so every
    evaluation inside the solve and the adjoint sees the same normalized weights."""
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

"""irn.adjoint: the implicit-function-theorem backward pass. Exact gradients (gradcheck, a GMRES
reference, the unrolled pass), memory that does not grow with iterations, the failure policy,
and the clear refusals of what it cannot do (double backward, torch.func transforms)."""

from __future__ import annotations

import itertools

import pytest
import torch
from fields import DT, LINEAR, Scalar, Shifted, TanhField

import irn

SCHEMES = ["linear", "one-leg"]
BACKWARDS = ["adjoint", "unrolled"]


# ------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("adjoint_solver", LINEAR)
def test_gradcheck_every_adjoint_solver(adjoint_solver, scheme):
    """Every registered linear solver, with its defaults, as the adjoint solve: gradients
    w.r.t. input and parameters against finite differences of the forward solve."""
    layer = irn.ThetaLayer(
        TanhField(4), theta=0.7, h=0.5, scheme=scheme, tol=1e-12, max_iter=200,
        adjoint_solver=adjoint_solver, adjoint_tol=1e-12, on_failure="raise",
    )  # fmt: skip
    names = [n for n, _ in layer.named_parameters()]

    def fn(x, *params):
        state = dict(zip(names, params, strict=True))
        return torch.func.functional_call(layer, state, (x,), {"t": 0.3})

    x = torch.randn(3, 4, dtype=DT, requires_grad=True)
    params = [p for _, p in layer.named_parameters()]
    assert torch.autograd.gradcheck(fn, (x, *params), atol=1e-6, rtol=1e-4)
    assert layer.stats.backward.solver == adjoint_solver


def test_plain_field_adjoint_uses_the_forward_estimate_and_is_exact():
    field = Shifted(4, -1.0, 0.9)
    x = torch.randn(5, 4, dtype=DT, requires_grad=True)
    layer = irn.ThetaLayer(field, theta=1.0, tol=1e-12, adjoint_tol=1e-12)
    layer(x).sum().backward()
    assert layer.stats.backward.solver in ("fixed-point", "fixed-point+gmres")
    assert torch.autograd.gradcheck(lambda x: layer(x), (x.detach().requires_grad_(),))
    ref = irn.ThetaLayer(field, theta=1.0, tol=1e-12, adjoint_tol=1e-12, adjoint_solver="gmres")
    xr = x.detach().requires_grad_(True)
    ref(xr).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-9, atol=1e-10)


# Built inside the test (after the seed fixture), not when the module is collected.
FAST_PATH_FIELDS = {"stiff": lambda: Shifted(3, -4.0, 3.0), "tanh": lambda: TanhField(3)}


@pytest.mark.parametrize("field", list(FAST_PATH_FIELDS))
@pytest.mark.parametrize("scheme", SCHEMES)
def test_gradients_through_every_fast_path(field, scheme):
    # Plain fields (no declared spectrum): lazy Anderson with estimated damping from x, the
    # adjoint's Neumann series with that damping; a time-dependent field for the times used.
    x = torch.randn(4, 3, dtype=DT, requires_grad=True)
    layer = irn.ThetaLayer(
        FAST_PATH_FIELDS[field](), theta=1.0, scheme=scheme, tol=1e-12, adjoint_tol=1e-12
    )
    assert layer.solver_config().lazy == 0.5
    assert torch.autograd.gradcheck(lambda x: layer(x, 0.3), (x,))
    assert layer.stats.forward.damping is not None


def test_layer_reports_adjoint_and_unrolled_agree():
    field = TanhField(5)
    x = torch.randn(3, 5, dtype=DT, requires_grad=True)
    grads = []
    for backward in BACKWARDS:
        layer = irn.ThetaLayer(field, theta=1.0, tol=1e-13, backward=backward, adjoint_tol=1e-13)
        (g,) = torch.autograd.grad(layer(x).square().sum(), x)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------------------------- memory
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


# ---------------------------------------------------------------------- failure and limits
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

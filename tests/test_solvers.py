"""irn.solvers (the package and its registry, irn/solvers/base.py): every registered solver on
problems with known solutions, its stats and per-sample freezing; the dispatch by name.

The lists come from the registry (tests/fields.py): a newly registered solver is tested here
with its defaults. A solver that needs an option on a problem gets it from the *_OPTIONS below."""

from __future__ import annotations

import pytest
import torch
from fields import DT, LINEAR, NONLINEAR

import irn
from irn.solvers import linear_solve, registry, solve

# Options a solver needs on the problems below (plain Picard diverges on the stiff step, and the
# plain Neumann series on 2I); every other registered solver runs with its defaults.
NONLINEAR_OPTIONS = {"fixed-point": {"damping": 0.5}}
LINEAR_OPTIONS = {"fixed-point": {"omega": 0.5}}


@pytest.mark.parametrize("kind", ["nonlinear", "linear"])
def test_every_registered_configuration_builds_with_no_arguments(kind):
    """Tests, benchmarks and the layer's solver="name" build a registered configuration with
    no arguments; a required option would break all of them at once."""
    for name, cls in registry(kind).items():
        try:
            config = cls()
        except TypeError as err:
            pytest.fail(
                f"{cls.__name__} (registered as {kind} solver {name!r}) cannot be built with no "
                f"arguments ({err}): give every option a default, which the tests and "
                f"solver={name!r} rely on"
            )
        assert (config.kind, config.name) == (kind, name), cls
        assert callable(config.function()), cls


def test_the_registry_names_every_kind_and_refuses_others():
    assert set(NONLINEAR) >= {"fixed-point", "anderson", "newton", "lbfgs"}
    assert set(LINEAR) >= {"gmres", "fixed-point"}
    assert registry() is irn.solvers.NONLINEAR_CONFIGS
    with pytest.raises(ValueError, match=r"unknown solver kind 'quadratic'"):
        registry("quadratic")


def _linear_batch(bsz=4, n=20, spread=0.3):
    A = torch.eye(n, dtype=DT) + spread * torch.randn(bsz, n, n, dtype=DT) / n**0.5
    b = torch.randn(bsz, n, dtype=DT)
    return A, b, (lambda v: torch.einsum("bij,bj->bi", A, v))


@pytest.mark.parametrize("method", LINEAR)
def test_linear_solvers_with_a_zero_right_hand_side(method):
    A = torch.eye(3, dtype=torch.float64) * 2.0
    b = torch.zeros(4, 3, dtype=torch.float64)
    b[1] = 1.0
    opts = LINEAR_OPTIONS.get(method, {})
    v, stats = irn.solvers.linear_solve(method, lambda w: w @ A.T, b, tol=1e-10, **opts)
    assert stats.converged and torch.equal(v[0], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(v[1], torch.full((3,), 0.5, dtype=torch.float64))


def test_linear_solver_reports_failure():
    A, b, mv = _linear_batch(spread=3.0)
    _, st = linear_solve("fixed-point", mv, b, tol=1e-10, max_iter=5)
    assert not st.converged and st.iterations == 5
    with pytest.raises(ValueError, match="linear solver"):
        linear_solve("cg", mv, b)


def _backward_euler_problem(bsz=6, n=16):
    """r(y) = y − x − F(y) with F(y) = −y + 0.9 tanh(y W1ᵀ) W2ᵀ, ‖W‖₂ = 1: the spectrum of
    ∂F/∂y lies in the disc centred at −1 with radius 0.9, so plain Picard iteration diverges."""
    W1, W2 = (torch.randn(n, n, dtype=DT) for _ in range(2))
    W1, W2 = W1 / torch.linalg.matrix_norm(W1, 2), W2 / torch.linalg.matrix_norm(W2, 2)
    x = torch.randn(bsz, n, dtype=DT)

    def F(y):
        return -y + 0.9 * torch.tanh(y @ W1.T) @ W2.T

    return x, (lambda y: y - x - F(y)), x + F(x)


@pytest.mark.parametrize(
    "method,options",
    [(name, NONLINEAR_OPTIONS.get(name, {})) for name in NONLINEAR]
    + [("anderson", {"damping": 0.5})],
)
def test_nonlinear_solvers_reach_tolerance(method, options):
    x, residual, y0 = _backward_euler_problem()
    scale = torch.linalg.vector_norm(x, dim=1)
    y, st = solve(method, residual, y0, tol=1e-10, max_iter=100, scale=scale, **options)
    assert st.converged, st
    rel = torch.linalg.vector_norm(residual(y), dim=1) / torch.maximum(
        torch.linalg.vector_norm(y, dim=1), scale
    )
    assert float(rel.max()) <= 1e-10
    torch.testing.assert_close(st.residuals, rel)
    assert st.evaluations >= st.iterations >= 1


def test_plain_picard_diverges_and_says_so():
    x, residual, y0 = _backward_euler_problem()
    y, st = solve("fixed-point", residual, y0, tol=1e-10, max_iter=30)
    assert not st.converged
    assert st.residual > 1e-2  # nowhere near a solution after 30 iterations
    assert torch.isfinite(y).all()  # the best iterate is returned


@pytest.mark.parametrize("method", sorted(NONLINEAR))
def test_samples_do_not_interact(method):
    """Each sample follows its own iteration: solving a batch equals solving each row alone."""
    x, residual, y0 = _backward_euler_problem(bsz=3)
    opts = NONLINEAR_OPTIONS.get(method, {})
    y, _ = solve(method, residual, y0, tol=1e-12, max_iter=200, **opts)
    for i in range(3):
        yi, _ = solve(
            method,
            lambda v, i=i: residual(torch.cat([y0[:i], v, y0[i + 1 :]]))[i : i + 1],
            y0[i : i + 1],
            tol=1e-12,
            max_iter=200,
            **opts,
        )
        torch.testing.assert_close(yi[0], y[i], rtol=0, atol=1e-10)


def test_converged_samples_are_frozen():
    # Sample 0 starts at its solution, sample 1 does not: sample 0 must not move.
    target = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=DT)
    residual = lambda y: 0.5 * (y - target)  # noqa: E731
    y0 = torch.stack([target[0], torch.zeros(2, dtype=DT)])
    y, st = solve("fixed-point", residual, y0, tol=1e-12, max_iter=200)
    assert torch.equal(y[0], target[0]) and st.converged


def test_unknown_solver():
    with pytest.raises(ValueError, match="unknown solver"):
        solve("broyden", lambda y: y, torch.zeros(1, 1))

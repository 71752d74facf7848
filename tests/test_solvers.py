"""The batched solvers on plain linear algebra: known solutions, stats, per-sample freezing."""

from __future__ import annotations

import pytest
import torch

from irn.solvers import SOLVERS, gmres, linear_solve, richardson, solve

DT = torch.float64


def _linear_batch(bsz=4, n=20, spread=0.3):
    A = torch.eye(n, dtype=DT) + spread * torch.randn(bsz, n, n, dtype=DT) / n**0.5
    b = torch.randn(bsz, n, dtype=DT)
    return A, b, (lambda v: torch.einsum("bij,bj->bi", A, v))


@pytest.mark.parametrize("restart", [5, 40])
def test_gmres_matches_dense_solve(restart):
    A, b, mv = _linear_batch()
    x, st = gmres(mv, b, tol=1e-11, max_iter=200, restart=restart)
    assert st.converged and st.residual <= 1e-11
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=0, atol=1e-9)
    true = torch.linalg.vector_norm(b - mv(x), dim=1) / torch.linalg.vector_norm(b, dim=1)
    # The last cycle reports GMRES's estimate, which must track the true residual closely.
    torch.testing.assert_close(st.residuals, true, rtol=1e-2, atol=1e-14)


def test_gmres_terminates_in_n_steps_without_restart():
    A, b, mv = _linear_batch(n=6, spread=2.0)
    x, st = gmres(mv, b, tol=1e-12, max_iter=6, restart=6)
    assert st.iterations <= 6 and st.converged
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=0, atol=1e-9)


def test_gmres_zero_rhs_and_happy_breakdown():
    _, b, mv = _linear_batch()
    b[1] = 0
    x, st = gmres(mv, b, tol=1e-10, max_iter=100)
    assert st.converged and torch.all(x[1] == 0) and torch.isfinite(x).all()
    x, st = gmres(lambda v: 3 * v, b, tol=1e-12)  # A = 3I: solved in one step
    assert st.iterations == 1
    torch.testing.assert_close(x, b / 3)


def test_richardson_is_the_neumann_series():
    M = 0.4 * torch.randn(3, 8, 8, dtype=DT) / 8**0.5
    g = torch.randn(3, 8, dtype=DT)
    mv = lambda v: v - torch.einsum("bij,bj->bi", M, v)  # noqa: E731
    v, st = richardson(mv, g, g, tol=1e-12, max_iter=200)
    exact = torch.linalg.solve(torch.eye(8, dtype=DT) - M, g)
    assert st.converged
    torch.testing.assert_close(v, exact, rtol=0, atol=1e-10)


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
    [
        ("fixed-point", {"damping": 0.5}),
        ("anderson", {}),
        ("anderson", {"damping": 0.5}),
        ("newton", {}),
        ("lbfgs", {}),
    ],
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


@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_samples_do_not_interact(method):
    """Each sample follows its own iteration: solving a batch equals solving each row alone."""
    x, residual, y0 = _backward_euler_problem(bsz=3)
    opts = {"damping": 0.5} if method == "fixed-point" else {}
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

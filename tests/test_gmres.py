"""irn.solvers.gmres: restarted GMRES on batched linear systems, against dense solves."""

from __future__ import annotations

import pytest
import torch
from fields import DT, FixedAffine

import irn
from irn.solvers import gmres


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


def test_newton_on_tiny_states():
    """GMRES clamped norms at eps, so a state of size 1e-22 was never solved (Newton–Krylov's
    inner solves are GMRES)."""
    A = torch.diag(torch.tensor([-1000.0, -1.0], dtype=torch.float64))
    layer = irn.ThetaLayer(FixedAffine(A, torch.zeros(2, dtype=torch.float64)), theta=1.0,
                           h=0.25, solver="newton", on_failure="raise")  # fmt: skip
    x = torch.tensor([[2.5e-22, 1e-22]], dtype=torch.float64)
    torch.testing.assert_close(layer(x), x / torch.tensor([251.0, 1.25], dtype=torch.float64))

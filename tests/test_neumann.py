"""irn.solvers.neumann: the damped Neumann series (Richardson iteration) and its hand-over to
GMRES, against dense solves."""

from __future__ import annotations

import pytest
import torch
from fields import DT

from irn.solvers import gmres, neumann_gmres, richardson


def _batch_operator(bsz, n, center, spread, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = (
        center * torch.eye(n, dtype=DT)
        + spread * torch.randn(bsz, n, n, generator=g, dtype=DT) / n**0.5
    )
    return A, (lambda v: torch.einsum("bij,bj->bi", A, v))  # fmt: skip


def test_richardson_is_the_neumann_series():
    M = 0.4 * torch.randn(3, 8, 8, dtype=DT) / 8**0.5
    g = torch.randn(3, 8, dtype=DT)
    mv = lambda v: v - torch.einsum("bij,bj->bi", M, v)  # noqa: E731
    v, st = richardson(mv, g, g, tol=1e-12, max_iter=200)
    exact = torch.linalg.solve(torch.eye(8, dtype=DT) - M, g)
    assert st.converged
    torch.testing.assert_close(v, exact, rtol=0, atol=1e-10)


def test_neumann_gmres_converges_without_gmres_when_the_damping_fits():
    # I − ωA = −0.05·noise contracts by about 0.03 a product: 1e-6 is four products away,
    # well within the horizon, and the series finishes alone.
    A, mv = _batch_operator(6, 30, 2.0, 0.1)
    b = torch.randn(6, 30, dtype=DT)
    x, st = neumann_gmres(mv, b, omega=torch.full((6, 1), 0.5, dtype=DT), tol=1e-6, max_iter=80)
    assert st.solver == "fixed-point" and st.converged and st.iterations <= 6
    r = b - mv(x)
    assert (r.norm(dim=1) <= 1e-6 * b.norm(dim=1)).all()


@pytest.mark.parametrize("omega", [2.0, 0.02])  # diverges; contracts far too slowly
def test_neumann_gmres_hands_over_to_gmres_when_the_series_does_not_contract(omega):
    A, mv = _batch_operator(6, 30, 2.0, 0.5)
    b = torch.randn(6, 30, dtype=DT)
    x, st = neumann_gmres(mv, b, omega=torch.full((6, 1), omega, dtype=DT), tol=1e-10,
                          max_iter=80)  # fmt: skip
    _, plain = gmres(mv, b, tol=1e-10, max_iter=80)
    assert st.solver == "fixed-point+gmres" and st.converged
    assert st.iterations <= plain.iterations + 2  # one or two products lost, no more
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-8)


def test_neumann_gmres_hands_over_when_the_tolerance_is_far_at_its_rate():
    # Contracting by ~0.25 a product passes the rate test, but 1e-12 is ~20 products away:
    # GMRES takes over and finishes a 2-D system in about two more.
    A, mv = _batch_operator(6, 2, 1.0, 0.5)
    b = torch.randn(6, 2, dtype=DT)
    x, st = neumann_gmres(mv, b, omega=torch.ones(6, 1, dtype=DT), tol=1e-12, max_iter=80)
    assert st.solver == "fixed-point+gmres" and st.converged and st.iterations <= 4
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-10, atol=1e-10)

"""irn.solvers.anderson: the secant damping estimate, lazy mixing and the mixing solve, each
against an independent computation (a hand-written loop, the bounds of a known spectrum)."""

from __future__ import annotations

import pytest
import torch
from fields import DT, Shifted

import irn
from irn.solvers import fixed_point
from irn.solvers.anderson import _mixing, _secant_damping, anderson


def _backward_euler(field, x):
    """The residual ``r(y) = y − x − F(1, y)`` of a backward-Euler step with h = 1."""
    return lambda y: y - x - field(1.0, y)


# ------------------------------------------------------------------------- the mixing solve
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


# ------------------------------------------------------------------------ the secant damping
def test_secant_damping_is_the_inverse_slope_of_a_linear_residual():
    c = torch.tensor([[0.5], [2.0], [7.0]], dtype=DT)
    dy = torch.randn(3, 6, dtype=DT)
    torch.testing.assert_close(_secant_damping(dy, c * dy), 1 / c)
    # Not positive (or a zero difference): β = 1. Far out of range: clamped to [1/64, 64].
    beta = _secant_damping(dy, torch.cat([-dy[:1], 0 * dy[1:2], 1e-6 * dy[2:]]))
    torch.testing.assert_close(beta, torch.tensor([[1.0], [1.0], [64.0]], dtype=DT))
    half = _secant_damping(dy.half(), 2 * dy.half())
    assert half.dtype == torch.float16 and torch.allclose(half.double(), torch.full_like(c, 0.5))


@pytest.mark.parametrize("shift,scale,n", [(-16.0, 15.0, 32), (-50.0, 45.0, 8), (-4.0, 3.5, 2)])
def test_estimated_damping_solves_stiff_steps_that_undamped_anderson_cannot(shift, scale, n):
    field = Shifted(n, shift, scale)
    x = torch.randn(64, n, dtype=DT)
    residual = _backward_euler(field, x)

    with torch.no_grad():
        _, fixed = anderson(residual, x, tol=1e-8, max_iter=100, damping=1.0)
        y, est = anderson(residual, x, tol=1e-8, max_iter=100)
    assert est.converged and est.iterations <= 40
    assert est.damping.shape == (64, 1) and fixed.damping is None
    # ∂r/∂y = cI − E with c = 1 − shift, ‖E‖ ≤ ρ = scale: along any step the estimate
    # ⟨Δy, JΔy⟩/‖JΔy‖² lies in [(c−ρ)/(c+ρ)², (c+ρ)/(c−ρ)²] (about 1/c when ρ ≪ c).
    c, rho = 1 - shift, scale
    assert (
        (est.damping >= (c - rho) / (c + rho) ** 2) & (est.damping <= (c + rho) / (c - rho) ** 2)
    ).all()
    if n > 2:  # β = 1 overshoots by c on every new direction
        assert not fixed.converged
    torch.testing.assert_close(residual(y), torch.zeros_like(y), atol=1e-6 * abs(shift), rtol=0)


# ------------------------------------------------------------------------------ lazy mixing
def test_lazy_anderson_starts_as_the_damped_iteration():
    # Independent loop: the β = 1 predictor step, the secant β, then a damped step. (The first
    # judgement of whether to mix comes after that step.)
    field = Shifted(6, 0.0, 0.3)
    x = torch.randn(8, 6, dtype=DT)
    residual = _backward_euler(field, x)

    with torch.no_grad():
        y, st = anderson(residual, x, tol=1e-14, max_iter=2, lazy=0.5)
        y1 = x - residual(x)
        beta = _secant_damping(y1 - x, residual(y1) - residual(x))
        y2 = y1 - beta * residual(y1)
    assert st.iterations == 2 and st.evaluations == 3 and st.history[2] < st.history[1]
    torch.testing.assert_close(y, y2, rtol=0, atol=1e-15)
    torch.testing.assert_close(st.damping, beta)


def test_lazy_anderson_mixes_when_the_damped_iteration_is_slow():
    field = Shifted(16, -16.0, 15.0)  # the damped iteration contracts by 15/17 at best
    x = torch.randn(32, 16, dtype=DT)
    residual = _backward_euler(field, x)

    with torch.no_grad():
        _, lazy = anderson(residual, x, tol=1e-8, max_iter=100, lazy=0.5)
        _, eager = anderson(residual, x, tol=1e-8, max_iter=100)
    assert lazy.converged and eager.converged
    assert lazy.iterations <= eager.iterations + 3


def test_lazy_anderson_mixes_when_the_damped_iteration_has_far_to_go():
    # Contracting by about ¼ per step passes the ½ test, but to 1e-12 the damped iteration
    # would need many more steps than Anderson: the horizon test makes it mix.
    field = Shifted(6, 0.0, 0.25)
    x = torch.randn(8, 6, dtype=DT)
    residual = _backward_euler(field, x)

    with torch.no_grad():
        _, lazy = anderson(residual, x, tol=1e-12, max_iter=100, lazy=0.5)
        _, eager = anderson(residual, x, tol=1e-12, max_iter=100)
        _, picard = fixed_point(residual, x, tol=1e-12, max_iter=100)
    assert lazy.converged and lazy.iterations <= eager.iterations + 2 < picard.iterations


@pytest.mark.parametrize("lazy", [0.0, 1.0, -0.5, True, "half"])
def test_lazy_is_checked_when_the_configuration_is_built(lazy):
    with pytest.raises(ValueError, match="lazy must be a float in"):
        irn.solvers.Anderson(lazy=lazy)
    with pytest.raises(ValueError, match="lazy must be a float in"):
        irn.ThetaLayer(Shifted(2, 0.0, 0.5), solver="anderson", solver_options={"lazy": lazy})


def test_a_huge_memory_allocates_no_more_slots_than_iterations():
    """Before: Anderson(memory=10**6) allocated (batch, 10**6, n) buffers (512 TB here) on its
    first mixing step; no more differences than iterations are ever stored."""
    layer = irn.ThetaLayer(
        irn.MLP(64, width=64).double(),
        theta=1.0,
        h=2.0,
        solver="anderson",
        solver_options={"memory": 10**6},
        max_iter=30,
        on_failure="ignore",
    )
    y, stats = layer(torch.randn(4096, 64, dtype=torch.float64), return_stats=True)
    assert torch.isfinite(y).all() and stats.iterations >= 2

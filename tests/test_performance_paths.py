"""The fast paths of performance round two, each against an independent computation.

Anderson's secant damping, the start at x (the predictor as the first step), the adjoint's
damped Neumann series with its hand-over to GMRES, and the batched projections.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TanhField
from torch import nn

import irn
from irn.solvers import gmres
from irn.solvers._batched import combine, gram, project
from irn.solvers.anderson import _secant_damping, anderson
from irn.solvers import neumann_gmres
from irn.solvers import fixed_point

DT = torch.float64


class Shifted(nn.Module):
    """F(y) = shift·y + scale·tanh(W y): the residual Jacobian of a θ = h = 1 step is centred
    at 1 − shift. Declares nothing."""

    def __init__(self, n, shift, scale, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(n, n, generator=g, dtype=DT)
        self.W = nn.Parameter(w / torch.linalg.matrix_norm(w, 2))
        self.shift, self.scale = shift, scale

    def forward(self, t, y):
        return self.shift * y + self.scale * torch.tanh(y @ self.W.T)


def _backward_euler(field, x):
    """The residual ``r(y) = y − x − F(1, y)`` of a backward-Euler step with h = 1."""
    return lambda y: y - x - field(1.0, y)


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


def _batch_operator(bsz, n, center, spread, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = (
        center * torch.eye(n, dtype=DT)
        + spread * torch.randn(bsz, n, n, generator=g, dtype=DT) / n**0.5
    )
    return A, (lambda v: torch.einsum("bij,bj->bi", A, v))  # fmt: skip


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


@pytest.mark.parametrize("field", [Shifted(3, -4.0, 3.0), TanhField(3)], ids=["stiff", "tanh"])
@pytest.mark.parametrize("scheme", ["linear", "one-leg"])
def test_gradients_through_every_fast_path(field, scheme):
    # Plain fields (no declared spectrum): lazy Anderson with estimated damping from x, the
    # adjoint's Neumann series with that damping; a time-dependent field for the times used.
    x = torch.randn(4, 3, dtype=DT, requires_grad=True)
    layer = irn.ThetaLayer(field, theta=1.0, scheme=scheme, tol=1e-12, adjoint_tol=1e-12)
    assert layer.solver_config().lazy == 0.5
    assert torch.autograd.gradcheck(lambda x: layer(x, 0.3), (x,))
    assert layer.stats.forward.damping is not None


@pytest.mark.parametrize("n", [3, 64, 300])  # both kernels: broadcast below 256, bmm from it
def test_batched_products_match_einsum(n):
    V, W = torch.randn(5, 4, n, dtype=DT), torch.randn(5, 2, n, dtype=DT)
    w, c = torch.randn(5, n, dtype=DT), torch.randn(5, 4, dtype=DT)
    torch.testing.assert_close(project(V, w), torch.einsum("bkn,bn->bk", V, w))
    torch.testing.assert_close(combine(c, V), torch.einsum("bk,bkn->bn", c, V))
    torch.testing.assert_close(gram(W, V), torch.einsum("bpn,bkn->bpk", W, V))


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


@pytest.mark.parametrize("lazy", [0.0, 1.0, -0.5, True, "half"])
def test_lazy_is_checked_when_the_configuration_is_built(lazy):
    with pytest.raises(ValueError, match="lazy must be a float in"):
        irn.solvers.Anderson(lazy=lazy)
    with pytest.raises(ValueError, match="lazy must be a float in"):
        irn.ThetaLayer(Shifted(2, 0.0, 0.5), solver="anderson", solver_options={"lazy": lazy})


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


def test_neumann_gmres_hands_over_when_the_tolerance_is_far_at_its_rate():
    # Contracting by ~0.25 a product passes the rate test, but 1e-12 is ~20 products away:
    # GMRES takes over and finishes a 2-D system in about two more.
    A, mv = _batch_operator(6, 2, 1.0, 0.5)
    b = torch.randn(6, 2, dtype=DT)
    x, st = neumann_gmres(mv, b, omega=torch.ones(6, 1, dtype=DT), tol=1e-12, max_iter=80)
    assert st.solver == "fixed-point+gmres" and st.converged and st.iterations <= 4
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-10, atol=1e-10)

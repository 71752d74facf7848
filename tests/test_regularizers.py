"""Tests for irn.regularizers: closed forms, Hutchinson statistics, gradients, the paper's sum."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from irn.regularizers import (
    RegularizerTerms,
    divergence,
    jacobian_frobenius,
    total_variation,
    trajectory_regularizer,
)

DT = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Affine(nn.Module):
    """F(t, y) = t^k (A y + b); k = 0 gives an autonomous affine field."""

    def __init__(self, a: Tensor, b: Tensor, time_power: int = 0) -> None:
        super().__init__()
        self.a, self.b, self.k = nn.Parameter(a.clone()), nn.Parameter(b.clone()), time_power

    def forward(self, t: float | Tensor, y: Tensor) -> Tensor:
        return t**self.k * (y @ self.a.T + self.b)


class FlatLinear(nn.Module):
    """A fixed linear map M on the flattened state, for image-shaped states."""

    def __init__(self, m: Tensor) -> None:
        super().__init__()
        self.m = m

    def forward(self, t: float | Tensor, y: Tensor) -> Tensor:
        return (y.flatten(1) @ self.m.T).view_as(y)


class Tanh(nn.Module):
    """F(y) = tanh(W y + c); W is a plain attribute so gradcheck can pass it in."""

    def __init__(self, w: Tensor, c: Tensor) -> None:
        super().__init__()
        self.w, self.c = w, c

    def forward(self, t: float | Tensor, y: Tensor) -> Tensor:
        return torch.tanh(y @ self.w.T + self.c)


def dense_jacobian(field: nn.Module, y: Tensor) -> Tensor:
    """Jacobian of one sample, ``y`` of shape ``(d,)``."""
    return torch.autograd.functional.jacobian(lambda v: field(0.0, v[None])[0], y)


def test_affine_exact_closed_form() -> None:
    g = gen(1)
    a, b, y = (torch.randn(s, generator=g, dtype=DT) for s in [(6, 6), (6,), (4, 6)])
    field = Affine(a, b)
    div = divergence(field, 0.0, y, exact=True)
    frob = jacobian_frobenius(field, 0.0, y, exact=True)
    assert div.shape == frob.shape == (4,)
    torch.testing.assert_close(div, torch.trace(a).expand(4))
    torch.testing.assert_close(frob, a.pow(2).sum().expand(4))


def test_image_state_exact_closed_form() -> None:
    g = gen(2)
    d = 2 * 3 * 3
    m = torch.randn(d, d, generator=g, dtype=DT)
    y = torch.randn(3, 2, 3, 3, generator=g, dtype=DT)
    field = FlatLinear(m)
    torch.testing.assert_close(divergence(field, 0.0, y, exact=True), torch.trace(m).expand(3))
    torch.testing.assert_close(
        jacobian_frobenius(field, 0.0, y, exact=True), m.pow(2).sum().expand(3)
    )
    # The estimate also accepts image states (and is finite, correctly shaped).
    assert divergence(field, 0.0, y, samples=2, generator=g).shape == (3,)


def test_nonlinear_exact_vs_dense_jacobian_float32_and_64() -> None:
    for dtype in (torch.float32, DT):
        g = gen(3)
        w, c, y = (torch.randn(s, generator=g, dtype=dtype) for s in [(5, 5), (5,), (3, 5)])
        field = Tanh(w, c)
        jacs = [dense_jacobian(field, yb) for yb in y]
        div = divergence(field, 0.0, y, exact=True)
        assert div.dtype == dtype
        torch.testing.assert_close(div, torch.stack([torch.trace(j) for j in jacs]))
        torch.testing.assert_close(
            jacobian_frobenius(field, 0.0, y, exact=True),
            torch.stack([j.pow(2).sum() for j in jacs]),
        )


@pytest.mark.parametrize("which", ["div", "frob"])
def test_hutchinson_unbiased_with_gaussian_variance(which: str) -> None:
    # One call on n copies of one state gives n independent single-probe estimates.
    n, d = 20000, 5
    g = gen(4)
    w, c, y1 = (torch.randn(s, generator=g, dtype=DT) for s in [(d, d), (d,), (d,)])
    field = Tanh(w, c)
    jac = dense_jacobian(field, y1)
    if which == "div":
        est = divergence(field, 0.0, y1.expand(n, d), generator=g)
        sym = (jac + jac.T) / 2
        exact, var_theory = torch.trace(jac), 2 * sym.pow(2).sum()
    else:
        est = jacobian_frobenius(field, 0.0, y1.expand(n, d), generator=g)
        jjt = jac @ jac.T
        exact, var_theory = jac.pow(2).sum(), 2 * jjt.pow(2).sum()
    var = est.var()
    stderr = (var / n).sqrt()
    assert abs(est.mean() - exact) < 4 * stderr, f"mean {est.mean():.4f} vs {exact:.4f}"
    assert abs(var / var_theory - 1) < 0.1, f"variance {var:.4f} vs theory {var_theory:.4f}"
    # Averaging S probes divides the variance by S.
    est4 = divergence(field, 0.0, y1.expand(n, d), samples=4, generator=g)
    if which == "div":
        assert abs(est4.var() / (var_theory / 4) - 1) < 0.1


def test_probes_fresh_per_call_and_seeded() -> None:
    g = gen(5)
    a, b, y = (torch.randn(s, generator=g, dtype=DT) for s in [(4, 4), (4,), (2, 4)])
    field = Affine(a, b)
    first, second = (divergence(field, 0.0, y, generator=g) for _ in range(2))
    assert not torch.equal(first, second)
    torch.testing.assert_close(
        divergence(field, 0.0, y, samples=3, generator=gen(9)),
        divergence(field, 0.0, y, samples=3, generator=gen(9)),
    )


def test_gradcheck_exact_divergence_wrt_weight() -> None:
    g = gen(6)
    w, c, y = (torch.randn(s, generator=g, dtype=DT) for s in [(4, 4), (4,), (3, 4)])

    def fn(weight: Tensor) -> Tensor:
        return divergence(Tanh(weight, c), 0.0, y, exact=True)

    assert torch.autograd.gradcheck(fn, (w.requires_grad_(),))

    def frob(weight: Tensor) -> Tensor:
        return jacobian_frobenius(Tanh(weight, c), 0.0, y, exact=True)

    assert torch.autograd.gradcheck(frob, (w,))


def test_hutchinson_gradient_matches_closed_form_for_fixed_probe() -> None:
    g = gen(7)
    a, b, y = (torch.randn(s, generator=g, dtype=DT) for s in [(4, 4), (4,), (3, 4)])
    field = Affine(a, b)
    est = divergence(field, 0.0, y, generator=gen(11))
    (grad,) = torch.autograd.grad(est.sum(), field.a)
    z = torch.randn((1, *y.shape), generator=gen(11), dtype=DT)[0]  # documented probe layout
    a_ = a.clone().requires_grad_()
    closed = torch.einsum("bi,ij,bj->b", z, a_, z)  # z_bᵀ A z_b
    torch.testing.assert_close(est, closed.detach())
    torch.testing.assert_close(grad, torch.autograd.grad(closed.sum(), a_)[0])


def test_hutchinson_gradient_matches_exact_in_expectation() -> None:
    n, d = 20000, 3
    g = gen(8)
    a, b, y1 = (torch.randn(s, generator=g, dtype=DT) for s in [(d, d), (d,), (d,)])
    field = Affine(a, b)
    (grad,) = torch.autograd.grad(
        divergence(field, 0.0, y1.expand(n, d), generator=g).mean(), field.a
    )
    # ∂ tr(A)/∂A = I; each entry of the mean of z zᵀ has standard error <= sqrt(2/n).
    assert (grad - torch.eye(d, dtype=DT)).abs().max() < 5 * math.sqrt(2 / n)


def test_gradients_into_states_and_no_grad() -> None:
    g = gen(9)
    w, c, y = (torch.randn(s, generator=g, dtype=DT) for s in [(4, 4), (4,), (3, 4)])
    field = Tanh(w, c)
    y = y.requires_grad_()
    h = 2.0 * y  # a non-leaf state, as in a trajectory
    div = divergence(field, 0.0, h, exact=True)
    closed = ((1 - torch.tanh(h @ w.T + c).pow(2)) * torch.diagonal(w)).sum(1)
    torch.testing.assert_close(div, closed)
    gy = torch.autograd.grad(div.sum(), y, retain_graph=True)[0]  # h is shared
    torch.testing.assert_close(gy, torch.autograd.grad(closed.sum(), y)[0])
    # States without grad: the result still depends on the parameters only.
    aff = Affine(w, c)
    est = divergence(aff, 0.0, y.detach(), generator=g)
    assert est.requires_grad
    with torch.no_grad():
        quiet = divergence(aff, 0.0, y, exact=True)
    assert not quiet.requires_grad
    torch.testing.assert_close(quiet, torch.trace(w).expand(3))


@pytest.mark.parametrize("fn", [divergence, jacobian_frobenius])
def test_samples_zero_raises(fn) -> None:
    field = Affine(torch.eye(2, dtype=DT), torch.zeros(2, dtype=DT))
    with pytest.raises(ValueError, match="samples"):
        fn(field, 0.0, torch.ones(1, 2, dtype=DT), samples=0)
    with pytest.raises(ValueError, match="samples"):
        trajectory_regularizer(field, [0.0, 1.0], [torch.ones(1, 2)] * 2, samples=0)


def test_total_variation() -> None:
    torch.manual_seed(0)
    fields = nn.ModuleList(nn.Linear(3, 3).double() for _ in range(4))
    manual = sum(
        (fields[k].weight - fields[k - 1].weight).pow(2).sum()
        + (fields[k].bias - fields[k - 1].bias).pow(2).sum()
        for k in range(1, 4)
    )
    tv = total_variation(fields)
    torch.testing.assert_close(tv, manual)
    assert tv.requires_grad
    assert total_variation(fields[0]) == 0
    assert total_variation([fields[0]]) == 0
    with pytest.raises(ValueError, match="shape"):
        total_variation([nn.Linear(3, 3), nn.Linear(3, 4)])


@pytest.mark.parametrize("p", [0.0, 2.0])
def test_trajectory_regularizer_hand_computed(p: float) -> None:
    g = gen(10)
    n_steps, d, batch = 3, 3, 2
    mats = [torch.randn(d, d, generator=g, dtype=DT) for _ in range(n_steps)]
    vecs = [torch.randn(d, generator=g, dtype=DT) for _ in range(n_steps)]
    fields = nn.ModuleList(Affine(a, b, time_power=1) for a, b in zip(mats, vecs, strict=True))
    times = [0.5, 1.0, 1.5, 2.0]
    states = [torch.randn(batch, d, generator=g, dtype=DT) for _ in range(n_steps + 1)]
    terms = trajectory_regularizer(
        fields, times, states, alpha_div=0.7, alpha_tv=0.3, p=p, exact=True, return_terms=True
    )
    assert isinstance(terms, RegularizerTerms)
    # div F_k(t, y) = t tr(A_k); the last state uses the last step's field.
    div = sum(
        (k / n_steps) ** p * times[k] * torch.trace(fields[min(k, n_steps - 1)].a)
        for k in range(n_steps + 1)
    ) / (d * n_steps)
    tv = (
        sum(
            (fields[k].a - fields[k - 1].a).pow(2).sum()
            + (fields[k].b - fields[k - 1].b).pow(2).sum()
            for k in range(1, n_steps)
        )
        / n_steps
    )
    torch.testing.assert_close(terms.divergence, div)
    torch.testing.assert_close(terms.total_variation, tv)
    total = trajectory_regularizer(
        fields, times, states, alpha_div=0.7, alpha_tv=0.3, p=p, exact=True
    )
    expected = 0.7 * div + 0.3 * tv
    torch.testing.assert_close(total, expected)
    got = torch.autograd.grad(total, list(fields.parameters()))
    want = torch.autograd.grad(expected, list(fields.parameters()))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_trajectory_regularizer_shared_field_and_validation() -> None:
    g = gen(11)
    a, b = torch.randn(2, 2, generator=g, dtype=DT), torch.randn(2, generator=g, dtype=DT)
    field = Affine(a, b)
    states = [torch.randn(4, 2, generator=g, dtype=DT) for _ in range(3)]
    terms = trajectory_regularizer(
        field, [0.0, 1.0, 2.0], states, alpha_div=1.0, alpha_tv=5.0, exact=True, return_terms=True
    )
    torch.testing.assert_close(terms.divergence, 3 * torch.trace(a) / (2 * 2))
    assert terms.total_variation == 0
    torch.testing.assert_close(terms.total, terms.divergence)
    with pytest.raises(ValueError):
        trajectory_regularizer([field, field, field], [0.0, 1.0, 2.0], states)
    with pytest.raises(ValueError):
        trajectory_regularizer(field, [0.0, 1.0], states)

"""irn.scheme: the θ-step written once (ThetaScheme) and its growth factor R, against formulas
computed here from the definitions: Φ of both schemes, R(z) in closed form and as one step on
y' = λy, where ∂Φ/∂y lives, and the solver hints of a declared disc."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from fields import DT, Scalar, TanhField

from irn.scheme import SCHEMES, ThetaScheme, stability_function

THETAS = [0.0, 0.25, 0.5, 0.75, 1.0]
TIGHT = {"rtol": 1e-13, "atol": 1e-15}  # the same arithmetic up to rounding


# ------------------------------------------------------------------------------ R(z)
def test_stability_function_values():
    z = torch.tensor([-20.0 + 0j, 1j, -1.0 + 0j], dtype=torch.complex128)
    torch.testing.assert_close(stability_function(z, 0.0), 1 + z)
    torch.testing.assert_close(stability_function(z, 1.0), 1 / (1 - z))
    torch.testing.assert_close(stability_function(z, 0.5), (2 + z) / (2 - z))
    assert stability_function(-2.0, 0.5) == 0.0
    arr = stability_function(np.array([1.0, 2.0]), 1.0)  # pole at z = 1
    assert isinstance(arr, np.ndarray) and np.isinf(arr[0]) and arr[1] == -1.0
    with pytest.raises(ValueError, match="theta"):
        stability_function(z, 1.2)


@pytest.mark.parametrize("theta", THETAS)
def test_imaginary_axis_and_infinity(theta):
    w = torch.linspace(0.1, 10, 50, dtype=torch.float64)
    r = stability_function(1j * w, theta).abs()
    expected = ((1 + (1 - theta) ** 2 * w**2) / (1 + theta**2 * w**2)).sqrt()
    torch.testing.assert_close(r, expected)
    if theta > 0:
        far = stability_function(torch.tensor(-1e12, dtype=torch.float64), theta)
        assert float(far) == pytest.approx(-(1 - theta) / theta, abs=1e-9)


@pytest.mark.parametrize("theta", THETAS)
def test_R_is_the_closed_form_on_numbers_and_tensors(theta):
    """R(z) = (1 + (1−θ)z)/(1 − θz), term by term in Python complex arithmetic."""
    step = ThetaScheme(theta, 0.5)
    zs = [-3.0, -0.5 + 2.0j, 0.25j, 0.4 - 0.1j]
    for z in zs:
        expected = (1 + (1 - theta) * z) / (1 - theta * z)
        assert step.R(z) == pytest.approx(expected, rel=1e-15)
    z = torch.tensor(zs, dtype=torch.complex128)
    expected = torch.tensor(
        [(1 + (1 - theta) * v) / (1 - theta * v) for v in zs], dtype=torch.complex128
    )
    torch.testing.assert_close(step.R(z), expected, **TIGHT)


@pytest.mark.parametrize("kind", SCHEMES)
@pytest.mark.parametrize("theta", THETAS)
@pytest.mark.parametrize("lam", [-7.0, 0.3, -1.0 + 2.0j, 0.5 - 3.0j], ids=str)
def test_one_step_on_the_test_equation_multiplies_by_R(kind, theta, lam):
    """For F(y) = λy, Φ is affine in y: y = x + Φ(x, 0) + s·y with s = Φ(x, 1) − Φ(x, 0)
    (elementwise). Solving that scalar equation by hand gives R(hλ)·x, real or complex λ."""
    h, t = 0.4, 0.2
    step = ThetaScheme(theta, h, kind)
    field = Scalar(lam)
    x = torch.randn(6, 3, dtype=torch.complex128)
    phi0 = step.phi(field, t, x, torch.zeros_like(x))
    slope = step.phi(field, t, x, torch.ones_like(x)) - phi0
    y = (x + phi0) / (1 - slope)
    torch.testing.assert_close(y, step.R(h * lam) * x, **TIGHT)
    # and the residual of the step vanishes there
    torch.testing.assert_close(y - x - step.phi(field, t, x, y), torch.zeros_like(x), **TIGHT)


# ------------------------------------------------------------------------------ Φ and parts
@pytest.mark.parametrize("theta", THETAS)
def test_phi_of_the_linear_scheme(theta):
    """Φ(x, y) = h[(1−θ) F(t, x) + θ F(t+h, y)], with F(t, x) computed or passed in."""
    h, t = 0.7, 0.3
    field = TanhField(4)
    x, y = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT)
    expected = h * ((1 - theta) * field(t, x) + theta * field(t + h, y))
    step = ThetaScheme(theta, h, "linear")
    with torch.no_grad():
        torch.testing.assert_close(step.phi(field, t, x, y), expected, **TIGHT)
        torch.testing.assert_close(step.phi(field, t, x, y, fx=field(t, x)), expected, **TIGHT)


@pytest.mark.parametrize("theta", THETAS)
def test_phi_of_the_one_leg_scheme(theta):
    """Φ(x, y) = h F(t+θh, (1−θ)x + θy)."""
    h, t = 0.7, 0.3
    field = TanhField(4)
    x, y = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT)
    expected = h * field(t + theta * h, (1 - theta) * x + theta * y)
    with torch.no_grad():
        got = ThetaScheme(theta, h, "one-leg").phi(field, t, x, y)
    torch.testing.assert_close(got, expected, **TIGHT)


def test_parts_drop_what_vanishes_and_need_fx_only_when_used():
    h, t = 0.5, 0.2
    x, fx = torch.randn(3, 2, dtype=DT), torch.randn(3, 2, dtype=DT)
    assert ThetaScheme(1.0, h, "linear").parts(t, x, None) == (None, h, t + h, None, 1.0)
    c, k, tau, a, b = ThetaScheme(0.3, h, "linear").parts(t, x, fx)
    assert (k, tau, a, b) == (h * 0.3, t + h, None, 1.0)
    torch.testing.assert_close(c, h * 0.7 * fx, **TIGHT)
    with pytest.raises(ValueError, match="needs fx"):
        ThetaScheme(0.3, h, "linear").parts(t, x, None)
    assert ThetaScheme(1.0, h, "one-leg").parts(t, x, None) == (None, h, t + h, None, 1.0)
    c, k, tau, a, b = ThetaScheme(0.3, h, "one-leg").parts(t, x, None)
    assert (c, k, tau, b) == (None, h, t + 0.3 * h, 0.3)
    torch.testing.assert_close(a, 0.7 * x, **TIGHT)
    # What does not vanish is what Φ adds up: c + k·F(τ, a + b·y).
    assert ThetaScheme(0.3, h, "linear").uses_fx and not ThetaScheme(1.0, h, "linear").uses_fx
    assert not ThetaScheme(0.3, h, "one-leg").uses_fx
    assert ThetaScheme(0.0, h).explicit and not ThetaScheme(0.25, h).explicit


@pytest.mark.parametrize("kind,theta", list(itertools.product(SCHEMES, [0.0, 0.4, 1.0])))
def test_dphi_dy_is_theta_h_times_the_jacobian_at_the_evaluation_point(kind, theta):
    """∂Φ/∂y = θh ∂F/∂y(τ, z) at (τ, z) = evaluation_point: where stability analysis must
    linearize F. (θ = 0: Φ does not depend on y; F is evaluated at (t, x).)"""
    h, t = 0.6, 0.1
    step = ThetaScheme(theta, h, kind)
    field = TanhField(3)
    x, y = torch.randn(3, dtype=DT), torch.randn(3, dtype=DT)
    tau, z = step.evaluation_point(t, x, y)
    if kind == "one-leg":
        assert tau == pytest.approx(t + theta * h) and torch.equal(z, (1 - theta) * x + theta * y)
    else:
        assert (tau, z) == ((t + h, y) if theta > 0 else (t, x))
    dphi = torch.autograd.functional.jacobian(lambda v: step.phi(field, t, x[None], v[None])[0], y)
    dF = torch.autograd.functional.jacobian(lambda v: field(tau, v[None])[0], z)
    torch.testing.assert_close(dphi, theta * h * dF, **TIGHT)


# ---------------------------------------------------------------------- declared-disc hints
@pytest.mark.parametrize(
    "theta,h,center,radius,contraction,gain",
    [
        (1.0, 1.0, -1.0, 0.9, 0.9 / 2.0, 1 / 2.0),  # c = 2, ρ = 0.9
        (0.5, 0.4, -5.0, 0.0, 0.0, 1 / 2.0),  # c = 1 + 0.2·5 = 2, ρ = 0
        (1.0, 1.05, 0.5, 0.4, 0.42 / 0.475, 1 / 0.475),  # c = 1 − 0.525 = 0.475 < 1
        (0.5, 2.0, -0.2, 0.9, 0.9 / 1.2, 1 / 1.2),  # θh = 1: c = 1.2, ρ = 0.9
        (1.0, 1.0, 0.5, 0.6, None, 1.0),  # c = 0.5 < ρ = 0.6: no contraction, forward Euler
        (1.0, 1.0, -1.0, 2.0, None, 1.0),  # c = ρ = 2: not below one
        (1.0, 1.0, None, None, None, 1.0),  # nothing declared
        (0.0, 1.0, -1.0, 0.9, 0.0, 1.0),  # explicit: c = 1, ρ = 0
    ],
)
def test_contraction_and_predictor_gain_by_hand(theta, h, center, radius, contraction, gain):
    step = ThetaScheme(theta, h)
    got = step.contraction(center, radius)
    assert got is None if contraction is None else got == pytest.approx(contraction, rel=1e-15)
    assert step.predictor_gain(center, radius) == pytest.approx(gain, rel=1e-15)


def test_the_predictor_gain_solves_a_linear_step():
    """With F(y) = c·y the predictor x + g·hF(x) is the exact solution of the θ-step with θ = 1
    (R(hc) = 1/(1 − hc) = 1 + g·hc), the reason for the gain."""
    h, c = 0.4, -5.0
    step = ThetaScheme(1.0, h)
    g = step.predictor_gain(c, 0.0)
    assert 1 + g * h * c == pytest.approx(step.R(h * c), rel=1e-15)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "args,match",
    [
        ((-0.1, 1.0), r"theta must lie in \[0, 1\], got -0.1"),
        ((1.5, 1.0), r"theta must lie in \[0, 1\], got 1.5"),
        ((0.5, 0.0), r"h must be finite and > 0, got 0.0"),
        ((0.5, -1.0), r"h must be finite and > 0"),
        ((0.5, math.inf), r"h must be finite and > 0, got inf"),
        ((0.5, math.nan), r"h must be finite and > 0, got nan"),
        ((0.5, 1.0, "midpoint"), r"unknown scheme 'midpoint'; choose one of \['linear', 'one-l"),
    ],
)
def test_invalid_theta_h_and_kind_raise(args, match):
    with pytest.raises(ValueError, match=match):
        ThetaScheme(*args)


def test_theta_and_h_are_stored_as_floats_and_frozen():
    step = ThetaScheme(1, 2)
    assert (step.theta, step.h, step.kind) == (1.0, 2.0, "linear")
    assert isinstance(step.theta, float) and isinstance(step.h, float)
    with pytest.raises(AttributeError):
        step.h = 0.5

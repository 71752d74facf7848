"""irn.stability: stability regions, eigenvalue limits and layer spectra against closed forms
(R itself, irn.scheme.stability_function, is tested in test_scheme.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fields import Affine, TanhField

import irn
from irn.stability import (
    batch_jacobian,
    complex_grid,
    eigenvalue_limits,
    layer_jacobian_spectrum,
    stability_function,
    stability_region,
)

THETAS = [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("theta", THETAS)
def test_stability_region_matches_the_quadratic_inequality(theta):
    grid = complex_grid((-5, 3), (-4, 4), 201)
    mask, absr = stability_region(theta, grid)
    # |R(z)| ≤ 1  ⇔  2 Re z + (1 − 2θ)|z|² ≤ 0 (paper-notes §1.2); skip the boundary itself.
    q = 2 * grid.real + (1 - 2 * theta) * grid.abs() ** 2
    clear = (absr - 1).abs() > 1e-9
    assert torch.equal(mask[clear], (q <= 0)[clear])


@pytest.mark.parametrize("theta", THETAS)
@pytest.mark.parametrize("h", [0.5, 1.0])
def test_eigenvalue_limits_invert_R(theta, h):
    r_min, r_max = (0.3, 1.5) if theta < 0.5 else (0.1, 2.0)
    a, b = eigenvalue_limits(theta, h, r_min, r_max)
    assert a < b
    assert stability_function(h * a, theta) == pytest.approx(r_min, abs=1e-12)
    assert stability_function(h * b, theta) == pytest.approx(r_max, abs=1e-12)


def test_eigenvalue_limits_reference_numbers():
    # paper-notes §3.3: limits [0.3, 1.5] at h = 1 give [-0.70, 0.50], [-1.08, 0.40], [-2.33, 0.33].
    for theta, (a, b) in [(0.0, (-0.70, 0.50)), (0.5, (-1.08, 0.40)), (1.0, (-2.33, 0.33))]:
        got = eigenvalue_limits(theta, 1.0, 0.3, 1.5)
        assert got == pytest.approx((a, b), abs=5e-3)


def test_eigenvalue_limits_errors():
    with pytest.raises(ValueError, match="unreachable"):
        eigenvalue_limits(1.0, 1.0, -0.5, 1.0)  # R(-inf) = 0 for backward Euler
    with pytest.raises(ValueError, match="r_min must be below"):
        eigenvalue_limits(0.5, 1.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="h must"):
        eigenvalue_limits(0.5, 0.0, 0.1, 0.5)


def test_batch_jacobian_against_autograd():
    field = TanhField(4)
    y = torch.randn(3, 4, dtype=torch.float64)
    J = batch_jacobian(field, 0.2, y)
    for b in range(3):
        ref = torch.autograd.functional.jacobian(lambda v, b=b: field(0.2, v[None])[0], y[b])
        torch.testing.assert_close(J[b], ref)


@pytest.mark.parametrize("scheme", ["linear", "one-leg"])
def test_affine_layer_spectrum_is_R_of_the_eigenvalues(scheme):
    field = Affine(4)
    layer = irn.ThetaLayer(field, theta=0.75, h=0.5, scheme=scheme, tol=1e-12)
    x = torch.randn(2, 4, dtype=torch.float64)
    spec = layer_jacobian_spectrum(layer, x)
    lam = torch.linalg.eigvals(field.A.detach())
    key = lambda v: sorted((round(c.real, 8), round(c.imag, 8)) for c in map(complex, v))  # noqa: E731
    for b in range(2):
        assert np.allclose(key(spec.eigenvalues[b]), key(lam))
    # The step's Jacobian (I − θhA)⁻¹(I + (1−θ)hA) has eigenvalues R(hλ).
    eye = torch.eye(4, dtype=torch.float64)
    A = field.A.detach()
    step = torch.linalg.solve(eye - 0.375 * A, eye + 0.125 * A)
    assert np.allclose(key(torch.linalg.eigvals(step)), key(spec.step_eigenvalues[0]))


def test_trajectory_spectrum_follows_every_step():
    from irn.stability import trajectory_spectrum

    field = Affine(3)
    net = irn.ImplicitResNet(field, steps=3, interval=1.5, theta=1.0, tol=1e-12)
    specs = trajectory_spectrum(net, torch.randn(2, 3, dtype=torch.float64))
    lam = torch.linalg.eigvals(field.A.detach())
    key = lambda v: sorted((round(c.real, 8), round(c.imag, 8)) for c in map(complex, v))  # noqa: E731
    assert len(specs) == 3
    for spec in specs:
        assert key(spec.eigenvalues[1]) == key(lam)
        torch.testing.assert_close(spec.step_eigenvalues, 1 / (1 - 0.5 * spec.eigenvalues))

"""Linear stability of the θ-methods and the spectra of trained layers.

For the test equation ``y' = λy`` both schemes give ``y_{k+1} = R(hλ) y_k`` with

    R(z) = (1 + (1−θ) z) / (1 − θ z),

so a layer whose Jacobian ``∂F/∂y`` has eigenvalues ``λ_i`` (frozen) maps perturbations by
factors ``R(hλ_i)`` (paper-notes §1.2, §5).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .scheme import check_theta, stability_function

__all__ = [
    "LayerSpectrum",
    "batch_jacobian",
    "complex_grid",
    "eigenvalue_limits",
    "layer_jacobian_spectrum",
    "stability_function",
    "stability_region",
    "trajectory_spectrum",
]


def complex_grid(re=(-4.0, 2.0), im=(-3.0, 3.0), n: int = 301) -> torch.Tensor:
    """An ``n × n`` grid of complex numbers ``re[0] ≤ Re z ≤ re[1]``, ``im[0] ≤ Im z ≤ im[1]``
    (rows follow the imaginary axis, as ``matplotlib.contour`` expects)."""
    x = torch.linspace(re[0], re[1], n, dtype=torch.float64)
    y = torch.linspace(im[0], im[1], n, dtype=torch.float64)
    return torch.complex(x[None, :].expand(n, n), y[:, None].expand(n, n))


def stability_region(theta: float, grid) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, |R|)`` on a complex grid: ``mask`` is ``|R(z)| ≤ 1``, the stability region.

    It is a disc for θ < ½, the closed left half-plane for θ = ½ and the exterior of a disc
    for θ > ½ (equivalently ``2 Re z + (1−2θ)|z|² ≤ 0``).
    """
    z = torch.as_tensor(grid)
    if not z.is_complex():
        z = z.to(torch.complex128)
    absr = stability_function(z, theta).abs()
    return absr <= 1.0, absr


def eigenvalue_limits(theta: float, h: float, r_min: float, r_max: float) -> tuple[float, float]:
    """Eigenvalue bounds ``(α, β)`` such that ``R(hα) = r_min`` and ``R(hβ) = r_max``.

    ``R`` increases on the real axis below its pole (``R'(z) = 1/(1−θz)²``), so with the
    spectrum of ``∂F/∂y`` in ``[α, β]`` every real eigen-direction is contracted by at most
    ``r_min`` and expanded by at most ``r_max`` per step. The inverse is
    ``z = (r − 1) / (1 + θ (r − 1))``; it exists for ``r > R(−∞) = −(1−θ)/θ``.

    Raises:
        ValueError: if ``r_min ≥ r_max``, ``h ≤ 0`` or ``r_min`` is not above ``R(−∞)``.
    """
    theta = check_theta(theta)
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}")
    if not r_min < r_max:
        raise ValueError(f"r_min must be below r_max, got r_min={r_min}, r_max={r_max}")
    floor = -(1 - theta) / theta if theta > 0 else -np.inf
    if not r_min > floor:
        raise ValueError(
            f"r_min={r_min} is unreachable: R(z) > R(-inf) = {floor:g} for theta={theta}"
        )

    def inverse(r: float) -> float:
        return (r - 1) / (1 + theta * (r - 1)) / h

    return inverse(r_min), inverse(r_max)


def batch_jacobian(field: nn.Module, t, y: torch.Tensor) -> torch.Tensor:
    """Dense per-sample Jacobians ``∂F(t, y)_b/∂y_b``, shape ``(batch, d, d)`` with the state
    flattened; one batched vector–Jacobian product per state coordinate (for small states)."""
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        out = field(t, y).reshape(y.shape[0], -1)
        rows = []
        for i in range(out.shape[1]):
            (g,) = torch.autograd.grad(out[:, i].sum(), y, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(y).flatten(1) if g is None else g.flatten(1))
    return torch.stack(rows, 1).detach()


class LayerSpectrum(NamedTuple):
    """Eigenvalues of ``∂F/∂y`` at the point the scheme evaluates F, and of the step map."""

    eigenvalues: torch.Tensor  # (batch, d) complex: λ_i of ∂F/∂y
    step_eigenvalues: torch.Tensor  # (batch, d) complex: R(hλ_i)
    point: torch.Tensor  # where F was linearized


def layer_jacobian_spectrum(
    layer, x: torch.Tensor, t: float = 0.0, y=None, *, theta=None, h=None
) -> LayerSpectrum:
    """Spectrum of one :class:`~irn.ThetaLayer` step from ``x`` (with the layer's θ and h, or
    the given ones).

    The field is linearized where the scheme evaluates it implicitly
    (:meth:`irn.scheme.ThetaScheme.evaluation_point`): at ``z = (1−θ)x + θy`` for
    ``"one-leg"`` and at ``y`` for ``"linear"`` (at ``x`` when θ = 0).
    ``step_eigenvalues = R(hλ)`` are the eigenvalues of the step's Jacobian
    ``(I − θhJ)⁻¹(I + (1−θ)hJ)`` when ``J`` is the same at both ends (exact for affine F).
    """
    step = layer.step(theta, h)
    if y is None:
        with torch.no_grad():
            y = layer(x, t, theta=step.theta, h=step.h)
    tf, point = step.evaluation_point(t, x, y)
    J = batch_jacobian(layer.field, tf, point)
    lam = torch.linalg.eigvals(J)
    return LayerSpectrum(lam, step.R(step.h * lam), point.detach())


def trajectory_spectrum(net, x: torch.Tensor, t0: float = 0.0) -> list[LayerSpectrum]:
    """:func:`layer_jacobian_spectrum` at every step of an :class:`~irn.ImplicitResNet`
    along the trajectory from ``x`` (after the network's input map and augmentation)."""
    with torch.no_grad():
        _, traj = net(x, t0, return_trajectory=True)
    return [
        layer_jacobian_spectrum(net.layer(k), traj.states[k], traj.times[k], traj.states[k + 1])
        for k in range(net.steps)
    ]

"""The θ-schemes, written once: the step, where it evaluates F, its growth factor, solver hints.

Both schemes write one step of size ``h`` from ``x`` at time ``t`` as ``y = x + Φ(x, y)``
(paper-notes §1.1):

* ``"linear"``:  ``Φ(x, y) = h[(1−θ) F(t, x) + θ F(t+h, y)]``
* ``"one-leg"``: ``Φ(x, y) = h F(t+θh, (1−θ)x + θy)``

``θ = 0`` is forward Euler (a ResNet block), ``θ = 1`` backward Euler, ``θ = ½`` the trapezoidal
rule (linear) or the implicit midpoint rule (one-leg). For the test equation ``y' = λy`` both give
``y_{k+1} = R(hλ) y_k`` with

    R(z) = (1 + (1−θ) z) / (1 − θ z).

:class:`ThetaScheme` is the only place these formulas live: the layer builds its residual and
its adjoint graph from :meth:`ThetaScheme.phi`, and :mod:`irn.stability` linearizes F at
:meth:`ThetaScheme.evaluation_point`. θ and h are values of one call, never module attributes
that are written and restored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = [
    "SCHEMES",
    "DeclaresDisc",
    "DeclaresSpectrum",
    "ThetaScheme",
    "check_theta",
    "declared_disc",
    "inverse_stability",
    "rk4_step",
    "stability_function",
]

SCHEMES = ("linear", "one-leg")

Field = Callable[[object, torch.Tensor], torch.Tensor]


def check_theta(theta: float) -> float:
    """θ as a float in [0, 1], or ``ValueError`` (a string or bool is refused, not parsed)."""
    if isinstance(theta, (str, bytes, bool)):
        raise ValueError(f"theta must be a number in [0, 1], got {theta!r}")
    if not 0.0 <= float(theta) <= 1.0:
        raise ValueError(f"theta must lie in [0, 1], got {theta}")
    return float(theta)


def stability_function(z, theta: float):
    """``R(z) = (1 + (1−θ) z) / (1 − θ z)``, the growth factor of one θ-step at ``z = hλ``.

    Both the linear and the one-leg scheme share it. Works elementwise on complex (or real)
    tensors, NumPy arrays and Python numbers, returning the same kind; ``R`` has a pole at
    ``z = 1/θ`` (there the array library's division gives ``inf``/``nan``).
    """
    theta = check_theta(theta)
    if isinstance(z, np.ndarray):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (1 + (1 - theta) * z) / (1 - theta * z)
    return (1 + (1 - theta) * z) / (1 - theta * z)


def inverse_stability(r, theta: float, h: float = 1.0):
    """``R⁻¹``: the ``μ`` with ``R(hμ) = r``, i.e. ``(r − 1) / (1 + θ(r − 1)) / h``.

    The eigenvalue a θ-step must see to reproduce a growth factor ``r`` (e.g. ``r = e^{hλ}``,
    the exact flow's): elementwise on complex or real NumPy arrays, tensors and numbers.
    """
    theta = check_theta(theta)
    return (r - 1) / (1 + theta * (r - 1)) / h


def rk4_step(field: Field, t, y: torch.Tensor, h: float) -> torch.Tensor:
    """One classical Runge–Kutta step of ``y' = F(t, y)``: the reference integrator the
    experiments compare θ-steps with (fourth order, explicit)."""
    k1 = field(t, y)
    k2 = field(t + h / 2, y + h / 2 * k1)
    k3 = field(t + h / 2, y + h / 2 * k2)
    k4 = field(t + h, y + h * k3)
    return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


@runtime_checkable
class DeclaresSpectrum(Protocol):
    """A field that declares where the eigenvalues of ``∂F/∂y`` lie: in the disc
    ``|λ − center| ≤ radius``. A layer then damps, predicts and picks its solvers from the
    disc (:meth:`irn.ThetaLayer.damping`); irn.SpectralNormalized is one."""

    @property
    def center(self) -> float: ...

    @property
    def radius(self) -> float: ...


@runtime_checkable
class DeclaresDisc(DeclaresSpectrum, Protocol):
    """A :class:`DeclaresSpectrum` field that also knows a tighter, current radius
    ``disc_radius <= radius`` (e.g. shrunk by a learned scale)."""

    @property
    def disc_radius(self) -> float: ...


def declared_disc(field: object) -> tuple[float | None, float | None]:
    """``(center, radius)`` of the tightest disc ``field`` declares, or ``(None, None)``."""
    if not isinstance(field, DeclaresSpectrum):
        return None, None
    # The tighter current radius is a value of the parameters (a host read): a compiled graph
    # uses the declared bound, which is known when it is traced.
    tight = isinstance(field, DeclaresDisc) and not torch.compiler.is_compiling()
    radius = field.disc_radius if tight else field.radius
    return field.center, radius


@dataclass(frozen=True)
class ThetaScheme:
    """One θ-step: ``y = x + Φ(x, y)`` with ``Φ`` as in the module docstring.

    Args:
        theta: θ in [0, 1].
        h: Step size, finite and > 0.
        kind: ``"linear"`` or ``"one-leg"``.
    """

    theta: float
    h: float
    kind: str = "linear"

    def __post_init__(self) -> None:
        check_theta(self.theta)
        if isinstance(self.h, (str, bytes, bool)):
            raise ValueError(f"h must be a finite number > 0, got {self.h!r}")
        if not (math.isfinite(float(self.h)) and float(self.h) > 0.0):
            raise ValueError(f"h must be finite and > 0, got {self.h}")
        if self.kind not in SCHEMES:
            raise ValueError(f"unknown scheme {self.kind!r}; choose one of {list(SCHEMES)}")
        object.__setattr__(self, "theta", float(self.theta))
        object.__setattr__(self, "h", float(self.h))

    @property
    def explicit(self) -> bool:
        """Whether θ = 0 (forward Euler, no solve)."""
        return self.theta == 0.0

    @property
    def uses_fx(self) -> bool:
        """Whether ``Φ`` contains ``F(t, x)`` (linear scheme with θ < 1)."""
        return self.kind == "linear" and self.theta < 1.0

    # ------------------------------------------------------------------------------ the step
    def parts(self, t, x: torch.Tensor, fx: torch.Tensor | None):
        """``Φ(x, y) = c + k·F(τ, a + b·y)`` as ``(c, k, τ, a, b)``.

        ``c`` and ``a`` are ``None`` when they vanish (θ = 1: backward Euler keeps no part of
        F(t, x) in Φ, nor in its graph). ``fx = F(t, x)`` is needed when :attr:`uses_fx`.
        """
        th, h = self.theta, self.h
        if self.kind == "linear":  # h(1−θ)F(t, x) + hθ F(t+h, y)
            if th == 1.0:
                return None, h, t + h, None, 1.0
            if fx is None:
                raise ValueError("the linear scheme with theta < 1 needs fx = F(t, x)")
            return (h * (1 - th)) * fx, h * th, t + h, None, 1.0
        # one-leg: h F(t+θh, (1−θ)x + θy)
        return None, h, t + th * h, (None if th == 1.0 else (1 - th) * x), th

    @staticmethod
    def implicit_term(field: Field, parts, y: torch.Tensor) -> torch.Tensor:
        """``k·F(τ, a + b·y)``, skipping multiplications by one."""
        _, k, tau, a, b = parts
        arg = y if a is None and b == 1.0 else (b * y if a is None else a + b * y)
        f = field(tau, arg)
        return f if k == 1.0 else k * f

    def phi(self, field: Field, t, x: torch.Tensor, y: torch.Tensor, fx=None) -> torch.Tensor:
        """``Φ(x, y)``, the increment of the step (``fx = F(t, x)`` may be passed in)."""
        if fx is None and self.uses_fx:
            fx = field(t, x)
        parts = self.parts(t, x, fx)
        out = self.implicit_term(field, parts, y)
        return out if parts[0] is None else parts[0] + out

    def evaluation_point(self, t, x: torch.Tensor, y: torch.Tensor):
        """``(τ, z)``: where the step evaluates F implicitly, i.e. where ``∂Φ/∂y`` lives.

        ``z = (1−θ)x + θy`` at ``τ = t + θh`` for ``"one-leg"``; ``z = y`` at ``τ = t + h`` for
        ``"linear"`` (and ``z = x`` at ``τ = t`` when θ = 0, the only evaluation then).
        """
        if self.kind == "one-leg":
            return t + self.theta * self.h, (1 - self.theta) * x + self.theta * y
        if self.theta > 0:
            return t + self.h, y
        return t, x

    def R(self, z):
        """The growth factor :func:`stability_function` of this step at ``z = hλ``."""
        return stability_function(z, self.theta)

    # -------------------------------------------------------- hints from a declared spectrum
    def contraction(self, center: float | None, radius: float | None) -> float | None:
        """Bound ``ρ/c`` on the damped fixed-point iteration's contraction per step.

        If the eigenvalues of ``∂F/∂y`` lie in the disc ``|λ − center| ≤ radius``, those of the
        residual's Jacobian ``I − θh ∂F/∂y`` lie in the disc with centre ``c = 1 − θh·center`` and
        radius ``ρ = θh·radius``; the iteration damped by ``β = 1/c`` contracts by ``ρ/c`` per step.
        ``None`` when nothing is declared, or the bound is not below one.
        """
        if center is None or radius is None:
            return None
        c = 1.0 - self.theta * self.h * float(center)
        rho = self.theta * self.h * float(radius)
        return rho / c if c > rho else None

    def predictor_gain(self, center: float | None, radius: float | None) -> float:
        """``g`` in the explicit predictor ``x + g·h F(t, x)``: ``1/(1 − θh·center)``.

        With ``F(y) ≈ F(x) + c (y − x)`` the θ-step has exactly this solution, so a field with a
        strongly negative declared centre starts near its fixed point instead of overshooting by
        ``h|c|`` as forward Euler does. It is 1 (forward Euler) unless the declared spectrum
        gives a contraction (:meth:`contraction`). The same number is the damping ``β = 1/c``.
        """
        if self.contraction(center, radius) is None:
            return 1.0
        return 1.0 / (1.0 - self.theta * self.h * float(center))

"""The implicit θ-layer: one step of a θ-method whose output is a fixed point.

Both schemes write the step as ``y = x + Φ(x, y)`` (paper-notes §1.1):

* ``scheme="linear"``:  ``y = x + h[(1−θ) F(t, x) + θ F(t+h, y)]``
* ``scheme="one-leg"``: ``y = x + h F(t+θh, (1−θ)x + θy)``

``θ = 0`` is forward Euler (a ResNet block, no solve), ``θ = 1`` backward Euler, ``θ = ½`` the
trapezoidal rule (linear) or the implicit midpoint rule (one-leg). This is the only module that
writes the schemes down; :mod:`irn.adjoint` is the only one that writes the backward pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from .adjoint import AdjointConfig, ImplicitStep
from .solvers import LINEAR_SOLVERS, POLICIES, SOLVERS, SolverStats, enforce, solve
from .spectral import frozen

__all__ = ["SCHEMES", "ThetaLayer", "ThetaStats"]

SCHEMES = ("linear", "one-leg")
BACKWARDS = ("adjoint", "unrolled")


@dataclass
class ThetaStats:
    """Statistics of the last forward (and backward) pass of a :class:`ThetaLayer`.

    ``iterations``, ``residual`` and ``converged`` describe the forward solve (``residual`` is
    the largest per-sample relative residual); the ``backward_*`` fields are filled in by the
    adjoint solve and stay ``None`` until a backward pass has run (or with ``"unrolled"``).
    """

    forward: SolverStats
    backward: SolverStats | None = None

    iterations = property(lambda self: self.forward.iterations)
    residual = property(lambda self: self.forward.residual)
    converged = property(lambda self: self.forward.converged)
    evaluations = property(lambda self: self.forward.evaluations)
    implicit = property(lambda self: self.forward.solver != "explicit")
    backward_iterations = property(lambda self: _get(self.backward, "iterations"))
    backward_residual = property(lambda self: _get(self.backward, "residual"))
    backward_converged = property(lambda self: _get(self.backward, "converged"))


def _get(stats: SolverStats | None, name: str):
    return None if stats is None else getattr(stats, name)


class ThetaLayer(nn.Module):
    """Implicit residual layer ``y = x + Φ(x, y)`` solved by a batched nonlinear solver.

    Args:
        field: ``nn.Module`` called as ``field(t, y)``, returning a tensor shaped like ``y``;
            ``y`` is ``(batch, *state)`` and samples must not interact.
        theta: θ in [0, 1]; 0 is the explicit ResNet step (no solve).
        h: Step size, > 0.
        scheme: ``"linear"`` (θ-combination of F) or ``"one-leg"`` (F at a θ-combination).
        solver: ``"auto"`` (default: see :meth:`method`), ``"anderson"``, ``"fixed-point"``
            (Picard); these take the option ``damping`` (default :meth:`damping`, from the
            field's declared spectrum if any),
            ``"newton"`` (Newton–Krylov: JVPs + GMRES) or ``"lbfgs"`` (minimizes ``½‖r‖²``,
            the paper's reference method). All start from the explicit predictor
            ``x + h F(t, x)`` (forward Euler; divided by ``1 − θh·c`` when the field declares
            its spectral centre ``c``, see :meth:`predictor_gain`).
        tol: Relative per-sample residual: sample ``i`` is solved when
            ``‖y_i − x_i − Φ(x_i, y_i)‖ ≤ tol · max(‖y_i‖, ‖x_i‖)`` (norms over the state),
            the same test for every solver.
        max_iter: Nonlinear iterations allowed.
        backward: ``"adjoint"`` (implicit-function theorem, memory independent of the number
            of iterations) or ``"unrolled"`` (autograd through the iterations).
        on_failure: ``"warn"`` (emit :class:`~irn.ConvergenceWarning`), ``"raise"``
            (:class:`~irn.ConvergenceError`) or ``"ignore"``; applies to the forward and the
            adjoint solve, and ``stats.converged`` records the outcome in every case.
        solver_options: Extra keyword arguments for the solver (``damping``, ``memory``, ...).
        adjoint_solver: ``"auto"`` (default, see :meth:`adjoint_method`), ``"gmres"`` or
            ``"fixed-point"`` (the Neumann series, option ``omega``) for ``(I − ∂Φ/∂y)ᵀv = g``.
        adjoint_tol: Relative tolerance of the adjoint solve (default: ``tol``).
        adjoint_max_iter: Products allowed in the adjoint solve (default: ``max_iter``).
        adjoint_options: Extra keyword arguments for the linear solver (e.g. ``restart``).
    """

    def __init__(
        self,
        field: nn.Module,
        *,
        theta: float = 1.0,
        h: float = 1.0,
        scheme: str = "linear",
        solver: str = "auto",
        tol: float = 1e-6,
        max_iter: int = 50,
        backward: str = "adjoint",
        on_failure: str = "warn",
        solver_options: dict | None = None,
        adjoint_solver: str = "auto",
        adjoint_tol: float | None = None,
        adjoint_max_iter: int | None = None,
        adjoint_options: dict | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(field, nn.Module) or not callable(field):
            raise ValueError(f"field must be an nn.Module called as field(t, y), got {field!r}")
        if not 0.0 <= float(theta) <= 1.0:
            raise ValueError(f"theta must lie in [0, 1], got {theta}")
        if not float(h) > 0.0:
            raise ValueError(f"h must be > 0, got {h}")
        for name, value, allowed in (
            ("scheme", scheme, SCHEMES),
            ("solver", solver, ("auto", *SOLVERS)),
            ("backward", backward, BACKWARDS),
            ("on_failure", on_failure, POLICIES),
            ("adjoint_solver", adjoint_solver, ("auto", *LINEAR_SOLVERS)),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {list(allowed)}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.field = field
        self.theta, self.h = float(theta), float(h)
        self.scheme, self.solver, self.backward = scheme, solver, backward
        self.tol, self.max_iter, self.on_failure = float(tol), int(max_iter), on_failure
        self.solver_options = dict(solver_options or {})
        self.adjoint_solver = adjoint_solver
        self.adjoint_tol = float(adjoint_tol) if adjoint_tol is not None else self.tol
        self.adjoint_max_iter = int(adjoint_max_iter or self.max_iter)
        self.adjoint_options = dict(adjoint_options or {})
        self.stats: ThetaStats | None = None

    def extra_repr(self) -> str:
        return (
            f"theta={self.theta}, h={self.h}, scheme={self.scheme!r}, solver={self.solver!r}, "
            f"tol={self.tol:g}, backward={self.backward!r}"
        )

    def _eval(self, t, y: torch.Tensor) -> torch.Tensor:
        out = self.field(t, y)
        if not isinstance(out, torch.Tensor) or out.shape != y.shape:
            got = getattr(out, "shape", type(out).__name__)
            raise ValueError(
                f"field output shape {tuple(got)} differs from its input shape {tuple(y.shape)}"
            )
        return out

    def _parts(self, t, x: torch.Tensor, fx: torch.Tensor | None):
        """The scheme as ``Φ(x, y) = c + k·F(τ, a + b·y)``: returns ``(c, k, τ, a, b)``.

        ``c`` and ``a`` are ``None`` when they vanish (θ = 1: backward Euler keeps no part of
        F(t, x) in Φ, nor in its graph). This is the one place the two schemes are written.
        """
        th, h = self.theta, self.h
        if self.scheme == "linear":  # h(1−θ)F(t, x) + hθ F(t+h, y)
            if th == 1.0:
                return None, h, t + h, None, 1.0
            fx = self._eval(t, x) if fx is None else fx
            return (h * (1 - th)) * fx, h * th, t + h, None, 1.0
        # one-leg: h F(t+θh, (1−θ)x + θy)
        return None, h, t + th * h, (None if th == 1.0 else (1 - th) * x), th

    def _implicit_term(self, parts, y: torch.Tensor) -> torch.Tensor:
        """``k·F(τ, a + b·y)``, skipping multiplications by one."""
        _, k, tau, a, b = parts
        arg = y if a is None and b == 1.0 else (b * y if a is None else a + b * y)
        f = self._eval(tau, arg)
        return f if k == 1.0 else k * f

    def phi(self, t, x: torch.Tensor, y: torch.Tensor, fx: torch.Tensor | None = None):
        """``Φ(x, y)``: the increment of the step (``fx = F(t, x)`` may be passed in)."""
        parts = self._parts(t, x, fx)
        out = self._implicit_term(parts, y)
        return out if parts[0] is None else parts[0] + out

    def method(self) -> str:
        """The solver a forward pass uses: ``solver`` itself, or for ``"auto"`` damped
        fixed-point iteration when the field's declared spectrum makes it contract by at least
        ½ per step (see :meth:`damping`), and Anderson acceleration otherwise."""
        if self.solver != "auto":
            return self.solver
        rate = self.contraction()
        return "fixed-point" if rate is not None and rate <= 0.5 else "anderson"

    def contraction(self) -> float | None:
        """Bound ``ρ/c`` on the damped fixed-point iteration's contraction per step, from the
        field's declared spectrum (``None`` if the field declares none or it is not < 1)."""
        center = getattr(self.field, "center", None)
        # The tightest declared radius: SpectralNormalized's disc shrinks with its learned σ(ϑ).
        radius = getattr(self.field, "disc_radius", getattr(self.field, "radius", None))
        if center is None or radius is None:
            return None
        c = 1.0 - self.theta * self.h * float(center)
        rho = self.theta * self.h * float(radius)
        return rho / c if c > rho else None

    def adjoint_method(self) -> str:
        """The adjoint solver: ``adjoint_solver``, or for ``"auto"`` the damped Neumann series
        (``"fixed-point"`` with ω = :meth:`damping`) when the declared spectrum guarantees a
        contraction of ½ or better (the adjoint matrix has the same spectrum as the forward
        residual's Jacobian), and GMRES otherwise."""
        if self.adjoint_solver != "auto":
            return self.adjoint_solver
        rate = self.contraction()
        return "fixed-point" if rate is not None and rate <= 0.5 else "gmres"

    def predictor_gain(self) -> float:
        """The explicit predictor is ``x + g·h F(t, x)`` with ``g = 1/(1 − θh·c)``.

        ``c`` is the field's declared spectral centre (``field.center``), else 0 and the
        predictor is forward Euler. With ``F(y) ≈ F(x) + c (y − x)`` the θ-step has exactly this
        solution, so a stiff field (c ≪ 0) starts near its fixed point instead of overshooting
        by ``h|c|`` as forward Euler does; it costs no extra evaluation.
        """
        if self.contraction() is None:
            return 1.0
        return 1.0 / (1.0 - self.theta * self.h * float(self.field.center))

    def damping(self) -> float:
        """Richardson/Anderson damping ``β`` from the field's declared spectrum, else 1.

        A field may declare that the eigenvalues of ``∂F/∂y`` lie in the disc with centre
        ``field.center`` and radius ``field.radius`` (or the tighter ``field.disc_radius``, as
        :class:`~irn.SpectralNormalized` declares). Then those of the residual's Jacobian
        ``I − θh ∂F/∂y`` lie in the disc with centre ``c = 1 − θh·center`` and radius
        ``ρ = θh·radius``, and ``β = 1/c`` centres the damped iteration's spectrum at 0: it
        contracts by ``ρ/c`` per step whenever ``ρ < c``.
        """
        return self.predictor_gain()  # the same number: 1/c centres the spectrum at 0

    def forward(self, x: torch.Tensor, t: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Return ``y`` solving the step from state ``x`` at time ``t``; see :attr:`stats`."""
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError("x must be a tensor shaped (batch, *state)")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains non-finite values (nan or inf)")
        # The first evaluation may advance spectral-norm power iterations (train mode);
        # every later one is frozen, so the solve sees one fixed field.
        # Φ needs F(t, x) with its graph only for the linear scheme with θ < 1 (and θ = 0);
        # otherwise it only feeds the predictor, and a graph would be memory held for nothing.
        in_phi = self.scheme == "linear" and self.theta < 1.0
        keep_graph = in_phi or self.theta == 0.0 or self.backward == "unrolled"
        with torch.set_grad_enabled(torch.is_grad_enabled() and keep_graph):
            fx = self._eval(t, x)
        if self.theta == 0.0:
            empty = x.new_zeros(x.shape[0])
            self.stats = ThetaStats(SolverStats("explicit", 0, 1, empty, self.tol))
            return x + self.h * fx
        with frozen(self.field):
            return self._implicit(x, t, fx)

    def _implicit(self, x: torch.Tensor, t, fx: torch.Tensor) -> torch.Tensor:
        shape, bsz = x.shape, x.shape[0]
        unrolled = self.backward == "unrolled" and torch.is_grad_enabled()
        xs = x if unrolled else x.detach()
        fxs = fx if unrolled else fx.detach()

        # r(y) = y − x − Φ(x, y), with everything that does not depend on y computed once.
        parts = self._parts(t, xs, fxs)
        base = xs if parts[0] is None else xs + parts[0]

        def residual(yf: torch.Tensor) -> torch.Tensor:
            y = yf.view(shape)
            return (y - base - self._implicit_term(parts, y)).view(bsz, -1)

        y0 = (xs + self.predictor_gain() * self.h * fxs).reshape(bsz, -1)
        options = dict(tol=self.tol, max_iter=self.max_iter, **self.solver_options)
        method = self.method()
        if method in ("fixed-point", "anderson") and "damping" not in options:
            options["damping"] = self.damping()
        options["scale"] = torch.linalg.vector_norm(xs.detach().reshape(bsz, -1), dim=1)
        # Parametrized weights (spectral norm) are computed once for the whole solve.
        cache = parametrize.cached() if not unrolled else contextlib.nullcontext()
        with cache, torch.set_grad_enabled(unrolled):
            y, fstats = solve(method, residual, y0, **options)
        stats = ThetaStats(fstats)
        self.stats = stats
        enforce(fstats, self.on_failure, "ThetaLayer forward solve")
        y = y.view(shape)
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.field.parameters())
        )
        if unrolled or not needs_grad:
            return y

        def report(bstats: SolverStats) -> None:
            stats.backward = bstats

        config = AdjointConfig(
            self.adjoint_method(),
            self.adjoint_tol,
            self.adjoint_max_iter,
            self.on_failure,
            report,
            dict(self.adjoint_options),
        )
        if config.solver == "fixed-point" and "omega" not in config.options:
            config.options["omega"] = self.damping()
        y_leaf = y.detach().requires_grad_(True)
        phi = self.phi(t, x, y_leaf, fx)  # the one graph of Φ the backward pass needs
        return ImplicitStep.apply(x, phi, y_leaf, config)

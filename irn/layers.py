"""The implicit θ-layer: one step of a θ-method whose output is a fixed point.

Both schemes write the step as ``y = x + Φ(x, y)`` (paper-notes §1.1; written once, in
:mod:`irn.scheme`):

* ``scheme="linear"``:  ``y = x + h[(1−θ) F(t, x) + θ F(t+h, y)]``
* ``scheme="one-leg"``: ``y = x + h F(t+θh, (1−θ)x + θy)``

``θ = 0`` is forward Euler (a ResNet block, no solve), ``θ = 1`` backward Euler, ``θ = ½`` the
trapezoidal rule (linear) or the implicit midpoint rule (one-leg). The layer checks its options
and picks the solvers; :mod:`irn._step` builds the residual ``r(y) = y − x − Φ(x, y)``, hands it
to :mod:`irn.solvers`, and re-attaches the solution to one graph of Φ for :mod:`irn.adjoint`,
the only module that writes the backward pass.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from ._layer_checks import (
    ADJOINT_ADVICE,
    FORWARD_ADVICE,
    TRACING,
    TRANSFORMS,
    finite_positive,
    positive_int,
    transformed,
)
from ._step import ThetaStats, emit, record_stats, solve_step
from .inexact import Phantom
from .plan import (
    AUTO_FORWARD,
    BACKWARDS,
    Adjoint,
    AdjointPlan,
    StepPlan,
    auto_solvers,
    check_auto_options,
    resolve_backward,
    with_declared_damping,
)
from .precision import compute_dtype, evaluate_in, state_dtype
from .scheme import SCHEMES, ThetaScheme, declared_disc
from .solvers import (
    NONLINEAR_CONFIGS,
    POLICIES,
    SolverConfig,
    SolverStats,
    default_tol,
    make_config,
)
from .spectral import frozen

__all__ = ["BACKWARDS", "SCHEMES", "Adjoint", "ThetaLayer", "ThetaStats", "record_stats"]


class ThetaLayer(nn.Module):
    """Implicit residual layer ``y = x + Φ(x, y)`` solved by a batched nonlinear solver.

    Every option is checked here, when the layer is built: a bad value raises ``ValueError``
    naming what is accepted, never a ``TypeError`` at the first forward.

    Args:
        field: ``nn.Module`` called as ``field(t, y)``, returning a tensor shaped like ``y``;
            ``y`` is ``(batch, *state)`` and samples must not interact.
        theta: θ in [0, 1]; 0 is the explicit ResNet step (no solve).
        h: Step size, finite and > 0.
        scheme: ``"linear"`` (θ-combination of F) or ``"one-leg"`` (F at a θ-combination).
        solver: ``"auto"`` (default: see :meth:`method`), ``"anderson"``, ``"fixed-point"``
            (Picard), ``"newton"`` (Newton–Krylov: JVPs + GMRES) or ``"lbfgs"`` (minimizes
            ``½‖r‖²``, the paper's reference method), or a configuration such as
            ``irn.solvers.Anderson(memory=8)``. All start from the explicit predictor
            ``x + h F(t, x)`` (divided by ``1 − θh·c`` when the field declares its spectral
            centre ``c``, see :meth:`predictor_gain`).
        tol: Relative per-sample residual: sample ``i`` is solved when
            ``‖y_i − x_i − Φ(x_i, y_i)‖ ≤ tol · max(‖y_i‖, ‖x_i‖)`` (norms over the state),
            the same test for every solver. Default (None): 1e-6, raised to what the dtype can
            reach (:func:`irn.precision.default_tol`: half precision and autocast solve to the
            compute dtype's unit roundoff; a half-precision state is solved in float32).
        max_iter: Nonlinear iterations allowed.
        backward: ``"adjoint"`` (implicit-function theorem, memory independent of the number
            of iterations; first-order gradients only; :class:`~irn.Adjoint` sets its solver),
            ``"jfb"``/``"phantom"`` (inexact, cheaper gradients: :mod:`irn.inexact`,
            :class:`~irn.Phantom`) or ``"unrolled"`` (autograd through
            the iterations; supports double backward).
        on_failure: ``"warn"`` (a :class:`~irn.ConvergenceWarning`, once per layer and kind of
            solve), ``"raise"`` (:class:`~irn.ConvergenceError`) or ``"ignore"``; applies to the
            forward and the adjoint solve, and ``stats.converged`` records the outcome always.
        solver_options: Options of a solver given by name (``damping``, ``memory``, ...).
        adjoint_solver: ``"auto"`` (default, see :meth:`adjoint_method`), ``"gmres"`` or
            ``"fixed-point"`` (the Neumann series, option ``omega``) for ``(I − ∂Φ/∂y)ᵀv = g``,
            or a configuration (``irn.solvers.GMRES(restart=30)``).
        adjoint_tol: Relative tolerance of the adjoint solve (default: the forward's).
        adjoint_max_iter: Products allowed in the adjoint solve (default: ``max_iter``).
        adjoint_options: Options of an adjoint solver given by name (e.g. ``restart``).

    Attributes:
        stats: The :class:`ThetaStats` of the calling thread's last call (thread-local: a
            thread never sees another's). ``forward(..., return_stats=True)`` returns them
            with the output instead, without shared state.
    """

    def __init__(
        self,
        field: nn.Module,
        *,
        theta: float = 1.0,
        h: float = 1.0,
        scheme: str = "linear",
        solver: str | SolverConfig = "auto",
        tol: float | None = None,
        max_iter: int = 50,
        backward: str | Adjoint | Phantom = "adjoint",
        on_failure: str = "warn",
        solver_options: dict | None = None,
        adjoint_solver: str | SolverConfig = "auto",
        adjoint_tol: float | None = None,
        adjoint_max_iter: int | None = None,
        adjoint_options: dict | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(field, nn.Module) or not callable(field):
            raise ValueError(f"field must be an nn.Module called as field(t, y), got {field!r}")
        self._scheme = ThetaScheme(theta, h, scheme)  # validates theta, h and scheme
        # Validated configurations. "auto" picks a solver per call from the field's spectrum:
        # each option must suit one of its candidates, and goes to the candidates it suits
        # (memory to Anderson, restart to GMRES, damping to both).
        self._solver_options = dict(solver_options or {})
        self._solver = None
        if solver == "auto":
            check_auto_options(self._solver_options, AUTO_FORWARD, NONLINEAR_CONFIGS, "solver")
        else:
            self._solver = make_config(solver, self._solver_options, NONLINEAR_CONFIGS)
        shorthand = {
            "adjoint_solver": adjoint_solver,
            "adjoint_tol": adjoint_tol,
            "adjoint_max_iter": adjoint_max_iter,
            "adjoint_options": adjoint_options,
        }
        backward, self._adjoint_spec, self._inexact = resolve_backward(backward, shorthand)
        if on_failure not in POLICIES:
            raise ValueError(f"unknown on_failure {on_failure!r}; choose one of {list(POLICIES)}")
        self.field = field
        self.solver = solver if isinstance(solver, str) else solver.name
        self.backward, self.on_failure = backward, on_failure
        self.tol = finite_positive("tol", tol, allow_none=True)
        self.max_iter = positive_int("max_iter", max_iter)
        self._local = threading.local()
        self._warned: set = set()

    # The adjoint's options, as the shorthand keywords name them (read-only).
    adjoint_solver = property(lambda self: self._adjoint_spec.name)
    adjoint_tol = property(lambda self: self._adjoint_spec.tol)
    adjoint_max_iter = property(lambda self: self._adjoint_spec.max_iter)

    # θ, h and the scheme are read-only: a network passes other values per call instead.
    @property
    def theta(self) -> float:
        return self._scheme.theta

    @property
    def h(self) -> float:
        return self._scheme.h

    @property
    def scheme(self) -> str:
        return self._scheme.kind

    def step(self, theta: float | None = None, h: float | None = None) -> ThetaScheme:
        """The :class:`~irn.scheme.ThetaScheme` of a call (the layer's own θ and h by default)."""
        if theta is None and h is None:
            return self._scheme
        return ThetaScheme(
            self.theta if theta is None else theta, self.h if h is None else h, self.scheme
        )

    @property
    def stats(self) -> ThetaStats | None:
        """The calling thread's last :class:`ThetaStats` (``None`` before its first call)."""
        return getattr(self._local, "stats", None)

    @stats.setter
    def stats(self, value: ThetaStats | None) -> None:
        self._local.stats = value

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_local", None)  # thread-local storage cannot be copied or pickled
        state["_warned"] = set()  # a copy warns for itself (deepcopy and pickle come here)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def extra_repr(self) -> str:
        tol = "auto" if self.tol is None else f"{self.tol:g}"
        return (
            f"theta={self.theta}, h={self.h}, scheme={self.scheme!r}, solver={self.solver!r}, "
            f"tol={tol}, backward={self.backward!r}"
        )

    def _eval(self, t, y: torch.Tensor) -> torch.Tensor:
        out = self.field(t, y)
        if not isinstance(out, torch.Tensor):
            raise ValueError(
                f"the field returned a {type(out).__name__}, not a tensor: field(t, y) must "
                f"return one tensor shaped like y {tuple(y.shape)}"
            )
        if out.shape != y.shape:
            raise ValueError(
                f"field output shape {tuple(out.shape)} differs from its input shape "
                f"{tuple(y.shape)}"
            )
        return out

    def phi(self, t, x: torch.Tensor, y: torch.Tensor, fx: torch.Tensor | None = None):
        """``Φ(x, y)``: the increment of the step (``fx = F(t, x)`` may be passed in)."""
        return self._scheme.phi(self._eval, t, x, y, fx)

    # ------------------------------------------------------------ solver choice and hints
    def contraction(self, step: ThetaScheme | None = None) -> float | None:
        """Bound ``ρ/c`` on the damped fixed-point iteration's contraction per step, from the
        field's declared spectrum (``None`` if the field declares none or it is not < 1)."""
        return (step or self._scheme).contraction(*declared_disc(self.field))

    def predictor_gain(self, step: ThetaScheme | None = None) -> float:
        """The explicit predictor is ``x + g·h F(t, x)`` with ``g = 1/(1 − θh·c)``, ``c`` the
        field's declared spectral centre (else ``g = 1``, forward Euler); see
        :meth:`irn.scheme.ThetaScheme.predictor_gain`."""
        return (step or self._scheme).predictor_gain(*declared_disc(self.field))

    def damping(self, step: ThetaScheme | None = None) -> float:
        """Richardson/Anderson damping ``β = 1/c`` from the field's declared spectrum, else 1.

        A field may declare (:class:`irn.scheme.DeclaresSpectrum`) that the eigenvalues of
        ``∂F/∂y`` lie in the disc with centre ``field.center`` and radius ``field.radius`` (or
        the tighter ``field.disc_radius``, as :class:`~irn.SpectralNormalized` does). Then those
        of ``I − θh ∂F/∂y`` lie in the disc with centre ``c = 1 − θh·center`` and radius
        ``ρ = θh·radius``, and ``β = 1/c`` centres the damped iteration's spectrum at 0: it
        contracts by ``ρ/c`` per step when ``ρ < c``.
        """
        return self.predictor_gain(step)  # the same number: 1/c centres the spectrum at 0

    def _configs(self, step: ThetaScheme) -> tuple[SolverConfig, SolverConfig]:
        disc = declared_disc(self.field)
        spec = self._adjoint_spec
        fwd, adj = self._solver, spec.config()
        if fwd is None or adj is None:  # "auto" (irn.plan.auto_solvers)
            auto_fwd, auto_adj = auto_solvers(step, disc, self._solver_options, spec.options)
            fwd, adj = fwd or auto_fwd, adj or auto_adj
        return with_declared_damping(fwd, step, disc), with_declared_damping(adj, step, disc)

    def solver_config(self, step: ThetaScheme | None = None) -> SolverConfig:
        """The forward solver of a call: ``solver`` itself, or for ``"auto"`` damped
        fixed-point iteration when the field's declared spectrum makes it contract by at least
        ½ per step (see :meth:`damping`), and Anderson acceleration otherwise. An unset
        damping is filled in from a declared contracting spectrum; without one, Anderson
        estimates it per sample from its first secant pair, and ``"auto"`` makes it lazy
        (``lazy=0.5``): damped steps while they contract by ½, mixing once they do not, the
        same rule a declared spectrum decides by (see :func:`irn.plan.auto_solvers`)."""
        return self._configs(step or self._scheme)[0]

    def adjoint_config(self, step: ThetaScheme | None = None) -> SolverConfig:
        """The adjoint solver: ``adjoint_solver``, or for ``"auto"`` the damped Neumann series
        when the declared spectrum guarantees a contraction of ½ or better (the adjoint matrix
        has the same spectrum as the forward residual's Jacobian), and GMRES otherwise.

        With ``"auto"`` and a forward Anderson solve that estimated its damping (no declared
        spectrum), a call first runs the Neumann series with that per-sample damping and hands
        over to this GMRES when it stops contracting (:func:`irn.solvers.neumann_gmres`);
        ``stats.backward.solver`` says which ran."""
        return self._configs(step or self._scheme)[1]

    def plan(
        self,
        step: ThetaScheme,
        tol: float,
        name: str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> StepPlan:
        """The frozen :class:`~irn.plan.StepPlan` of one implicit call on an input of
        ``dtype``: everything ``irn._step.solve_step`` needs, so it never reads the layer.
        A half-precision input is solved in float32 with the field evaluated in its own dtype
        (:mod:`irn.precision`)."""
        forward, adjoint = self._configs(step)
        spec = self._adjoint_spec
        backward = self._inexact or self.backward
        if self.backward == "adjoint":
            max_iter = spec.max_iter or self.max_iter
            backward = AdjointPlan(
                adjoint,
                tol if spec.tol is None else spec.tol,
                max_iter,
                handover=spec.name == "auto",
                advice=ADJOINT_ADVICE.format(max_iter=max_iter),
            )
        return StepPlan(
            scheme=step,
            forward=forward,
            start_at_x=forward.starts_at_x,
            predictor_gain=self.predictor_gain(step),
            tol=tol,
            max_iter=self.max_iter,
            backward=backward,
            on_failure=self.on_failure,
            name=name,
            advice=FORWARD_ADVICE.format(max_iter=self.max_iter),
            field=self.field,
            evaluate=self._eval if state_dtype(dtype) == dtype else evaluate_in(self._eval, dtype),
            publish=self._publish,
            warned=self._warned,
        )

    def _publish(self, stats: ThetaStats) -> None:
        self.stats = stats

    def method(self) -> str:
        """Name of the forward solver a call with the layer's θ and h uses."""
        return self.solver_config().name

    def adjoint_method(self) -> str:
        """Name of the adjoint solver a call with the layer's θ and h uses."""
        return self.adjoint_config().name

    # ------------------------------------------------------------------------------ forward
    def forward(
        self,
        x: torch.Tensor,
        t: float | torch.Tensor = 0.0,
        *,
        theta: float | None = None,
        h: float | None = None,
        return_stats: bool = False,
        name: str | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ThetaStats]:
        """Return ``y`` solving the step from state ``x`` at time ``t``.

        Args:
            x: ``(batch, *state)``; an empty batch gives an empty output.
            t: Time at the start of the step.
            theta, h: Use these instead of the layer's θ and h for this call only.
            return_stats: Also return this call's :class:`ThetaStats` (its ``backward`` is
                filled in by a later backward pass); :attr:`stats` is set either way.
            name: How messages name this step (e.g. ``"step 3 of 5"``).
        """
        if torch.jit.is_tracing() and (self.theta if theta is None else theta) != 0.0:
            raise RuntimeError(TRACING)  # before any host read, which a trace would freeze too
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError("x must be a tensor shaped (batch, *state)")
        compiling = torch.compiler.is_compiling()  # then: no host reads (see irn.compiled)
        if not compiling and self.backward != "unrolled" and transformed(x):
            raise ValueError(TRANSFORMS)
        if not compiling and not bool(torch.isfinite(x).all()):
            raise ValueError("x contains non-finite values (nan or inf)")
        step = self.step(theta, h)
        tol = default_tol(x.dtype, compute=compute_dtype(x)) if self.tol is None else self.tol
        plan = None if step.explicit else self.plan(step, tol, name, x.dtype)
        if x.shape[0] == 0:  # nothing to solve; keep the graph to x (and its dtype, device)
            stats = ThetaStats(
                SolverStats("explicit" if step.explicit else "none", 0, 0, x.new_zeros(0), tol)
            )
            self.stats = stats
            y = x.clone()
            if torch.is_grad_enabled():  # a graph to the parameters too (zero gradients), as
                with frozen(self.field):  # nn.Linear has for an empty batch
                    y = y + 0.0 * self.field(t, x)
            emit(stats)
            return (y, stats) if return_stats else y
        # The first evaluation may advance spectral-norm power iterations (train mode);
        # every later one is frozen, so the solve sees one fixed field.
        # Φ needs F(t, x) with its graph only for the linear scheme with θ < 1 (and θ = 0);
        # otherwise it only feeds the predictor, and a graph would be memory held for nothing.
        # Fixed-point and Anderson iterations need no F(t, x) then: started from x, their first
        # step is the predictor, and its evaluation enters their history (one F call saved).
        # (Unrolled differentiation keeps the predictor: with no iteration left to run, its
        # derivative is still the exact one of a step the predictor solves.)
        unrolled = self.backward == "unrolled" and torch.is_grad_enabled()
        if step.explicit or step.uses_fx or unrolled or not plan.start_at_x:
            keep_graph = step.uses_fx or step.explicit or self.backward == "unrolled"
            with torch.set_grad_enabled(torch.is_grad_enabled() and keep_graph):
                fx = self._eval(t, x)
        else:
            fx = None
        if step.explicit:
            stats = ThetaStats(SolverStats("explicit", 0, 1, x.new_zeros(x.shape[0]), tol))
            self.stats = stats
            y = x + step.h * fx
        else:
            work = state_dtype(x.dtype)  # half-precision states are solved in float32
            fx = None if fx is None else fx.to(work)
            y, stats = solve_step(plan, x.to(work), t, fx)
            y = y.to(x.dtype)
        emit(stats)
        return (y, stats) if return_stats else y

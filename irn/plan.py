"""What one call of a θ-layer will do, decided once: the plan.

A :class:`~irn.ThetaLayer` turns its options and the call's θ, h and input into a frozen
:class:`StepPlan` (the scheme, the forward solver and where it starts, the stopping rule, the
backward pass, the failure policy and where statistics go); ``irn._step.solve_step`` runs the
plan and never reads the layer. The "auto" solver rule is :func:`irn.plan.auto_solvers`, the
only place it is written.

The backward pass is :class:`Adjoint` (the exact implicit-function-theorem gradient, the default),
``"unrolled"`` (autograd through the solver's iterations), or one of the inexact opt-ins of
:mod:`irn.inexact` (:class:`~irn.inexact.JFB`, :class:`~irn.inexact.Phantom`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ._layer_checks import finite_positive, positive_int
from .inexact import JFB, Phantom
from .scheme import ThetaScheme
from .solvers import LINEAR_CONFIGS, NONLINEAR_CONFIGS, SolverConfig, make_config

__all__ = [
    "BACKWARDS",
    "Adjoint",
    "AdjointPlan",
    "StepPlan",
    "auto_solvers",
    "check_auto_options",
    "resolve_backward",
]

BACKWARDS = ("adjoint", "unrolled", "jfb", "phantom")


def suited(options: Mapping[str, Any], cls: type[SolverConfig]) -> dict[str, Any]:
    """The options a configuration class accepts."""
    return {k: v for k, v in options.items() if k in cls.accepted()}


def check_auto_options(options: Mapping[str, Any], candidates, registry, what: str) -> None:
    """Options for "auto": each accepted by one of its candidates, each candidate valid."""
    accepted = {k for name in candidates for k in registry[name].accepted()}
    unknown = sorted(set(options) - accepted)
    opt_name = "adjoint_options" if what.startswith("adjoint") else "solver_options"
    if unknown:
        try:  # a reserved option (tol, max_iter, ...) gets make_config's "pass it to the layer"
            make_config(candidates[0], {k: options[k] for k in unknown}, registry, what)
        except ValueError as err:
            if "may not contain" in str(err):
                raise
        raise ValueError(
            f"{what}='auto' chooses among {list(candidates)}, which accept the options "
            f"{sorted(accepted)}; got unknown {unknown} in {opt_name}"
        )
    for name in candidates:
        make_config(name, suited(options, registry[name]), registry, what)


AUTO_FORWARD = ("fixed-point", "anderson")  # what solver="auto" chooses between
AUTO_ADJOINT = ("gmres", "fixed-point")  # what adjoint_solver="auto" chooses between
FAST = 0.5  # a declared contraction this good or better makes plain damped iteration the pick


def auto_solvers(
    step: ThetaScheme,
    disc: tuple[float | None, float | None],
    solver_options: Mapping[str, Any],
    adjoint_options: Mapping[str, Any],
) -> tuple[SolverConfig, SolverConfig]:
    """The "auto" rule: ``(forward, adjoint)`` configurations for one step.

    * A declared disc (``disc = (center, radius)`` of ``∂F/∂y``) that makes the damped
      iteration contract by ``ρ/c <= ½`` per step picks damped fixed-point iteration forward
      and the damped Neumann series backward (the adjoint matrix has the forward Jacobian's
      spectrum), both with ``β = ω = 1/c``.
    * Otherwise Anderson forward and GMRES backward. With no declared disc Anderson estimates
      its damping per sample and mixes lazily (its ``auto_without_spectrum`` defaults), and the
      backward first runs the Neumann series with that estimate, handing over to GMRES when it
      stops contracting (see :class:`AdjointPlan`'s ``handover``).

    An option is passed to each candidate that accepts it; unset spectral options are filled
    in from a contracting declared disc.
    """
    rate = step.contraction(*disc)
    fast = rate is not None and rate <= FAST
    forward = NONLINEAR_CONFIGS["fixed-point" if fast else "anderson"]
    adjoint = LINEAR_CONFIGS["fixed-point" if fast else "gmres"]
    fwd = forward(**suited(solver_options, forward))
    if rate is None:
        extra = {k: v for k, v in fwd.auto_without_spectrum.items() if getattr(fwd, k) is None}
        fwd = dataclasses.replace(fwd, **extra)
    return with_declared_damping(fwd, step, disc), with_declared_damping(
        adjoint(**suited(adjoint_options, adjoint)), step, disc
    )


def with_declared_damping(config: SolverConfig, step: ThetaScheme, disc) -> SolverConfig:
    """``config`` with its unset spectral option set to ``1/c`` from a contracting declared
    disc; without one the solver picks (Picard and the Neumann series take 1, Anderson
    estimates it per sample from its first secant pair)."""
    if step.contraction(*disc) is None:
        return config
    return config.with_damping(step.predictor_gain(*disc))


@dataclass(frozen=True)
class Adjoint:
    """The exact backward pass: solve ``(I − ∂Φ/∂y)ᵀ v = ∇_y L`` at the solution.

    ``ThetaLayer(field, backward=irn.Adjoint(solver="gmres", tol=1e-8, max_iter=100))``; the
    layer keywords ``adjoint_solver``, ``adjoint_tol``, ``adjoint_max_iter`` and
    ``adjoint_options`` are shorthand for the same.

    Args:
        solver: ``"auto"`` (see :func:`irn.plan.auto_solvers`), a registered linear solver name
            (``"gmres"``, ``"fixed-point"``: the Neumann series) or a configuration
            (``irn.solvers.GMRES(restart=30)``).
        tol: Relative tolerance (default: the forward solve's).
        max_iter: Products allowed (default: the layer's ``max_iter``).
        options: Options of a solver given by name (e.g. ``{"restart": 30}``).
    """

    solver: str | SolverConfig = "auto"
    tol: float | None = None
    max_iter: int | None = None
    options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tol", finite_positive("adjoint_tol", self.tol, True))
        object.__setattr__(self, "max_iter", positive_int("adjoint_max_iter", self.max_iter, True))
        object.__setattr__(self, "options", dict(self.options or {}))
        if self.solver == "auto":
            check_auto_options(self.options, AUTO_ADJOINT, LINEAR_CONFIGS, "adjoint_solver")
        else:
            make_config(self.solver, self.options, LINEAR_CONFIGS, "adjoint_solver")

    @property
    def name(self) -> str:
        """The solver's name (``"auto"`` or a registered one)."""
        return self.solver if isinstance(self.solver, str) else self.solver.name

    def config(self) -> SolverConfig | None:
        """The chosen configuration, or ``None`` for ``"auto"``."""
        if self.solver == "auto":
            return None
        return make_config(self.solver, self.options, LINEAR_CONFIGS, "adjoint_solver")


def resolve_backward(
    backward: str | Adjoint | Phantom, shorthand: Mapping[str, Any]
) -> tuple[str, Adjoint, Phantom | None]:
    """The layer's ``backward`` argument as ``(name, adjoint, inexact)``.

    ``shorthand`` holds the layer's ``adjoint_solver``, ``adjoint_tol``, ``adjoint_max_iter``
    and ``adjoint_options`` keywords; they build the :class:`Adjoint` unless ``backward`` is one
    already (then giving both is an error). ``inexact`` is the :class:`~irn.inexact.Phantom`
    of ``"jfb"``/``"phantom"`` (or one given), else ``None``.
    """
    if isinstance(backward, Adjoint):
        given = [k for k, v in shorthand.items() if v not in (None, "auto", {})]
        if given:
            raise ValueError(
                f"backward=Adjoint(...) already says how to solve the adjoint; pass {given} "
                f"inside it (Adjoint(solver=, tol=, max_iter=, options=)), not to the layer"
            )
        return "adjoint", backward, None
    adjoint = Adjoint(*shorthand.values())  # validated even when unused: a typo fails here
    if isinstance(backward, Phantom):
        return backward.name, adjoint, backward
    if isinstance(backward, str) and backward in BACKWARDS:
        inexact = {"jfb": JFB(), "phantom": Phantom()}.get(backward)
        return backward, adjoint, inexact
    raise ValueError(
        f"unknown backward {backward!r}; choose one of {list(BACKWARDS)}, "
        f"irn.Adjoint(solver=..., tol=..., max_iter=...) or irn.Phantom(steps=..., damping=...)"
    )


@dataclass(frozen=True)
class AdjointPlan:
    """How one call's adjoint solve runs.

    Attributes:
        solver: The linear solver (:class:`~irn.solvers.GMRES` or :class:`~irn.solvers.Neumann`).
        tol: Relative residual tolerance ``‖(I − ∂Φ/∂y)ᵀ v − g‖ <= tol ‖g‖`` per sample.
        max_iter: Products allowed.
        handover: ``"auto"`` without a declared disc: when the forward Anderson solve estimated
            a per-sample damping ω, run the Neumann series with it and hand over to GMRES (with
            ``solver``'s restart) if it stops contracting (:func:`irn.solvers.neumann_gmres`).
        advice: What to try, appended to a failure message.
    """

    solver: SolverConfig
    tol: float
    max_iter: int
    handover: bool
    advice: str = ""


@dataclass(frozen=True)
class StepPlan:
    """Everything ``irn._step.solve_step`` needs for one call, decided by the layer.

    Attributes:
        scheme: The call's :class:`~irn.scheme.ThetaScheme` (θ, h, linear or one-leg).
        forward: The nonlinear solver's configuration.
        start_at_x: Whether the solver starts at ``x`` (its first step is the predictor) rather
            than at the predictor ``x + g·h F(t, x)``.
        predictor_gain: ``g`` (1: forward Euler; ``1/c`` from a declared disc).
        tol: The forward solve's relative residual tolerance.
        max_iter: The forward solve's iteration budget.
        backward: An :class:`AdjointPlan`, ``"unrolled"``, or an inexact backward of
            :mod:`irn.inexact`.
        on_failure: ``"warn"``, ``"raise"`` or ``"ignore"``.
        name: How messages name the call (``"step 3 of 5"``), or ``None``.
        advice: What to try after a failed forward solve.
        field: The field (its parameters decide whether a gradient is needed; its spectral
            normalization is frozen during the solve).
        evaluate: ``F(t, y)`` with the layer's output checks.
        publish: Called with the call's :class:`~irn.ThetaStats` after the forward solve and
            again after the adjoint solve (the layer stores them as its ``stats``).
        warned: The layer's warn-once set.
    """

    scheme: ThetaScheme
    forward: SolverConfig
    start_at_x: bool
    predictor_gain: float
    tol: float
    max_iter: int
    backward: Any
    on_failure: str
    name: str | None
    advice: str
    field: nn.Module
    evaluate: Callable
    publish: Callable[[Any], None]
    warned: set = field(default_factory=set, repr=False)

    def where(self, what: str) -> str:
        """How a message names a solve: ``"ThetaLayer step 3 of 5: forward solve"``."""
        return f"ThetaLayer {self.name}: {what}" if self.name else f"ThetaLayer {what}"

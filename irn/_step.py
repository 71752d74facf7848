"""One implicit θ-step: the residual, the solve, and the graph the adjoint differentiates.

:class:`~irn.layers.ThetaLayer` validates its options and decides a call's
:class:`~irn.plan.StepPlan`; this module runs the plan (and never reads the layer): it builds
``r(y) = y − x − Φ(x, y)`` with everything independent of ``y`` computed once, hands it to
:mod:`irn.solvers`, applies the failure policy, and re-attaches the solution to one graph of Φ
for :mod:`irn.adjoint`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import dataclass

import torch
from torch.nn.utils import parametrize

from ._layer_checks import COMPILED_ADJOINT, SINGULAR_ADVICE
from .adjoint import AdjointConfig, ImplicitStep
from .inexact import Phantom
from .plan import AdjointPlan, StepPlan
from .solvers import SolverStats, enforce
from .spectral import frozen

__all__ = ["ThetaStats", "emit", "record_stats", "solve_step"]


@dataclass
class ThetaStats:
    """Statistics of one forward (and backward) pass of a :class:`ThetaLayer`.

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


_recording = threading.local()


@contextlib.contextmanager
def record_stats():
    """Collect, into the yielded list, the :class:`ThetaStats` of every :class:`ThetaLayer`
    call this thread makes inside the block, however deep the layers sit in a model (e.g.
    ``nn.Sequential(ImplicitResNet(...))``): how :func:`irn.train.fit` logs solver statistics
    of any model. Read the list after ``backward`` to see the adjoint solves too."""
    stack = getattr(_recording, "stack", None)
    if stack is None:
        stack = _recording.stack = []
    sink: list[ThetaStats] = []
    stack.append(sink)
    try:
        yield sink
    finally:
        del stack[next(i for i, s in enumerate(stack) if s is sink)]  # by identity


def emit(stats: ThetaStats) -> None:
    for sink in getattr(_recording, "stack", ()):
        sink.append(stats)


def solve_step(plan: StepPlan, x: torch.Tensor, t, fx: torch.Tensor | None):
    """Solve one implicit step from ``x`` as ``plan`` says and attach its backward pass.

    Returns ``(y, stats)``; ``y`` carries the implicit-function-theorem gradient of
    :class:`~irn.adjoint.ImplicitStep` when a gradient is needed (an :class:`AdjointPlan`), or
    the solver's own graph (``"unrolled"``). ``fx = F(t, x)`` is ``None`` when the solver starts
    at x (fixed-point and Anderson iterations whose Φ has no F(t, x) part).
    """
    shape, bsz = x.shape, x.shape[0]
    step = plan.scheme
    unrolled = plan.backward == "unrolled" and torch.is_grad_enabled()
    xs = x if unrolled else x.detach()
    fxs = None if fx is None else (fx if unrolled else fx.detach())
    at_x = fxs is None  # started at x: the solver's first step is the predictor
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in plan.field.parameters())
    )

    # r(y) = y − x − Φ(x, y), with everything that does not depend on y computed once.
    parts = step.parts(t, xs, fxs if step.uses_fx else None)
    base = xs if parts[0] is None else xs + parts[0]

    def residual(yf: torch.Tensor) -> torch.Tensor:
        y = yf.view(shape)
        return (y - base - step.implicit_term(plan.evaluate, parts, y)).view(bsz, -1)

    scale = torch.linalg.vector_norm(xs.detach().reshape(bsz, -1), dim=1)
    # Parametrized weights (spectral norm) are computed once for the whole solve.
    cache = parametrize.cached() if not unrolled else contextlib.nullcontext()
    with cache, torch.set_grad_enabled(unrolled):
        solve = residual
        if at_x:  # x's residual is the first, unfrozen, evaluation (as F(t, x) would be)
            y0 = xs.reshape(bsz, -1)
            r0 = [residual(y0)]

            def solve(yf: torch.Tensor) -> torch.Tensor:
                if r0 and yf is y0:  # the solver's first call: already computed
                    return r0.pop()
                return residual(yf)

        else:
            y0 = (xs + plan.predictor_gain * step.h * fxs).reshape(bsz, -1)
        # Started at x, the solver gets one step more (the predictor), and its stats count
        # iterations after the predictor, as for the other solvers (evaluations count every
        # call of F, the predictor's included).
        with frozen(plan.field):
            y, fstats = plan.forward.solve(
                solve, y0, tol=plan.tol, max_iter=plan.max_iter + at_x, scale=scale
            )
        if at_x:
            fstats = dataclasses.replace(fstats, iterations=max(0, fstats.iterations - 1))
    stats = ThetaStats(fstats)
    plan.publish(stats)
    if not torch.compiler.is_compiling():  # a compiled graph cannot warn or raise
        advice = SINGULAR_ADVICE if fstats.residual == float("inf") else plan.advice
        enforce(
            fstats,
            plan.on_failure,
            plan.where("forward solve"),
            advice=advice,
            warned=plan.warned,
            key="forward",
        )
    if unrolled or not needs_grad:
        return y.view(shape), stats
    if isinstance(plan.backward, Phantom):  # an inexact gradient (irn.inexact)
        with frozen(plan.field):
            out = plan.backward.attach(
                lambda z: step.phi(plan.evaluate, t, x, z, fx), x, y.view(shape)
            )
        return out, stats
    backward: AdjointPlan = plan.backward
    if torch.compiler.is_compiling():
        raise RuntimeError(COMPILED_ADJOINT)

    def report(bstats: SolverStats) -> None:
        stats.backward = bstats
        plan.publish(stats)

    adjoint = AdjointConfig(
        backward.solver,
        backward.tol,
        backward.max_iter,
        plan.on_failure,
        report,
        plan.where("adjoint solve"),
        backward.advice,
        plan.warned,
        fstats.damping if backward.handover else None,
    )
    y_leaf = y.view(shape).detach().requires_grad_(True)
    with frozen(plan.field):
        phi = step.phi(plan.evaluate, t, x, y_leaf, fx)  # the one graph of Φ backward needs
    return ImplicitStep.apply(x, phi, y_leaf, adjoint), stats

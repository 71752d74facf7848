"""Self-validating solver configurations.

A configuration is a frozen dataclass naming one solver and its options; it checks every value
when it is built, so a typo or a wrong type fails where the layer is constructed, with a message
that lists what the solver accepts. The stopping rule (``tol``, ``max_iter``) belongs to the
caller (the layer), not to the configuration.

One option of a solver may be *spectral*: a damping that a layer fills in from the field's
declared spectrum when the user left it unset (``damping`` for the nonlinear fixed-point and
Anderson iterations, ``omega`` for the Neumann series). :meth:`SolverConfig.with_damping` does
that, so the layer never needs to know which solver takes which option.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .stats import SolverStats

__all__ = [
    "GMRES",
    "LBFGS",
    "LINEAR_CONFIGS",
    "NONLINEAR_CONFIGS",
    "Anderson",
    "FixedPoint",
    "Neumann",
    "NewtonKrylov",
    "SolverConfig",
    "make_config",
]

_RESERVED = {
    "tol": "tol",
    "max_iter": "max_iter",
    "scale": None,
}


def _positive_int(cls: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{cls}: {name} must be an int >= 1, got {value!r}")


def _damping(cls: str, name: str, value: Any) -> None:
    if value is None:
        return
    # Any β > 0 can be right: a declared disc centred at c > 0 with c < ½ gives β = 1/c > 2.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{cls}: {name} must be a finite float > 0 or None, got {value!r}")
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{cls}: {name} must be a finite float > 0 or None, got {value!r}")


@dataclass(frozen=True)
class SolverConfig:
    """Base class: a solver's name, its function and its options (the dataclass fields)."""

    name: ClassVar[str] = ""
    spectral: ClassVar[str | None] = None  # the option a declared spectrum may fill in

    def options(self) -> dict[str, Any]:
        """The options as keyword arguments of the solver function (unset ones dropped)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def with_damping(self, value: float) -> SolverConfig:
        """A copy whose spectral option is ``value`` if the user left it unset."""
        if self.spectral is None or getattr(self, self.spectral) is not None:
            return self
        return dataclasses.replace(self, **{self.spectral: float(value)})

    def function(self) -> Callable[..., tuple[torch.Tensor, SolverStats]]:
        raise NotImplementedError

    @classmethod
    def accepted(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


@dataclass(frozen=True)
class FixedPoint(SolverConfig):
    """Damped Picard iteration ``y ← y − β r(y)`` (``damping`` β; None: from the spectrum or 1)."""

    damping: float | None = None
    name: ClassVar[str] = "fixed-point"
    spectral: ClassVar[str | None] = "damping"

    def __post_init__(self) -> None:
        _damping("FixedPoint", "damping", self.damping)

    def function(self):
        from .nonlinear import fixed_point

        return fixed_point


@dataclass(frozen=True)
class Anderson(SolverConfig):
    """Anderson acceleration with ``memory`` differences of the damped map ``y − β r(y)``
    (``damping`` β: None estimates it per sample; ``lazy``: mix only once damped steps
    contract slower than this factor, see :func:`irn.solvers.anderson`)."""

    memory: int = 5
    damping: float | None = None
    lazy: float | None = None
    name: ClassVar[str] = "anderson"
    spectral: ClassVar[str | None] = "damping"

    def __post_init__(self) -> None:
        _positive_int("Anderson", "memory", self.memory)
        _damping("Anderson", "damping", self.damping)
        lazy = self.lazy
        if lazy is not None and (
            isinstance(lazy, bool) or not isinstance(lazy, (int, float)) or not 0 < lazy < 1
        ):
            raise ValueError(f"Anderson: lazy must be a float in (0, 1) or None, got {lazy!r}")

    def function(self):
        from .acceleration import anderson

        return anderson


@dataclass(frozen=True)
class NewtonKrylov(SolverConfig):
    """Inexact Newton with GMRES on JVPs (``inner_max_iter`` products per step)."""

    inner_max_iter: int = 30
    line_search: bool = True
    name: ClassVar[str] = "newton"

    def __post_init__(self) -> None:
        _positive_int("NewtonKrylov", "inner_max_iter", self.inner_max_iter)
        if not isinstance(self.line_search, bool):
            raise ValueError(f"NewtonKrylov: line_search must be a bool, got {self.line_search!r}")

    def function(self):
        from .nonlinear import newton_krylov

        return newton_krylov


@dataclass(frozen=True)
class LBFGS(SolverConfig):
    """L-BFGS on ``½‖r‖²`` per sample with ``memory`` curvature pairs."""

    memory: int = 10
    name: ClassVar[str] = "lbfgs"

    def __post_init__(self) -> None:
        _positive_int("LBFGS", "memory", self.memory)

    def function(self):
        from .nonlinear import lbfgs

        return lbfgs


@dataclass(frozen=True)
class GMRES(SolverConfig):
    """Restarted GMRES(``restart``) for a linear system."""

    restart: int = 20
    name: ClassVar[str] = "gmres"

    def __post_init__(self) -> None:
        _positive_int("GMRES", "restart", self.restart)

    def function(self):
        from .linear import gmres

        return gmres


@dataclass(frozen=True)
class Neumann(SolverConfig):
    """Richardson iteration ``v ← v + ω(b − Av)``: a damped Neumann series for (I − M)v = b."""

    omega: float | None = None
    name: ClassVar[str] = "fixed-point"
    spectral: ClassVar[str | None] = "omega"

    def __post_init__(self) -> None:
        _damping("Neumann", "omega", self.omega)

    def function(self):
        from .linear import richardson

        return richardson


NONLINEAR_CONFIGS: dict[str, type[SolverConfig]] = {
    c.name: c for c in (FixedPoint, Anderson, NewtonKrylov, LBFGS)
}
LINEAR_CONFIGS: dict[str, type[SolverConfig]] = {c.name: c for c in (GMRES, Neumann)}


def make_config(
    solver: str | SolverConfig,
    options: Mapping[str, Any] | None,
    registry: Mapping[str, type[SolverConfig]],
    what: str = "solver",
) -> SolverConfig:
    """Build (and so validate) a configuration from a name and an options dict.

    Args:
        solver: A name in ``registry`` or a configuration instance of one of its classes.
        options: Keyword options for a name (must be empty for an instance).
        registry: :data:`NONLINEAR_CONFIGS` or :data:`LINEAR_CONFIGS`.
        what: How the caller calls this argument in messages (``"solver"``, ``"adjoint_solver"``).

    Raises:
        ValueError: For an unknown name, an unknown, reserved or ill-typed option.
    """
    options = dict(options or {})
    opt_name = "adjoint_options" if what.startswith("adjoint") else "solver_options"
    if isinstance(solver, SolverConfig):
        if type(solver) not in registry.values():
            raise ValueError(
                f"{what}={type(solver).__name__}(...) is not one of {sorted(registry)}"
            )
        if options:
            raise ValueError(f"pass options inside {type(solver).__name__}(...), not in {opt_name}")
        return solver
    if solver not in registry:
        raise ValueError(f"unknown {what} {solver!r}; choose one of {list(registry)}")
    cls = registry[solver]
    for key in options:
        if key in _RESERVED:
            where = "adjoint_" if what.startswith("adjoint") else ""
            hint = (
                f"pass {where}{key}= to the layer" if _RESERVED[key] else "it is set by the layer"
            )
            raise ValueError(f"{opt_name} may not contain {key!r}: {hint}")
    unknown = sorted(set(options) - set(cls.accepted()))
    if unknown:
        raise ValueError(
            f"{what} {solver!r} accepts the options {cls.accepted()}; got unknown {unknown} "
            f"in {opt_name}"
        )
    try:
        return cls(**options)
    except TypeError as err:  # defensive: dataclass signature mismatch
        raise ValueError(f"bad {opt_name} for {solver!r}: {err}") from None

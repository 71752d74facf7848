"""Self-validating solver configurations and the one solver registry.

A configuration is a frozen dataclass naming one solver and its options; it checks every value
when it is built, so a typo or a wrong type fails where the layer is constructed, with a message
that lists what the solver accepts. The stopping rule (``tol``, ``max_iter``) belongs to the
caller (the layer), not to the configuration.

Each solver module (``fixed_point.py``, ``anderson.py``, ...) defines its algorithm and its
configuration class side by side. The class says everything a layer needs to know about it:

* ``kind``: ``"nonlinear"`` (solves ``r(y) = 0``) or ``"linear"`` (solves ``A v = b``);
* ``name``: how a user names it (``solver="anderson"``);
* ``spectral``: the option a field's declared spectrum fills in when the user left it unset
  (the damping ``β = 1/c``, see :meth:`with_damping`);
* ``starts_at_x``: whether its first step from ``x`` is the explicit predictor, so the layer
  starts it at ``x`` and saves the evaluation of ``F(t, x)``;
* ``auto_without_spectrum``: defaults ``solver="auto"`` gives it for a field that declares no
  spectrum (Anderson: lazy mixing);
* ``solve(...)``: runs the algorithm with the options.

Defining the class registers it (:meth:`SolverConfig.__init_subclass__`); importing its module
in :mod:`irn.solvers` is the one line that makes it available to layers, tests, benchmarks and
experiments, which all take their solver lists from :func:`registry`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .stats import SolverStats

__all__ = [
    "LINEAR_CONFIGS",
    "NONLINEAR_CONFIGS",
    "SolverConfig",
    "check_damping",
    "check_positive_int",
    "linear_solve",
    "make_config",
    "registry",
    "solve",
]

_RESERVED = {
    "tol": "tol",
    "max_iter": "max_iter",
    "scale": None,
}

#: Every registered configuration class, by kind and name; filled as solver modules load.
NONLINEAR_CONFIGS: dict[str, type[SolverConfig]] = {}
LINEAR_CONFIGS: dict[str, type[SolverConfig]] = {}
_KINDS = {"nonlinear": NONLINEAR_CONFIGS, "linear": LINEAR_CONFIGS}


def registry(kind: str = "nonlinear") -> dict[str, type[SolverConfig]]:
    """The registered configuration classes of one kind (``"nonlinear"`` or ``"linear"``),
    by name, in the order their modules were imported."""
    if kind not in _KINDS:
        raise ValueError(f"unknown solver kind {kind!r}; choose one of {list(_KINDS)}")
    return _KINDS[kind]


def _is_int(value: Any) -> bool:
    # numpy integers are Integral too; bool is an int but never a count.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(cls: str, name: str, value: Any, upper: int | None = None) -> int:
    """``value`` as an int ``>= 1`` (and ``<= upper``), or ``ValueError`` naming the option."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{cls}: {name} must be an int >= 1, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{cls}: {name} must be at most {upper}, got {value!r}")
    return int(value)


def check_damping(cls: str, name: str, value: Any) -> float | None:
    """``value`` as a finite float ``> 0``, or ``None``; ``ValueError`` naming the option."""
    if value is None:
        return None
    # Any β > 0 can be right: a declared disc centred at c > 0 with c < ½ gives β = 1/c > 2.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{cls}: {name} must be a finite float > 0 or None, got {value!r}")
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{cls}: {name} must be a finite float > 0 or None, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SolverConfig:
    """Base class: a solver's name, its algorithm and its options (the dataclass fields)."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    spectral: ClassVar[str | None] = None  # the option a declared spectrum may fill in
    starts_at_x: ClassVar[bool] = False  # its first step from x is the explicit predictor
    auto_without_spectrum: ClassVar[Mapping[str, Any]] = {}  # "auto"'s extra defaults

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.kind:  # an abstract intermediate class
            return
        if cls.kind not in _KINDS or not cls.name:
            raise TypeError(f"{cls.__name__}: kind must be one of {list(_KINDS)} with a name")
        _KINDS[cls.kind][cls.name] = cls

    def options(self) -> dict[str, Any]:
        """The options as keyword arguments of the solver function (unset ones dropped)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def with_damping(self, value: float) -> SolverConfig:
        """A copy whose spectral option is ``value`` if the user left it unset."""
        if self.spectral is None or getattr(self, self.spectral) is not None:
            return self
        return dataclasses.replace(self, **{self.spectral: float(value)})

    def function(self) -> Callable[..., tuple[torch.Tensor, SolverStats]]:
        """The algorithm, a function taking the options as keywords."""
        raise NotImplementedError

    def solve(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, SolverStats]:
        """Run the algorithm with these options: nonlinear solvers take
        ``(residual, y0, *, tol, max_iter, scale)``, linear ones ``(matvec, b, x0, *, tol,
        max_iter)``."""
        return self.function()(*args, **kwargs, **self.options())

    @classmethod
    def accepted(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


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


def solve(
    method: str | SolverConfig,
    residual: Callable[[torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 50,
    scale: torch.Tensor | None = None,
    **options: Any,
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``r(y) = 0`` with a registered nonlinear solver given by name (``"fixed-point"``,
    ``"anderson"``, ``"newton"``, ``"lbfgs"``, ...) or as a configuration (:class:`Anderson`).

    ``options`` are the solver's own (``damping``, ``memory``, ...), validated before anything
    runs: an unknown or ill-typed option raises ``ValueError`` listing the accepted ones.
    """
    config = make_config(method, options, NONLINEAR_CONFIGS)
    return config.solve(residual, y0, tol=tol, max_iter=max_iter, scale=scale)


def linear_solve(
    method: str | SolverConfig,
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 50,
    **options: Any,
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``A v = b`` with a registered linear solver (``"gmres"``, ``"fixed-point"``: the
    Neumann series), or a configuration (:class:`GMRES`, :class:`Neumann`); options are
    validated first."""
    config = make_config(method, options, LINEAR_CONFIGS, "linear solver")
    return config.solve(matvec, b, x0, tol=tol, max_iter=max_iter)

"""irn: implicit residual networks in PyTorch.

A residual block ``y = x + h F(x)`` is a forward-Euler step of an ODE; :class:`ThetaLayer`
replaces it by an implicit θ-method step whose output is a fixed point, solved by batched
nonlinear solvers and differentiated with the implicit-function theorem.
"""

import importlib

from . import data, fields, regularizers, scheme, solvers, spectral, stability
from .fields import MLP, ConvField, Linear, SpectralNormalized
from .inexact import JFB, Phantom
from .layers import ThetaLayer, ThetaStats
from .models import ImplicitChain, ImplicitResNet, Trajectory
from .plan import Adjoint
from .solvers import ConvergenceError, ConvergenceWarning, SolverStats

__version__ = "0.1.0"

__all__ = [
    "JFB",
    "MLP",
    "Adjoint",
    "Phantom",
    "ConvField",
    "Linear",
    "SpectralNormalized",
    "ConvergenceError",
    "ConvergenceWarning",
    "ImplicitChain",
    "ImplicitResNet",
    "SolverStats",
    "ThetaLayer",
    "ThetaStats",
    "Trajectory",
    "checkpoint",
    "data",
    "distributed",
    "fields",
    "regularizers",
    "scheme",
    "solvers",
    "spectral",
    "stability",
    "train",
]

# Imported when first used (``irn.train.fit``, ``import irn.metrics``): training pulls in tqdm
# and the training package, which ``import irn`` for a layer or a solver does not need.
_LAZY = ("checkpoint", "distributed", "metrics", "train", "training")


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")  # also sets it as an attribute
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

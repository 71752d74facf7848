"""irn: implicit residual networks in PyTorch.

A residual block ``y = x + h F(x)`` is a forward-Euler step of an ODE; :class:`ThetaLayer`
replaces it by an implicit θ-method step whose output is a fixed point, solved by batched
nonlinear solvers and differentiated with the implicit-function theorem.
"""

from . import (
    checkpoint,
    data,
    distributed,
    fields,
    regularizers,
    scheme,
    solvers,
    spectral,
    stability,
    train,
)
from .fields import MLP, ConvField, Linear, SpectralNormalized
from .layers import ThetaLayer, ThetaStats
from .models import ImplicitChain, ImplicitResNet, Trajectory
from .solvers import ConvergenceError, ConvergenceWarning, SolverStats

__version__ = "0.1.0"

__all__ = [
    "MLP",
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

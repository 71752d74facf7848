"""Test fields ``F(t, y)`` and the solver lists every test file shares.

A plain module (``from fields import TanhField``): ``conftest.py`` puts ``tests/`` on
``sys.path``. Each field is an ``nn.Module`` called as ``field(t, y)`` with float64 parameters,
chosen because its θ-steps have a closed form or a known spectrum. A test keeps a field of its
own only when it needs a different one (a bad field, a field built for a regularizer's closed
form).

The solver lists come from the registry (:func:`irn.solvers.registry`), so a newly registered
solver is gradchecked (``test_layers.py::test_gradcheck_every_combination``), solved on known
problems (``test_solvers.py``) and put through every edge case (``test_step.py``) without any
test naming it. Each is used with its defaults: the tests pass only a name, the layer (or the
solver call) builds the configuration with no arguments, and a declared spectrum fills in the
damping. A solver that needs an option to run at all would break every one of those tests, so
``test_solvers.py::test_every_registered_configuration_builds_with_no_arguments`` says so first:
give every option a default.
"""

from __future__ import annotations

import torch
from torch import nn

import irn

DT = torch.float64

#: Every registered nonlinear solver (the layer's ``solver=``), in registry order.
NONLINEAR = list(irn.solvers.registry("nonlinear"))
#: Every registered linear solver (the layer's ``adjoint_solver=``).
LINEAR = list(irn.solvers.registry("linear"))
#: What a layer's ``solver=`` accepts by name: ``"auto"`` and every registered solver.
FORWARD = ["auto", *NONLINEAR]


class Affine(nn.Module):
    """F(t, y) = A y + b, the field with closed-form θ-steps."""

    def __init__(self, n: int, scale: float = 0.3, dtype=DT):
        super().__init__()
        self.A = nn.Parameter(scale * torch.randn(n, n, dtype=dtype))
        self.b = nn.Parameter(torch.randn(n, dtype=dtype))

    def forward(self, t, y):
        return y @ self.A.T + self.b


class FixedAffine(nn.Module):
    """F(t, y) = A y + b with given constant ``A`` and ``b`` (no parameters)."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.A, self.b = A, b

    def forward(self, t, y):
        return y @ self.A.T + self.b


class TanhField(nn.Module):
    """F(t, y) = (1 + t/10) tanh(W y + c): nonlinear and time dependent."""

    def __init__(self, n: int, scale: float = 0.5, dtype=DT):
        super().__init__()
        self.W = nn.Parameter(scale * torch.randn(n, n, dtype=dtype) / n**0.5)
        self.c = nn.Parameter(0.1 * torch.randn(n, dtype=dtype))

    def forward(self, t, y):
        return (1 + 0.1 * t) * torch.tanh(y @ self.W.T + self.c)


class Scalar(nn.Module):
    """F(t, y) = λ y, the linear test equation (λ may be complex on complex states)."""

    def __init__(self, lam: float | complex):
        super().__init__()
        self.lam = lam

    def forward(self, t, y):
        return self.lam * y


class Autonomous(nn.Module):
    """F(t, y) = net(y): a time-independent module (``nn.Sequential``, ...) as a field."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t, y):
        return self.net(y)


class Shifted(nn.Module):
    """F(y) = shift·y + scale·tanh(W y), ‖W‖₂ = 1: the residual Jacobian of a θ = h = 1 step is
    centred at 1 − shift with radius ``scale``. Declares nothing (the solvers must estimate)."""

    def __init__(self, n: int, shift: float, scale: float, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(n, n, generator=g, dtype=DT)
        self.W = nn.Parameter(w / torch.linalg.matrix_norm(w, 2))
        self.shift, self.scale = shift, scale

    def forward(self, t, y):
        return self.shift * y + self.scale * torch.tanh(y @ self.W.T)


class DeclaredDisc(nn.Module):
    """F(y) = c·y + r·tanh(W y) with ‖W‖₂ = 1: declares its Jacobian disc (centre c, radius r).

    ``weight`` fixes W (e.g. the identity); by default it is a random matrix of norm one."""

    def __init__(self, n: int, center: float, radius: float, weight: torch.Tensor | None = None):
        super().__init__()
        w = torch.randn(n, n, dtype=DT) if weight is None else weight.to(DT)
        self.W = nn.Parameter(w / torch.linalg.matrix_norm(w, 2))
        self.center, self.radius = center, radius

    def forward(self, t, y):
        return self.center * y + self.radius * torch.tanh(y @ self.W.T)


class DeclaredAffine(nn.Module):
    """F(y) = c y + b (c = −3) with its spectrum declared: the predictor solves the step exactly."""

    center, radius = -3.0, 0.0

    def __init__(self, n: int = 3):
        super().__init__()
        self.b = nn.Parameter(torch.randn(n, dtype=DT))

    def forward(self, t, y):
        return self.center * y + self.b


class TanhConv(nn.Module):
    """F(y) = gain·tanh(conv(y)): a 3×3 same-padded convolution field on image states."""

    def __init__(self, channels: int, gain: float):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, dtype=DT)
        self.gain = gain

    def forward(self, t, y):
        return self.gain * torch.tanh(self.conv(y))

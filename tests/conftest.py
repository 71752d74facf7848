"""Shared test setup: one thread, fixed seeds, float64 fields, no network."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

torch.set_num_threads(1)


def _install_network_guard() -> None:
    """No network at run time: only this machine may be reached (tests/network_guard.py)."""
    path = Path(__file__).with_name("network_guard.py")
    spec = importlib.util.spec_from_file_location("network_guard", path)
    guard = sys.modules.setdefault("network_guard", importlib.util.module_from_spec(spec))
    if not hasattr(guard, "install"):
        spec.loader.exec_module(guard)
    guard.install()


_install_network_guard()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


class Affine(nn.Module):
    """F(t, y) = A y + b, the field with closed-form θ-steps."""

    def __init__(self, n: int, scale: float = 0.3, dtype=torch.float64):
        super().__init__()
        self.A = nn.Parameter(scale * torch.randn(n, n, dtype=dtype))
        self.b = nn.Parameter(torch.randn(n, dtype=dtype))

    def forward(self, t, y):
        return y @ self.A.T + self.b


class TanhField(nn.Module):
    """F(t, y) = (1 + t/10) tanh(W y + c): nonlinear and time dependent."""

    def __init__(self, n: int, scale: float = 0.5, dtype=torch.float64):
        super().__init__()
        self.W = nn.Parameter(scale * torch.randn(n, n, dtype=dtype) / n**0.5)
        self.c = nn.Parameter(0.1 * torch.randn(n, dtype=dtype))

    def forward(self, t, y):
        return (1 + 0.1 * t) * torch.tanh(y @ self.W.T + self.c)


class Scalar(nn.Module):
    """F(t, y) = λ y, the linear test equation."""

    def __init__(self, lam: float):
        super().__init__()
        self.lam = lam

    def forward(self, t, y):
        return self.lam * y

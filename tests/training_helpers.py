"""Shared pieces of the training tests (test_train, test_checkpoint, test_training_logging):
the paper's 1D setup in miniature and comparisons of runs."""

from __future__ import annotations

import torch
from torch import nn

import irn
from irn.train import History, TrainConfig

DT = torch.float64


class Field(nn.Module):
    """A small tanh MLP field F(t, y) = W2 tanh(W1 y + b1) + b2."""

    def __init__(self, dim: int = 2, width: int = 8) -> None:
        super().__init__()
        self.inner = nn.Linear(dim, width, dtype=DT)
        self.outer = nn.Linear(width, dim, dtype=DT)

    def forward(self, t, y):
        return self.outer(torch.tanh(self.inner(y)))


class ModeProbe(nn.Module):
    """Identity that records the mode it was called in."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bool] = []

    def forward(self, x):
        self.calls.append(self.training)
        return x


def make_net(theta: float = 1.0, seed: int = 0, **kwargs) -> irn.ImplicitResNet:
    """The paper's 1D setup in miniature: state (x, 0), 2 steps, a linear read-out."""
    torch.manual_seed(seed)
    kwargs.setdefault("steps", 2)
    head = nn.Linear(2, 1, dtype=DT)
    return irn.ImplicitResNet(Field(), codim=1, theta=theta, output_map=head, tol=1e-8, **kwargs)


def sine_data() -> tuple[torch.Tensor, torch.Tensor]:
    return irn.data.sine_regression(20, dtype=DT)


def quiet(**kwargs) -> TrainConfig:
    kwargs.setdefault("lr", 1e-2)
    return TrainConfig(progress=False, **kwargs)


def comparable(history: History) -> dict:
    """The history without wall-clock times, which differ between identical runs."""
    return {k: v for k, v in history.as_dict().items() if k != "wall_time"}


def params(net: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in net.state_dict().values()]


def identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def finite(net: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in net.parameters())

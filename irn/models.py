"""Deep implicit residual networks: ``T`` θ-steps of size ``h = interval / T``."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import ThetaLayer, ThetaStats
from .scheme import check_theta

__all__ = ["ImplicitChain", "ImplicitResNet", "Trajectory"]


@dataclass
class Trajectory:
    """States ``y_0 = x, y_1, ..., y_T`` at times ``t_0, ..., t_T`` and each step's stats."""

    times: list[float]
    states: list[torch.Tensor]
    stats: list[ThetaStats] = field(default_factory=list)

    @property
    def iterations(self) -> list[int]:
        """Forward solver iterations of every step."""
        return [s.iterations for s in self.stats]


def _integer(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or int(value) != value):
        raise ValueError(f"{name} must be an integer, got {value!r}")


def _fields(field, steps, shared: bool) -> tuple[list[nn.Module], int]:
    """One field per step (the same one if shared) and the number of steps."""
    _integer("steps", steps)
    if isinstance(field, nn.Module):
        steps = 1 if steps is None else int(steps)
        return ([field] if shared else [copy.deepcopy(field) for _ in range(steps)]), steps
    fields = list(field)
    if steps is not None and steps != len(fields):
        raise ValueError(f"steps={steps} but {len(fields)} fields were given")
    return fields, len(fields)


def _check_model_options(steps: int, interval, codim, random_theta, random_h) -> None:
    _integer("codim", codim)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not interval > 0:
        raise ValueError(f"interval must be > 0, got {interval}")
    if codim < 0:
        raise ValueError(f"codim must be >= 0, got {codim}")
    for name, rng in (("random_theta", random_theta), ("random_h", random_h)):
        if rng is not None and not (0 <= rng[0] <= rng[1]):
            raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {rng}")
    if random_h is not None and not random_h[0] > 0:
        raise ValueError(f"random_h must have low > 0 (a step-size factor), got {random_h}")
    try:  # one θ check, the scheme's; the message names the option
        _ = random_theta is None or check_theta(random_theta[1])
    except ValueError:
        raise ValueError(f"random_theta must lie in [0, 1], got {random_theta}") from None


class ImplicitResNet(nn.Module):
    """``T`` implicit θ-steps ``y_{k+1} = y_k + Φ_k(y_k, y_{k+1})`` over ``[t0, t0 + interval]``.

    Args:
        field: One vector field (shared by all steps, or copied per step when
            ``shared=False``) or a sequence of ``T`` fields (``γ_t``: one per step).
        steps: Number of steps T (inferred from a sequence of fields).
        interval: Length of the time interval; ``h = interval / steps``.
        shared: With a single field, share its parameters across steps (default) or give every
            step its own deep copy (what :func:`~irn.regularizers.total_variation` penalizes).
        input_map, output_map: Optional modules applied before the first and after the last
            step (e.g. a linear classifier).
        codim: Zero components appended to the state (dimension 1, i.e. features or channels),
            the paper's augmentation: the flow then runs in a space with room to move.
        random_theta, random_h: Optional ``(low, high)`` ranges. In training mode every forward
            draws one θ ~ U(low, high) and one step-size factor ~ U(low, high) for all steps:
            an *extension* (the paper's "stochastic regularization" is not pinned down; its
            clearest reading is the fresh Hutchinson probes, which the regularizers do anyway).
        **layer_options: Passed to every :class:`~irn.ThetaLayer` (``theta``, ``scheme``,
            ``solver``, ``tol``, ``max_iter``, ``backward``, ``on_failure``, ...).
    """

    def __init__(
        self,
        field: nn.Module | Sequence[nn.Module],
        *,
        steps: int | None = None,
        interval: float = 1.0,
        shared: bool = True,
        input_map: nn.Module | None = None,
        output_map: nn.Module | None = None,
        codim: int = 0,
        random_theta: tuple[float, float] | None = None,
        random_h: tuple[float, float] | None = None,
        **layer_options,
    ) -> None:
        super().__init__()
        fields, steps = _fields(field, steps, shared)
        _check_model_options(steps, interval, codim, random_theta, random_h)
        self.steps, self.interval, self.codim = steps, float(interval), int(codim)
        self.h = self.interval / steps
        self.layers = nn.ModuleList(ThetaLayer(f, h=self.h, **layer_options) for f in fields)
        self.input_map, self.output_map = input_map, output_map
        self.random_theta, self.random_h = random_theta, random_h

    @property
    def fields(self) -> list[nn.Module]:
        """The distinct vector fields (one if shared, else one per step)."""
        return [layer.field for layer in self.layers]

    def layer(self, k: int) -> ThetaLayer:
        """The layer that performs step ``k`` (the shared one if fields are shared)."""
        return self.layers[min(k, len(self.layers) - 1)]

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Append ``codim`` zero components along dimension 1."""
        if self.codim == 0:
            return x
        pad = x.new_zeros(x.shape[0], self.codim, *x.shape[2:])
        return torch.cat([x, pad], 1)

    def _draw(self) -> tuple[float | None, float]:
        theta, factor = None, 1.0
        if self.training and self.random_theta is not None:
            lo, hi = self.random_theta
            theta = lo + (hi - lo) * float(torch.rand(()))
        if self.training and self.random_h is not None:
            lo, hi = self.random_h
            factor = lo + (hi - lo) * float(torch.rand(()))
        return theta, factor

    def _check_state(self, y: torch.Tensor) -> None:
        """Fail early, naming ``codim``, when the field's declared state cannot take ``y``."""
        declared = getattr(self.layers[0].field, "state_shape", None)
        if declared is None or y.dim() < 2 or len(declared) == 0:
            return
        if int(declared[0]) != y.shape[1]:
            came = y.shape[1] - self.codim
            raise ValueError(
                f"the field takes states with {declared[0]} components along dimension 1, but "
                f"the augmented state has {y.shape[1]} (the input's {came} + codim={self.codim})"
                f"; build the field for {y.shape[1]} components (e.g. irn.MLP(dim={y.shape[1]})),"
                f" or change codim"
            )

    def forward(
        self, x: torch.Tensor, t0: float = 0.0, *, return_trajectory: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
        """Map ``x`` through input map, augmentation, T steps and output map.

        With ``return_trajectory=True`` also return the :class:`Trajectory` of the implicit
        part (states after augmentation, before the output map), which the regularizers read;
        its per-step stats belong to this call alone, whatever other threads do.
        """
        y = self.input_map(x) if self.input_map is not None else x
        y = self.augment(y)
        self._check_state(y)
        theta, factor = self._draw()
        traj = Trajectory([float(t0)], [y])
        t = float(t0)
        for k in range(self.steps):
            layer = self.layer(k)
            h = layer.h * factor
            y, stats = layer(
                y, t, theta=theta, h=h, return_stats=True, name=f"step {k + 1} of {self.steps}"
            )
            t += h
            traj.times.append(t)
            traj.states.append(y)
            traj.stats.append(stats)
        out = self.output_map(y) if self.output_map is not None else y
        return (out, traj) if return_trajectory else out


class ImplicitChain(nn.Sequential):
    """Modules applied in order, some of them :class:`ImplicitResNet` blocks: e.g. the paper's
    MNIST network, implicit blocks between strided convolutions.

    Called with ``return_trajectory=True`` it returns ``(output, trajectory)``: the
    trajectory's ``stats`` are every block's step stats in order (what :func:`irn.train.fit`
    logs), and its ``states`` are the inputs and outputs of the implicit blocks. The
    regularizers of :func:`irn.train.fit` need one :class:`ImplicitResNet` and refuse a chain.
    """

    @property
    def blocks(self) -> list[ImplicitResNet]:
        """The implicit blocks, in order."""
        return [m for m in self if isinstance(m, ImplicitResNet)]

    def forward(
        self, x: torch.Tensor, *, return_trajectory: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, Trajectory]:
        """Apply every module in order; see the class docstring for ``return_trajectory``."""
        traj = Trajectory([], [])
        for module in self:
            if isinstance(module, ImplicitResNet):
                traj.states.append(x)
                x, inner = module(x, return_trajectory=True)
                traj.states.append(x)
                traj.stats.extend(inner.stats)
            else:
                x = module(x)
        return (x, traj) if return_trajectory else x

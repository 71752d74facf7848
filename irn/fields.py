"""Vector fields F(t, y) and the spectral parametrization F^{α,β} of the paper.

A field is an ``nn.Module`` called as ``field(t, y)`` (torchdiffeq convention): ``y`` has shape
``(batch, *state)``, the output has the same shape and ``t`` is a float or a 0-dim tensor. Fields
are pure functions of ``(t, y)`` as long as their spectral normalization is :func:`frozen`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .scheme import DeclaresDisc, DeclaresSpectrum, declared_disc
from .spectral import apply_spectral_norm, frozen

__all__ = [
    "ConvField",
    "DeclaresDisc",
    "DeclaresSpectrum",
    "Linear",
    "MLP",
    "SpectralNormalized",
    "declared_disc",
    "frozen",
    "make_activation",
]


# Lipschitz constants: 1 for all but gelu (≈1.13), silu (≈1.10) and sigmoid (1/4). The eigenvalue
# disc of SpectralNormalized needs activations with constant ≤ 1.
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}


def make_activation(activation: str | nn.Module) -> nn.Module:
    """Return a new activation module from a name, or a deep copy of a given module.

    Raises:
        ValueError: For an unknown name (the message lists the known ones).
    """
    if isinstance(activation, nn.Module):
        return copy.deepcopy(activation)  # one independent copy per position in the stack
    try:
        return _ACTIVATIONS[activation.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown activation {activation!r}; expected an nn.Module or one of "
            f"{sorted(_ACTIVATIONS)}"
        ) from None


def _check_positive(**kwargs: int | None) -> None:
    for name, value in kwargs.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


class Linear(nn.Module):
    """Affine field F(t, y) = A y + b(t), A fixed: the test equation of stability analysis.

    The book's small linear and affine examples (a scalar decay λy, a 2×2 rotation, a stiff
    forced decay λ(y − cos t) − sin t) are all this one module.

    Args:
        A: Square matrix ``(d, d)`` (real or complex), or a scalar for d = 1.
        b: Offset: None, a vector ``(d,)``, or a callable ``b(t)`` returning one (a forcing).
        trainable: Make ``A`` (and a tensor ``b``) parameters instead of buffers.

    ``y`` has shape ``(batch, d)``; the output has the dtype of ``y`` promoted with ``A``.
    """

    def __init__(self, A, b=None, *, trainable: bool = False) -> None:
        super().__init__()
        A = torch.as_tensor(A)
        if A.dim() == 0:
            A = A.reshape(1, 1)
        if A.dim() != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"A must be a square matrix (d, d) or a scalar, got shape "
                             f"{tuple(A.shape)}")  # fmt: skip
        if not (A.is_floating_point() or A.is_complex()):
            A = A.to(torch.get_default_dtype())
        self.forcing = None
        if callable(b) and not isinstance(b, Tensor):
            self.forcing, b = b, None
        elif b is not None:
            b = torch.as_tensor(b, dtype=A.dtype).reshape(-1)
            if b.shape[0] != A.shape[0]:
                raise ValueError(f"b must have {A.shape[0]} entries (A is {tuple(A.shape)}), "
                                 f"got {b.shape[0]}")  # fmt: skip
        if trainable:
            self.A = nn.Parameter(A)
            self.b = None if b is None else nn.Parameter(b)
        else:
            self.register_buffer("A", A)
            self.register_buffer("b", b)
        self.state_shape: tuple[int, ...] = (A.shape[0],)

    def forward(self, t: float | Tensor, y: Tensor) -> Tensor:
        """``A y + b(t)`` for ``y`` of shape ``(batch, d)``."""
        out = y @ self.A.to(torch.promote_types(y.dtype, self.A.dtype)).T
        if self.b is not None:
            out = out + self.b
        if self.forcing is not None:
            out = out + torch.as_tensor(self.forcing(t), dtype=out.dtype)
        return out

    def extra_repr(self) -> str:
        forcing = ", forcing" if self.forcing is not None else ""
        return f"d={self.A.shape[0]}, offset={self.b is not None}{forcing}"


class MLP(nn.Module):
    """Autonomous multilayer perceptron field F(t, y) = L_D ∘ φ ∘ L_{D-1} ∘ … ∘ φ ∘ L_0 (y).

    L_0: ℝ^dim → ℝ^width, L_1 … L_{D-1}: ℝ^width → ℝ^width, L_D: ℝ^width → ℝ^dim, with D = depth
    (the number of hidden layers) and φ the activation. ``t`` is ignored.

    Args:
        dim: State dimension; ``y`` has shape ``(batch, dim)``.
        width: Hidden width.
        depth: Number of hidden layers (≥ 1).
        activation: A name (``"tanh"``, ``"relu"``, ``"gelu"``, ``"softplus"``, ``"elu"``,
            ``"sigmoid"``, ``"silu"``, ``"leaky_relu"``, ``"identity"``) or an ``nn.Module``.
        bias: Whether the linear layers have biases.
        spectral_norm: Spectrally normalize every linear layer (``irn.spectral``).
    """

    def __init__(
        self,
        dim: int,
        width: int = 32,
        depth: int = 2,
        activation: str | nn.Module = "tanh",
        bias: bool = True,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(dim=dim, width=width, depth=depth)
        layers: list[nn.Module] = [nn.Linear(dim, width, bias=bias)]
        for _ in range(depth - 1):
            layers += [make_activation(activation), nn.Linear(width, width, bias=bias)]
        layers += [make_activation(activation), nn.Linear(width, dim, bias=bias)]
        self.net = nn.Sequential(*layers)
        self.state_shape: tuple[int, ...] = (dim,)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, t: float | Tensor, y: Tensor) -> Tensor:
        """Evaluate F(y) for ``y`` of shape ``(batch, dim)``."""
        return self.net(y)


class ConvField(nn.Module):
    """Pre-activation convolutional field F(t, y) = C_D ∘ φ ∘ … ∘ C_1 ∘ φ (y) on images.

    Each C_i is a k×k convolution with ``"same"`` padding (stride 1), so the output has the input
    shape ``(batch, channels, H, W)``; channels go ``channels → width → … → width → channels``.
    ``t`` is ignored.

    Args:
        channels: Number of state channels.
        width: Hidden channels (default: ``channels``).
        kernel_size: k.
        depth: Number of (activation, convolution) pairs D (≥ 1).
        activation: As for :class:`MLP`.
        spectral_norm: Spectrally normalize every convolution *as an operator* on the input.
        input_shape: Spatial shape (H, W) for the spectral norm; None takes it from the first call.
        bias: Whether the convolutions have biases.

    Attributes:
        state_shape: ``(channels, 1, 1)``, a shape for per-channel scales broadcast over H×W.
    """

    def __init__(
        self,
        channels: int,
        width: int | None = None,
        kernel_size: int = 3,
        depth: int = 2,
        activation: str | nn.Module = "relu",
        spectral_norm: bool = False,
        input_shape: Sequence[int] | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        width = channels if width is None else width
        _check_positive(channels=channels, width=width, kernel_size=kernel_size, depth=depth)
        sizes = [channels] + [width] * (depth - 1) + [channels]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(sizes[:-1], sizes[1:], strict=True):
            conv = nn.Conv2d(c_in, c_out, kernel_size, padding="same", bias=bias)
            layers += [make_activation(activation), conv]
        self.net = nn.Sequential(*layers)
        self.state_shape: tuple[int, ...] = (channels, 1, 1)
        self.input_shape = None if input_shape is None else tuple(input_shape)
        if spectral_norm:
            apply_spectral_norm(self, input_shape=self.input_shape)

    def forward(self, t: float | Tensor, y: Tensor) -> Tensor:
        """Evaluate F(y) for ``y`` of shape ``(batch, channels, H, W)``."""
        return self.net(y)


class SpectralNormalized(nn.Module):
    r"""The paper's spectrally parametrized field F^{α,β}.

    .. math::
        F^{α,β}(t, y) = \frac{α+β}{2}\,y + \frac{β-α}{2}\,σ(ϑ) ⊙ \hat F(t, y),

    where :math:`\hat F` is ``field`` with every Linear/Conv layer spectrally normalized
    (convolutions as operators on the actual input shape), σ the sigmoid and ϑ an elementwise
    scale broadcast against the state.

    Eigenvalue disc: if the activations are 1-Lipschitz, ‖∂F̂/∂y‖₂ ≤ 1, so every eigenvalue λ of
    ∂F^{α,β}/∂y lies in the disc ``|λ − (α+β)/2| ≤ (β−α)/2 · max σ(ϑ)`` (the bound behind
    ``center``, ``radius`` and ``disc_radius``), inside the real band [α, β]. Power iteration
    underestimates ‖W‖₂, so right after a large weight change the bound holds only up to the
    estimate's lag.

    Args:
        field: The field F; normalized in place. Its ``state_shape`` attribute, if any, is the
            default shape of ϑ, and its ``input_shape`` (convolutions) is used if set.
        alpha: Left end α of the eigenvalue band.
        beta: Right end β > α.
        learn_scale: ϑ is a parameter initialized to σ(ϑ) = 0.5; otherwise a buffer, σ(ϑ) = 0.99.
        scale_shape: Shape of ϑ (default ``field.state_shape`` or a scalar ``()``).
        n_power_iterations: Power iterations per forward in training mode (when not frozen).

    Raises:
        ValueError: If ``alpha >= beta``.
    """

    def __init__(
        self,
        field: nn.Module,
        alpha: float = -1.0,
        beta: float = 1.0,
        learn_scale: bool = True,
        scale_shape: Sequence[int] | None = None,
        n_power_iterations: int = 1,
    ) -> None:
        super().__init__()
        if not alpha < beta:
            raise ValueError(f"alpha must be < beta, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.field = apply_spectral_norm(
            field, n_power_iterations, input_shape=getattr(field, "input_shape", None)
        )
        if scale_shape is None:
            scale_shape = getattr(field, "state_shape", ())
        self.state_shape = getattr(field, "state_shape", None)
        if learn_scale:
            self.scale = nn.Parameter(torch.zeros(tuple(scale_shape)))  # σ(0) = 0.5
        else:
            logit = math.log(0.99 / 0.01)  # σ(ϑ) = 0.99
            self.register_buffer("scale", torch.full(tuple(scale_shape), logit))

    @property
    def center(self) -> float:
        """Centre (α+β)/2 of the eigenvalue disc."""
        return 0.5 * (self.alpha + self.beta)

    @property
    def radius(self) -> float:
        """Half-width (β−α)/2 of the band; the disc radius is this times max σ(ϑ)."""
        return 0.5 * (self.beta - self.alpha)

    @property
    def disc_radius(self) -> float:
        """Current disc radius (β−α)/2 · max σ(ϑ) (≤ ``radius``)."""
        return self.radius * float(torch.sigmoid(self.scale.detach()).max())

    def forward(self, t: float | Tensor, y: Tensor) -> Tensor:
        """Evaluate F^{α,β}(t, y) (same shape as ``y``)."""
        return self.center * y + self.radius * torch.sigmoid(self.scale) * self.field(t, y)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, scale_shape={tuple(self.scale.shape)}"

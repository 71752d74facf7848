"""Spectral normalization of linear and convolution layers by power iteration.

A layer computing ``x ↦ W x (+ b)`` is reparametrized as ``W ↦ W / σ̂``, where σ̂ = ‖W v‖₂ is a
power-iteration estimate of the operator norm ‖W‖₂ and v is a persistent unit vector (a buffer)
refined by ``v ← WᵀW v / ‖WᵀW v‖``. After convergence the normalized layer has spectral norm 1
(Reshniak & Webster, §1.4 of the paper notes).

For convolutions the operator W is *the convolution itself* on the actual input shape, padding and
stride included, and Wᵀ its adjoint. The reshaped ``(out, in·k·k)`` kernel matrix has a different
norm (padding truncates the stencil at the border, strides skip outputs, a stencil overlaps its
neighbours), so normalizing it does not give a 1-Lipschitz layer.

Updates of v run only when the parametrization is in training mode and not frozen; implicit layers
wrap every nonlinear solve in :func:`frozen` so the field stays a pure function of ``(t, y)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = [
    "SpectralNorm",
    "apply_spectral_norm",
    "frozen",
    "is_frozen",
    "operator_norm",
    "power_iterate",
    "spectral_normalize",
]

_CONVS: dict[type[nn.Module], Callable[..., Tensor]] = {
    nn.Conv1d: F.conv1d,
    nn.Conv2d: F.conv2d,
    nn.Conv3d: F.conv3d,
}
# Power iterations run when a layer is normalized or its input shape changes, so that σ̂ is a
# meaningful estimate from the first forward (one iteration per forward only refines it).
DEFAULT_WARMUP = 20
_V_SEED = 20190524


class SpectralNorm(nn.Module):
    """Parametrization ``W ↦ W / ‖W v‖₂`` with a power-iteration vector v (buffer ``_v``).

    Built from the layer it will parametrize (its hyper-parameters are copied, the layer is not
    referenced). ``_v`` has shape ``(1, *input_shape)``: ``(1, in_features)`` for ``nn.Linear`` and
    ``(1, in_channels, *spatial)`` for convolutions; it is empty while a convolution's input shape
    is unknown and is (re-)created, with a warm-up, by :meth:`set_input_shape`.

    Args:
        layer: ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Conv3d``.
        n_power_iterations: Updates of v per forward in training mode (when not frozen).
        input_shape: Convolutions only: spatial shape, or ``(in_channels, *spatial)``; None
            leaves v empty until :meth:`set_input_shape`.
        warmup: Power iterations run as soon as the input shape is known.
        eps: Lower bound on σ̂ and on norms used for normalization.
    """

    def __init__(
        self,
        layer: nn.Module,
        n_power_iterations: int = 1,
        input_shape: Sequence[int] | None = None,
        warmup: int = DEFAULT_WARMUP,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if min(n_power_iterations, warmup) < 0:
            raise ValueError(
                f"n_power_iterations and warmup must be >= 0, got {n_power_iterations}, {warmup}"
            )
        self.n_power_iterations = int(n_power_iterations)
        self.eps = float(eps)
        self._freeze_depth = 0  # > 0 inside `frozen`; a counter so nested/overlapping uses work
        weight = layer.weight
        self._conv: Callable[..., Tensor] | None = None
        if isinstance(layer, nn.Linear):
            input_shape = (layer.in_features,)
        elif isinstance(layer, tuple(_CONVS)):
            self._conv = next(f for cls, f in _CONVS.items() if isinstance(layer, cls))
            self._spatial_dims = weight.dim() - 2
            self._in_channels = layer.in_channels
            self.stride, self.dilation, self.groups = layer.stride, layer.dilation, layer.groups
            self.padding, self.padding_mode = layer.padding, layer.padding_mode
            self._pad = list(layer._reversed_padding_repeated_twice)
            if input_shape is not None:
                input_shape = self._full_shape(input_shape)
        else:
            raise TypeError(f"spectral norm supports Linear and Conv1d/2d/3d, got {type(layer)}")
        self.register_buffer("_v", torch.empty(0, dtype=weight.dtype, device=weight.device))
        self.warmup = int(warmup)
        if input_shape is not None:
            self.set_input_shape(input_shape, weight)

    # ----------------------------------------------------------------------------- the operator
    def _full_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(s) for s in shape)
        if len(shape) == self._spatial_dims:
            return (self._in_channels, *shape)
        if len(shape) == self._spatial_dims + 1 and shape[0] == self._in_channels:
            return shape
        raise ValueError(
            f"input_shape {shape} must be the spatial shape ({self._spatial_dims} ints) or "
            f"(in_channels={self._in_channels}, *spatial)"
        )

    def _op(self, weight: Tensor, v: Tensor) -> Tensor:
        """The linear map v ↦ W v of the layer without bias (same padding logic as nn.ConvNd)."""
        if self._conv is None:
            return F.linear(v, weight)
        padding = self.padding
        if self.padding_mode != "zeros":
            v = F.pad(v, self._pad, mode=self.padding_mode)
            padding = 0
        return self._conv(v, weight, None, self.stride, padding, self.dilation, self.groups)

    def _adjoint(self, weight: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """Wᵀ u. For convolutions a VJP of the (linear) operator at v: it handles every stride,
        padding mode and even kernel exactly, where conv_transpose would need output_padding."""
        if self._conv is None:
            return u @ weight
        _, vjp_fn = torch.func.vjp(lambda x: self._op(weight, x), v)
        return vjp_fn(u)[0]

    # ------------------------------------------------------------------------ state and updates
    @property
    def initialized(self) -> bool:
        """Whether the input shape (hence v) is known."""
        return self._v.numel() > 0

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Shape of one input sample, or None while unknown."""
        return tuple(self._v.shape[1:]) if self.initialized else None

    @property
    def is_frozen(self) -> bool:
        """Whether updates are suspended by an enclosing :func:`frozen`."""
        return self._freeze_depth > 0

    def set_input_shape(self, shape: Sequence[int], weight: Tensor) -> None:
        """(Re-)create v for a new input shape and run ``self.warmup`` power iterations.

        A no-op if the shape is unchanged. This is the only update that also happens while frozen
        (an estimate for another shape is meaningless), so set the shape before solving.
        """
        shape = tuple(int(s) for s in shape)
        if self._conv is not None:
            shape = self._full_shape(shape)
        if self.input_shape == shape:
            return
        # A private, fixed-seed generator: reproducible, and creating v (possibly lazily, inside
        # the first forward) does not shift the global random stream of data and initialization.
        gen = torch.Generator().manual_seed(_V_SEED)
        v = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
        v = (v / torch.linalg.vector_norm(v)).to(dtype=self._v.dtype, device=self._v.device)
        self._v = v
        self.power_iteration(weight, self.warmup)

    @torch.no_grad()
    def power_iteration(self, weight: Tensor, n: int = 1) -> None:
        """Run n updates v ← WᵀW v / ‖WᵀW v‖ in place (ignores mode and freezing)."""
        weight = weight.detach()
        v = self._v
        for _ in range(n):
            w = self._adjoint(weight, self._op(weight, v), v)
            v = w / torch.linalg.vector_norm(w).clamp_min(self.eps)
        self._v.copy_(v)

    def sigma(self, weight: Tensor) -> Tensor:
        """The current estimate σ̂ = ‖W v‖₂ (differentiable in W, v held fixed)."""
        # Clone: a graph recorded now must not see later in-place updates of the buffer (a field
        # is often called again, in training mode, before the backward pass).
        return torch.linalg.vector_norm(self._op(weight, self._v.clone()))

    def forward(self, weight: Tensor) -> Tensor:
        """Return W / σ̂, first updating v if in training mode and not frozen."""
        if not self.initialized:
            raise RuntimeError(
                "input shape of the spectrally normalized convolution is unknown: "
                "call the layer once or pass input_shape"
            )
        if self.training and self._freeze_depth == 0 and self.n_power_iterations > 0:
            self.power_iteration(weight, self.n_power_iterations)
        return weight / self.sigma(weight).clamp_min(self.eps)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # A lazily shaped v (e.g. a fresh instance that never saw an input) adopts the saved shape.
        saved = state_dict.get(prefix + "_v")
        if saved is not None and saved.shape != self._v.shape:
            self._v = torch.empty(saved.shape, dtype=self._v.dtype, device=self._v.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"n_power_iterations={self.n_power_iterations}, input_shape={self.input_shape}"


def _record_input_shape(layer: nn.Module, args: tuple) -> None:
    """Forward pre-hook of a normalized convolution: take the input shape from the input.

    A module-level function that finds the parametrization through ``layer`` (no closure), so
    deep copies and pickles of the layer keep working.
    """
    x = args[0]
    for p in layer.parametrizations.weight:
        if isinstance(p, SpectralNorm):
            shape = x.shape if x.dim() == p._spatial_dims + 1 else x.shape[1:]  # unbatched input
            p.set_input_shape(shape, layer.parametrizations.weight.original)


def _rebuild_parametrized(base: type, state: dict, parametrized: dict) -> nn.Module:
    """Unpickle a parametrized layer: the plain layer first, then its parametrizations again."""
    module = base.__new__(base)
    module.__dict__.update(state)
    for name, (original, parametrizations) in parametrized.items():
        module.register_parameter(name, original)
        for p in parametrizations:
            parametrize.register_parametrization(module, name, p, unsafe=True)
    _make_picklable(module)
    return module


def _reduce_parametrized(self: nn.Module, protocol: int):
    # torch.nn.utils.parametrize gives each parametrized layer a class made on the fly, which
    # pickle cannot find by name, and forbids pickling it ("only through state_dict()"). We
    # pickle the plain layer (its original class) plus the parametrizations instead, and
    # register them again when unpickling, so torch.save(model) and spawn-based
    # multiprocessing work. Only the layers irn normalizes get this.
    state = self.__dict__.copy()
    modules = dict(state["_modules"])
    plists = modules.pop("parametrizations")
    state["_modules"] = modules
    parametrized = {name: (plist.original, list(plist)) for name, plist in plists.items()}
    return _rebuild_parametrized, (type(self).__bases__[0], state, parametrized)


def _make_picklable(module: nn.Module) -> None:
    type(module).__reduce_ex__ = _reduce_parametrized  # the per-instance class parametrize made


def _spectral_parametrizations(module: nn.Module) -> Iterator[tuple[nn.Module, SpectralNorm]]:
    """Yield (layer, parametrization) for every spectrally normalized weight in ``module``."""
    for layer in module.modules():
        if parametrize.is_parametrized(layer, "weight"):
            for p in layer.parametrizations.weight:
                if isinstance(p, SpectralNorm):
                    yield layer, p


def _is_normalized(layer: nn.Module) -> bool:
    return parametrize.is_parametrized(layer, "weight") and any(
        isinstance(p, SpectralNorm) for p in layer.parametrizations.weight
    )


def spectral_normalize(
    module: nn.Module,
    n_power_iterations: int = 1,
    input_shape: Sequence[int] | None = None,
    warmup: int = DEFAULT_WARMUP,
) -> nn.Module:
    """Spectrally normalize one ``Linear``/``Conv{1,2,3}d`` layer in place: W ← W / ‖W‖₂.

    Args:
        module: The layer; its ``weight`` gets a :class:`SpectralNorm` parametrization.
        n_power_iterations: Updates of the estimate per forward in training mode.
        input_shape: Convolutions only: spatial input shape (or ``(C, *spatial)``). If None it is
            taken from the first call; a later call with another shape re-creates the estimate.
        warmup: Power iterations run once the input shape is known.

    Returns:
        The same module.

    Raises:
        TypeError: For other layer types. ValueError: If already spectrally normalized.
    """
    if _is_normalized(module):
        raise ValueError(f"{type(module).__name__} is already spectrally normalized")
    sn = SpectralNorm(module, n_power_iterations, input_shape=input_shape, warmup=warmup)
    # unsafe: the check call of register_parametrization would fail while the shape is unknown.
    parametrize.register_parametrization(module, "weight", sn, unsafe=True)
    _make_picklable(module)
    if not isinstance(module, nn.Linear):
        module.register_forward_pre_hook(_record_input_shape)
    return module


def apply_spectral_norm(
    model: nn.Module,
    n_power_iterations: int = 1,
    input_shape: Sequence[int] | None = None,
    warmup: int = DEFAULT_WARMUP,
) -> nn.Module:
    """Apply :func:`spectral_normalize` to every Linear/Conv layer inside ``model`` (in place).

    Layers that are already spectrally normalized are left as they are. ``input_shape`` (spatial)
    is given to every convolution; if a layer sees another shape, its estimate is re-created at its
    first call, so leave it None for models whose convolutions see different sizes.
    """
    for layer in list(model.modules()):
        if isinstance(layer, (nn.Linear, *_CONVS)) and not _is_normalized(layer):
            shape = None if isinstance(layer, nn.Linear) else input_shape
            spectral_normalize(layer, n_power_iterations, shape, warmup)
    return model


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Context manager suspending power-iteration updates of every :class:`SpectralNorm` inside.

    Within it the normalized weights are fixed functions of the raw weights, so repeated calls,
    ``torch.func.jvp``/``vjp`` and line searches of a nonlinear solve see one field. Nesting (and
    overlapping) is safe: each parametrization holds a counter, incremented on entry and
    decremented on exit even when the body raises.
    """
    entered: list[SpectralNorm] = []
    try:
        for _, p in _spectral_parametrizations(module):
            p._freeze_depth += 1
            entered.append(p)
        yield module
    finally:
        for p in entered:
            p._freeze_depth -= 1


def is_frozen(module: nn.Module) -> bool:
    """Whether every spectral parametrization inside ``module`` is frozen (True if none)."""
    return all(p.is_frozen for _, p in _spectral_parametrizations(module))


def power_iterate(module: nn.Module, n: int = 1) -> int:
    """Run n power iterations on every spectral parametrization inside ``module``.

    Runs in training or eval mode (explicit warm-up or refinement); layers whose input shape is
    still unknown are skipped.

    Returns:
        The number of parametrizations updated.

    Raises:
        RuntimeError: If one of them is frozen (a solve is in progress).
    """
    count = 0
    for layer, p in _spectral_parametrizations(module):
        if p.is_frozen:
            raise RuntimeError("power_iterate called on a frozen spectral parametrization")
        if p.initialized:
            p.power_iteration(layer.parametrizations.weight.original, n)
            count += 1
    return count


@torch.no_grad()
def operator_norm(
    fn: Callable[[Tensor], Tensor],
    input_shape: Sequence[int],
    iters: int = 100,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Estimate ‖A‖₂ of a linear map ``fn = A`` by power iteration on AᵀA (adjoint by VJP).

    Args:
        fn: A linear function of a tensor of shape ``input_shape`` (e.g. a bias-free layer).
        input_shape: Shape of its input, batch dimension included if ``fn`` needs one.
        iters: Number of iterations.
        dtype: dtype of the iteration vector. device: its device.

    Returns:
        A 0-dim tensor ‖A v‖ ≤ ‖A‖₂ (a lower bound that converges to ‖A‖₂).
    """
    v = torch.randn(tuple(input_shape), dtype=dtype, device=device)
    v = v / torch.linalg.vector_norm(v)
    for _ in range(iters):
        u, vjp_fn = torch.func.vjp(fn, v)
        w = vjp_fn(u)[0]
        v = w / torch.linalg.vector_norm(w).clamp_min(1e-30)
    return torch.linalg.vector_norm(fn(v))

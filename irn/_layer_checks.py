"""What a :class:`~irn.ThetaLayer` checks and says: option validation at construction, and the
messages (with advice) of failed solves and unsupported transforms. Kept apart from the layer so
that the layer module reads as the step it computes."""

from __future__ import annotations

import math
import numbers

import torch


def real(name: str, value, what: str = "a finite number") -> float:
    """``value`` as a float if it is a real number (Python, NumPy or a one-element tensor);
    strings and bools are refused, not parsed."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    return float(value)


def finite_positive(name: str, value, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    value = real(name, value, "a finite number > 0")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def positive_int(name: str, value, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


FORWARD_ADVICE = (
    "Try: a larger max_iter (now {max_iter}), solver='newton', a smaller theta*h, or a field "
    "with a declared spectrum (irn.SpectralNormalized); on_failure='warn' goes on with the "
    "best iterate"
)
SINGULAR_ADVICE = (
    "A non-finite residual means the step may be singular (1 - theta*h*lambda = 0 for an "
    "eigenvalue lambda of dF/dy) or the field overflowed: use a smaller h or bound the field's "
    "spectrum (irn.SpectralNormalized)"
)
ADJOINT_ADVICE = (
    "Try: adjoint_solver='gmres', a larger adjoint_max_iter (now {max_iter}) or a looser "
    "adjoint_tol; on_failure='warn' goes on with the best solution"
)


COMPILED_ADJOINT = (
    "backward='adjoint' does not compile into one graph: its backward pass is a solve that runs "
    "until it converges, reading residuals back to the host. Under torch.compile(fullgraph=True) "
    "build the layer with backward='unrolled' (autograd through the fixed budget of max_iter "
    "iterations: the exact derivative of what was computed), 'phantom' or 'jfb' (inexact, "
    "irn.inexact); or compile without fullgraph, which runs the adjoint eagerly."
)

TRACING = (
    "ThetaLayer cannot be traced by torch.jit.trace (or an exporter built on it): how many "
    "solver iterations a call runs depends on its input, and a trace would freeze the count of "
    "the example input for every later one. Use the eager layer, or torch.compile, which "
    "keeps the data-dependent loop."
)

TRANSFORMS = (
    "ThetaLayer(backward='adjoint') does not support torch.func transforms (vmap, jvp, jacrev, "
    "jacfwd) or forward-mode AD: its gradient is a custom backward solve, which they would skip "
    "(a jvp would silently be zero). The layer is already batched; for Jacobians use "
    "torch.autograd.functional.jacobian or irn.stability.batch_jacobian, or build the layer with "
    "backward='unrolled'."
)


def transformed(x: torch.Tensor) -> bool:
    """Whether ``x`` is inside a torch.func transform or carries a forward-mode tangent."""
    from torch._C._functorch import is_functorch_wrapped_tensor
    from torch.autograd import forward_ad

    return bool(is_functorch_wrapped_tensor(x)) or forward_ad.unpack_dual(x).tangent is not None

"""Which precision a θ-step solves in, and the default tolerance it can reach.

A step ``y = x + Φ(x, y)`` has three precisions: the *state* (``x``, ``y`` and the solver's
arithmetic), the *compute* dtype the field evaluates ``F`` in (``x``'s dtype, or the autocast
dtype inside ``torch.autocast``), and the output, which has ``x``'s dtype.

* **Half-precision states are solved in float32.** A bfloat16 state rounds ``y`` itself to
  ``u = eps/2 ≈ 4e-3`` relative, so the residual ``y − x − Φ`` cannot be measured below about
  ``2u``: a tolerance that low stalls, and one above it (the old 8·eps = 0.0625) stops after
  0–1 iterations with up to 9 % error (measured). So for a bfloat16 or float16 ``x`` the layer
  keeps the state and the solver in float32 and evaluates the field in ``x``'s dtype (its
  parameters' dtype): the mixed-precision rule of autocast, applied to the fixed point.
* **The default tolerance** is ``max(1e-6, 8·eps(state), ½·eps(compute))``. The last term is
  the compute dtype's unit roundoff ``u``: the field's rounding puts a floor of about
  ``u·‖hF‖/‖y‖`` under the residual, below ``u`` on the benchmark fields, so ``u`` is a
  tolerance every solver reaches, and the error it leaves is within a small multiple of ``u``
  (tested against float64: at most ``2·eps(compute)`` relative, i.e. ``4u``, on contracting
  steps). For float32 and float64 outside autocast it is 1e-6, as before.
"""

from __future__ import annotations

import torch

__all__ = ["HALF", "compute_dtype", "default_tol", "evaluate_in", "state_dtype"]

HALF = (torch.float16, torch.bfloat16)
DEFAULT_TOL = 1e-6
EPS_FACTOR = 8


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solver's state and arithmetic use for an input of ``dtype``."""
    return torch.float32 if dtype in HALF else dtype


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the field computes in for the input ``x``: the autocast dtype inside an
    enabled ``torch.autocast`` region of ``x``'s device type, else ``x``'s dtype."""
    device = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def default_tol(
    dtype: torch.dtype, tol: float = DEFAULT_TOL, compute: torch.dtype | None = None
) -> float:
    """``max(tol, 8·eps(state), ½·eps(compute))``: a tolerance the solve can reach.

    ``dtype`` is the input's dtype (the state is :func:`irn.precision.state_dtype` of it) and
    ``compute`` the field's (default: ``dtype``). See the module docstring for the rule and its
    measurement.
    """
    compute = dtype if compute is None else compute
    state = state_dtype(dtype)
    return max(float(tol), EPS_FACTOR * torch.finfo(state).eps, 0.5 * torch.finfo(compute).eps)


def evaluate_in(evaluate, dtype: torch.dtype):
    """``F`` evaluated in ``dtype`` (the field's) on a wider state, returned in the state's."""

    def cast(t, y: torch.Tensor) -> torch.Tensor:
        return evaluate(t, y.to(dtype)).to(y.dtype)

    return cast

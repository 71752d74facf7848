"""What a ThetaLayer refuses, and how it says so (irn/_layer_checks.py): numbers of every real
kind accepted, strings refused rather than parsed, tracing refused rather than frozen, and
warn-once bookkeeping that does not leak into copies."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch

import irn


def _layer(**kwargs):
    return irn.ThetaLayer(irn.MLP(4, width=8), **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"h": np.float32(0.5)},
        {"h": np.float64(0.5)},
        {"theta": np.float32(0.5)},
        {"tol": np.float32(1e-5)},
        {"max_iter": np.int64(20)},
        {"adjoint_tol": np.float16(1e-3)},
        {"adjoint_max_iter": np.int32(7)},
        {"solver": "anderson", "solver_options": {"memory": np.int64(3)}},
        {"solver": "anderson", "solver_options": {"damping": np.float32(0.5)}},
        {"adjoint_solver": "gmres", "adjoint_options": {"restart": np.int16(4)}},
    ],
)
def test_numpy_scalars_are_accepted_as_the_numbers_they_are(kwargs):
    """Before: numeric options refused numpy scalars ('must be a finite number')."""
    layer = _layer(**kwargs)
    y = layer(torch.randn(3, 4))
    assert torch.isfinite(y).all()
    for key in ("tol", "max_iter", "adjoint_tol", "adjoint_max_iter"):
        if key in kwargs:
            assert type(getattr(layer, key)) in (int, float)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"h": "0.5"}, r"h must be a finite number > 0, got '0.5'"),
        ({"theta": "1"}, r"theta must be a number in \[0, 1\], got '1'"),
        ({"tol": "1e-6"}, r"tol must be a finite number > 0, got '1e-6'"),
        ({"h": True}, r"h must be a finite number"),
        ({"max_iter": np.float64(3.0)}, r"max_iter must be an int"),
    ],
)
def test_strings_and_bools_are_refused_not_parsed(kwargs, match):
    """Before: h='0.5' was accepted (float('0.5')) while every other option refused strings."""
    with pytest.raises(ValueError, match=match):
        _layer(**kwargs)


def test_jit_trace_is_refused_instead_of_freezing_the_iteration_count():
    """Before: torch.jit.trace recorded the example input's iteration count and replayed it
    for every input, silently returning unconverged steps."""
    layer = _layer(theta=1.0)
    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.trace itself
        warnings.filterwarnings("ignore", "`torch.jit.trace", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input check's host read
        with pytest.raises(RuntimeError, match="cannot be traced by torch.jit.trace"):
            torch.jit.trace(layer, torch.randn(3, 4))
        explicit = _layer(theta=0.0)  # the explicit step has no loop: a trace records it exactly
        traced = torch.jit.trace(explicit, torch.randn(3, 4), check_trace=False)
    x = torch.randn(5, 4)
    torch.testing.assert_close(traced(x), explicit(x))


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m))])
def test_a_copy_warns_for_itself(duplicate):
    """Before: the warn-once set was copied with the layer, so a copy of a layer that had
    warned never warned about its own failed solves."""
    layer = _layer(theta=1.0, h=3.0, max_iter=1)
    x = 3 * torch.randn(16, 4)
    with warnings.catch_warnings(record=True) as first:
        warnings.simplefilter("always")
        layer(x)
    assert any(issubclass(w.category, irn.ConvergenceWarning) for w in first)
    twin = duplicate(layer)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        twin(x)
    assert any(issubclass(w.category, irn.ConvergenceWarning) for w in again)

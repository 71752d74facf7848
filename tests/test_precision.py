"""Half precision and autocast (irn/precision.py): solves that reach a tolerance the dtype can
reach, with an error within a stated multiple of the dtype's rounding, against float64."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import irn
from irn.precision import compute_dtype, default_tol, state_dtype

NONLINEAR = ["auto", *irn.solvers.registry("nonlinear")]
HALF = [torch.bfloat16, torch.float16]


class Contracting(nn.Module):
    """F(y) = tanh(W y + c) with ‖W‖₂ = 1: with θh = ½ every step contracts by at least ½."""

    def __init__(self, n: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(n, n, generator=g, dtype=torch.float64)
        self.W = nn.Parameter(w / torch.linalg.matrix_norm(w, ord=2))
        self.c = nn.Parameter(0.1 * torch.randn(n, generator=g, dtype=torch.float64))

    def forward(self, t, y):
        return torch.tanh(y @ self.W.T + self.c)


def _layers(dtype, solver, seed=0, n=16):
    field = Contracting(n, seed)
    low = Contracting(n, seed).to(dtype)
    low.load_state_dict(field.state_dict())
    make = dict(theta=1.0, h=0.5, on_failure="raise")
    ref = irn.ThetaLayer(field, solver="newton", tol=1e-13, **make)
    return ref, irn.ThetaLayer(low, solver=solver, **make)


def _rel_err(y, ref):
    y, ref = y.detach().double(), ref.detach()
    return float(((y - ref).norm(dim=1) / ref.norm(dim=1)).max())


def test_the_rule():
    assert default_tol(torch.float32) == 1e-6 and default_tol(torch.float64) == 1e-6
    for half in HALF:
        assert state_dtype(half) == torch.float32
        assert default_tol(half) == torch.finfo(half).eps / 2  # the unit roundoff
    # float32 state, bfloat16 compute (autocast): the compute dtype's unit roundoff
    assert default_tol(torch.float32, compute=torch.bfloat16) == 2.0**-8
    x = torch.ones(2, 3)
    assert compute_dtype(x) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(x) == torch.bfloat16


@pytest.mark.parametrize("solver", NONLINEAR)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_half_precision_solves_to_within_two_eps_of_float64(solver, dtype, seed):
    """Before: bfloat16 stopped at tol = 0.0625 after 0-1 iterations with up to 9 % error."""
    ref_layer, layer = _layers(dtype, solver, seed)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ref = ref_layer(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, stats = layer(x.to(dtype), return_stats=True)
    assert y.dtype == dtype
    assert stats.converged and stats.forward.tol == torch.finfo(dtype).eps / 2
    assert stats.iterations >= 1  # the predictor alone is not the answer
    assert _rel_err(y, ref) <= 2 * torch.finfo(dtype).eps


@pytest.mark.parametrize("solver", NONLINEAR)
def test_autocast_tolerance_comes_from_the_compute_dtype(solver):
    """Before: under autocast the tolerance came from the float32 input (1e-6), below the
    bfloat16 field's rounding, so every solve ran all its iterations and warned."""
    ref_layer, _ = _layers(torch.float64, solver)
    layer = irn.ThetaLayer(
        Contracting(16, 0).float(), theta=1.0, h=0.5, solver=solver, on_failure="raise"
    )
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter("error")
        y, stats = layer(x.float(), return_stats=True)
    assert y.dtype == torch.float32 and stats.converged
    assert stats.forward.tol == 2.0**-8 and stats.iterations < layer.max_iter
    assert _rel_err(y, ref_layer(x)) <= 2 * torch.finfo(torch.bfloat16).eps


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_adjoint_gradients_within_a_few_eps(dtype):
    ref_layer, layer = _layers(dtype, "auto")
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads = []
    for lay, xin in ((ref_layer, x.clone()), (layer, x.to(dtype))):
        xin.requires_grad_(True)
        (lay(xin).double() ** 2).sum().backward()
        grads.append((xin.grad.double(), lay.field.W.grad.double()))
    assert layer.stats.backward_converged
    for low, ref in zip(grads[1], grads[0], strict=True):
        assert float((low - ref).norm() / ref.norm()) <= 2 * torch.finfo(dtype).eps


def test_float32_and_float64_solves_are_untouched():
    """The rule changes nothing outside half precision: the state keeps the input's dtype."""
    for dtype in (torch.float32, torch.float64):
        layer = irn.ThetaLayer(Contracting(4, 0).to(dtype), theta=1.0, h=0.5)
        _, stats = layer(torch.randn(8, 4, dtype=dtype), return_stats=True)
        assert stats.forward.tol == 1e-6

"""irn.solvers.stats: the default tolerance it re-exports, and what a failed solve says (the
failure policy's warnings, once per layer, and ConvergenceError's message)."""

from __future__ import annotations

import warnings

import pytest
import torch
from fields import TanhField

import irn
import irn.precision


def test_default_tolerance_is_unchanged_for_single_and_double_precision():
    # The rule lives in irn.precision (tested there); the solvers re-export it.
    assert irn.solvers.default_tol is irn.precision.default_tol
    assert irn.solvers.default_tol(torch.float32) == 1e-6
    assert irn.solvers.default_tol(torch.float64) == 1e-6
    assert irn.solvers.default_tol(torch.bfloat16) == 2.0**-8  # ½·eps(bfloat16), see e7796e3


def test_warnings_are_deduplicated_per_layer_and_point_at_the_caller():
    layer = irn.ThetaLayer(TanhField(4, scale=3.0), theta=1.0, h=3.0, solver="fixed-point",
                           max_iter=2)  # fmt: skip
    x = torch.randn(6, 4, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(5):
            layer(x)
    assert len(caught) == 1
    assert caught[0].filename == __file__
    assert "warned once per layer" in str(caught[0].message)
    other = irn.ThetaLayer(TanhField(4, scale=3.0), theta=1.0, h=3.0, solver="fixed-point",
                           max_iter=2)  # fmt: skip
    with pytest.warns(irn.ConvergenceWarning):
        other(x)


def test_convergence_error_names_the_step_the_residual_and_what_to_try():
    net = irn.ImplicitResNet(
        TanhField(4, scale=3.0), steps=3, interval=9.0, solver="fixed-point", max_iter=2,
        on_failure="raise",
    )  # fmt: skip
    with pytest.raises(irn.ConvergenceError, match=r"step 1 of 3") as info:
        net(torch.randn(6, 4, dtype=torch.float64))
    msg = str(info.value)
    assert "max relative residual" in msg and "Try:" in msg and "max_iter (now 2)" in msg
    assert info.value.stats is not None and not info.value.stats.converged

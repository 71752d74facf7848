"""torch.compile of θ-layers (irn/compiled.py): one graph, forward and backward, equal to eager."""

from __future__ import annotations

import warnings

import pytest
import torch

import irn
from irn.compiled import graph_breaks

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def _layer(backward, solver, spectral=False, max_iter=8):
    torch.manual_seed(0)
    field = irn.MLP(4, width=8)
    if spectral:
        field = irn.SpectralNormalized(field, alpha=-2.0, beta=0.5).eval()
    return irn.ThetaLayer(
        field, theta=1.0, h=0.5, backward=backward, solver=solver, max_iter=max_iter,
        on_failure="ignore",
    )  # fmt: skip


def _step(layer):
    return lambda x: layer(x).square().sum()


@pytest.mark.parametrize(
    "backward,solver,spectral",
    [
        ("unrolled", "fixed-point", False),
        ("unrolled", "anderson", False),
        ("jfb", "auto", False),
        ("phantom", "auto", True),
        ("unrolled", "auto", True),
    ],
)
def test_no_graph_breaks_forward_and_backward(backward, solver, spectral):
    """Before: 23-25 graph breaks (host reads in the solver loop, the stats, the checks)."""
    layer = _layer(backward, solver, spectral)
    x = torch.randn(16, 4, requires_grad=True)
    count, reasons = graph_breaks(_step(layer), x)
    assert count == 0, reasons


@pytest.mark.parametrize("backward,solver", [("unrolled", "fixed-point"), ("jfb", "anderson")])
def test_fullgraph_output_and_gradients_equal_eager(backward, solver):
    layer = _layer(backward, solver)
    x = torch.randn(16, 4)
    xe = x.clone().requires_grad_()
    eager = _step(layer)(xe)
    eager.backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(_step(layer), fullgraph=True, backend="aot_eager")
    xc = x.clone().requires_grad_()
    out = compiled(xc)
    out.backward()
    torch.testing.assert_close(out, eager, rtol=1e-6, atol=0)
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-5, atol=1e-7)
    for p, g in zip(layer.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
    assert isinstance(layer.stats.forward.history, torch.Tensor)  # nothing read back


def test_the_adjoint_is_refused_with_fullgraph_and_runs_eagerly_without():
    layer = _layer("adjoint", "auto")
    x = torch.randn(16, 4, requires_grad=True)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="does not compile into one graph"):
        torch.compile(_step(layer), fullgraph=True, backend="aot_eager")(x)
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = torch.compile(_step(layer), backend="aot_eager")(x)
    (gx,) = torch.autograd.grad(out, x)
    (ge,) = torch.autograd.grad(_step(layer)(x), x)
    torch.testing.assert_close(gx, ge)

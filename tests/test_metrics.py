"""irn.metrics.saved_bytes: the bytes an autograd graph holds, against closed forms."""

from __future__ import annotations

import torch
from torch import nn

import irn
from irn.metrics import saved_bytes


def test_closed_form_for_a_small_graph():
    lin = nn.Linear(3, 4).double()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    # tanh saves its output (5×4 float64); linear saves x and the weight, both excluded
    out, n = saved_bytes(lambda: torch.tanh(lin(x)), exclude=[x, *lin.parameters()])
    assert n == 5 * 4 * 8
    _, n_all = saved_bytes(lambda: torch.tanh(lin(x)))
    assert n_all == n + x.nbytes + lin.weight.nbytes


def test_dropped_graphs_are_not_counted():
    x = torch.randn(100, requires_grad=True)

    def work():
        for _ in range(5):
            torch.sin(x * 2.0)  # sin saves its input x * 2, freed with the dropped result
        return torch.sin(x * 3.0)

    _, n = saved_bytes(work, exclude=[x])
    assert n == 100 * 4


def test_adjoint_memory_does_not_depend_on_tolerance_and_is_repeatable():
    torch.manual_seed(0)
    field = irn.MLP(2, width=16)
    x = torch.randn(64, 2)
    keep = [*field.parameters(), x]
    counts = []
    for tol in (1e-3, 1e-6, 1e-6):
        layer = irn.ThetaLayer(field, theta=1.0, h=0.5, tol=tol)
        counts.append(saved_bytes(lambda layer=layer: layer(x), exclude=keep)[1])
    assert counts[0] == counts[1] == counts[2] > 0

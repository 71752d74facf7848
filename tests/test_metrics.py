"""irn.metrics: evaluate and accuracy on known values; saved_bytes, the bytes an autograd graph
holds, against closed forms."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from training_helpers import DT, ModeProbe

import irn
from irn.metrics import accuracy, evaluate, saved_bytes


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


# ------------------------------------------------------------------------ evaluate / accuracy
def test_evaluate_restores_modes_and_batches():
    probe, frozen = ModeProbe(), nn.Dropout(0.5)
    model = nn.Sequential(probe, frozen)
    model.train()
    frozen.eval()  # a submodule deliberately in eval mode must stay so
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]], dtype=DT)
    labels = torch.tensor([0, 1, 1, 1])
    loss, acc = evaluate(model, logits, labels, F.cross_entropy, accuracy, batch_size=3)
    assert probe.calls == [False, False]
    assert model.training and probe.training and not frozen.training
    assert acc == pytest.approx(0.75)
    assert loss == pytest.approx(float(F.cross_entropy(logits, labels)))
    assert evaluate(model, logits, labels, metric=accuracy) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="loss_fn"):
        evaluate(model, logits, labels)


def test_accuracy_on_known_logits():
    logits = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 1, 0, 2])
    assert accuracy(logits, labels) == pytest.approx(0.25)
    assert accuracy(logits, labels, k=2) == pytest.approx(0.5)
    assert accuracy(logits, labels, k=3) == pytest.approx(1.0)
    binary = torch.tensor([[1.5], [-0.2], [0.3]])
    assert accuracy(binary, torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        accuracy(logits, labels, k=4)

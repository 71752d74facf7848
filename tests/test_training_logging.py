"""fit's logger: ``logger(epoch, record)`` after every epoch, and TensorBoardLogger's event file
read back offline (tensorboard's EventAccumulator)."""

from __future__ import annotations

import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn import functional as F
from training_helpers import DT, make_net, quiet, sine_data

import irn
from irn.train import History, TensorBoardLogger, fit


def test_logger_gets_every_epochs_row_of_the_history(tmp_path):
    sine, rows = sine_data(), []
    path = tmp_path / "run.pt"

    def logger(epoch, record):
        rows.append((epoch, dict(record)))

    config = quiet(epochs=3, alpha_div=0.1, batch_size=7)
    history = fit(make_net(1.0), F.mse_loss, sine, config, val=sine, logger=logger, checkpoint=path)
    assert [epoch for epoch, _ in rows] == [0, 1, 2]
    # Each row is the history's (the lists that apply) plus the count behind `unconverged`.
    replay = History()
    for _, record in rows:
        assert record["unconverged_solves"] == 0 and record["skipped"] == 0
        replay.append(record)
    assert replay == history and "total_variation" not in rows[0][1]
    # A resumed run logs its new epochs only, numbered on.
    rows.clear()
    config.epochs = 5
    fit(make_net(1.0), F.mse_loss, sine, config, val=sine, logger=logger, resume=path)
    assert [epoch for epoch, _ in rows] == [3, 4]


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def as_logged(values) -> list[float]:
    """TensorBoard keeps scalars in float32."""
    return [float(torch.tensor(v, dtype=torch.float32)) for v in values]


def test_tensorboard_logs_loss_lr_and_solver_statistics_of_a_wrapped_network(tmp_path):
    """Solver statistics come from every ThetaLayer in the model, here one level down in an
    nn.Sequential; two iterations at a tight tolerance leave every solve unconverged."""
    torch.manual_seed(0)
    x = torch.randn(12, 3, dtype=DT)
    y = torch.sin(x)
    inner = irn.ImplicitResNet(irn.MLP(3, 8), steps=2, theta=1.0, max_iter=2, tol=1e-12,
                               on_failure="ignore").to(DT)  # fmt: skip
    model = nn.Sequential(nn.Identity(), inner)
    with TensorBoardLogger(tmp_path / "tb") as logger:
        assert not (tmp_path / "tb").exists()  # made at the first record (rank 0 only)
        history = fit(model, F.mse_loss, (x, y), quiet(epochs=3, lr_decay=0.5), val=(x, y),
                      logger=logger)  # fmt: skip
    logged = scalars(tmp_path / "tb")
    steps = [0, 1, 2]
    expected = {
        "loss/train": history.loss,
        "loss/val": history.val_loss,
        "lr": history.lr,
        "solver/forward_iterations": history.iterations,
        "solver/adjoint_iterations": history.backward_iterations,
        "solver/unconverged_fraction": history.unconverged,
        "faults/skipped_batches": history.skipped,
        "time/epoch_seconds": history.wall_time,
    }
    for tag, values in expected.items():
        assert logged[tag] == list(zip(steps, as_logged(values), strict=True)), tag
    assert history.lr == [1e-2, 5e-3, 2.5e-3] and all(it > 0 for it in history.iterations)
    # Per epoch: 12 samples × 2 steps × (forward + adjoint) solves, and every one unconverged.
    assert history.unconverged == [1.0, 1.0, 1.0]
    assert logged["solver/unconverged_solves"] == [(s, 48.0) for s in steps]
    assert not any(tag.startswith("regularizer/") for tag in logged)


def test_a_missing_tensorboard_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install 'irn\[tensorboard\]'"):
        TensorBoardLogger(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()

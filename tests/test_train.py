"""irn.train: the loop (loss, regularizers, solver stats, seeds), evaluation, checkpoints."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import irn
from irn.regularizers import total_variation
from irn.train import History, TrainConfig, accuracy, evaluate, fit, load, save

DT = torch.float64


class Field(nn.Module):
    """A small tanh MLP field F(t, y) = W2 tanh(W1 y + b1) + b2."""

    def __init__(self, dim: int = 2, width: int = 8) -> None:
        super().__init__()
        self.inner = nn.Linear(dim, width, dtype=DT)
        self.outer = nn.Linear(width, dim, dtype=DT)

    def forward(self, t, y):
        return self.outer(torch.tanh(self.inner(y)))


def make_net(theta: float = 1.0, seed: int = 0, **kwargs) -> irn.ImplicitResNet:
    """The paper's 1D setup in miniature: state (x, 0), 2 steps, a linear read-out."""
    torch.manual_seed(seed)
    kwargs.setdefault("steps", 2)
    head = nn.Linear(2, 1, dtype=DT)
    return irn.ImplicitResNet(Field(), codim=1, theta=theta, output_map=head, tol=1e-8, **kwargs)


@pytest.fixture
def sine():
    return irn.data.sine_regression(20, dtype=DT)


def quiet(**kwargs) -> TrainConfig:
    kwargs.setdefault("lr", 1e-2)
    return TrainConfig(progress=False, **kwargs)


def comparable(history: History) -> dict:
    """The history without wall-clock times, which differ between identical runs."""
    return {k: v for k, v in history.as_dict().items() if k != "wall_time"}


# ----------------------------------------------------------------------------------- the loop
@pytest.mark.parametrize("theta", [0.0, 1.0])
def test_loss_decreases(sine, theta):
    history = fit(make_net(theta), F.mse_loss, sine, quiet(epochs=40), val=sine)
    assert len(history) == 40 and len(history.val_loss) == 40 and len(history.wall_time) == 40
    assert history.loss[-1] < 0.5 * history.loss[0]
    assert history.val_loss[-1] < 0.5 * history.val_loss[0]
    assert all(t >= 0 for t in history.wall_time)


def test_plain_module_with_mini_batches(sine):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(1, 16, dtype=DT), nn.Tanh(), nn.Linear(16, 1, dtype=DT))
    history = fit(mlp, F.mse_loss, sine, quiet(epochs=30, batch_size=6))
    assert history.loss[-1] < history.loss[0]
    # Lists that do not apply stay empty: no solver, no regularizers, no validation set.
    assert history.iterations == history.backward_iterations == history.unconverged == []
    assert history.divergence == history.total_variation == history.val_loss == []
    with pytest.raises(ValueError, match="ImplicitResNet"):
        fit(mlp, F.mse_loss, sine, quiet(epochs=1, alpha_div=1.0))


def test_same_seed_is_bit_identical_and_other_seed_differs(sine):
    # Mini-batches (shuffling), Hutchinson probes and random θ all draw random numbers.
    config = dict(epochs=4, batch_size=7, alpha_div=0.1, samples=2, p=1.0)
    runs = []
    for seed in (0, 0, 1):
        net = make_net(1.0, random_theta=(0.5, 1.0))
        runs.append((net, fit(net, F.mse_loss, sine, quiet(seed=seed, **config))))
    (a, ha), (b, hb), (c, hc) = runs
    assert comparable(ha) == comparable(hb)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert comparable(ha) != comparable(hc)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_regularizer_terms_logged_only_when_weighted(sine):
    plain = fit(make_net(), F.mse_loss, sine, quiet(epochs=3))
    assert plain.divergence == [] and plain.total_variation == []
    div = fit(make_net(), F.mse_loss, sine, quiet(epochs=3, alpha_div=0.5, p=2.0))
    assert len(div.divergence) == 3 and all(math.isfinite(v) for v in div.divergence)
    assert div.total_variation == []
    # A shared field has no per-step weights to vary: the TV term is logged as 0.
    tv = fit(make_net(), F.mse_loss, sine, quiet(epochs=3, alpha_tv=1.0))
    assert tv.total_variation == [0.0, 0.0, 0.0] and tv.divergence == []


def test_total_variation_ties_per_step_fields(sine):
    def train(alpha_tv: float) -> tuple[irn.ImplicitResNet, History]:
        net = make_net(1.0, steps=3, shared=False)
        return net, fit(net, F.mse_loss, sine, quiet(epochs=15, alpha_tv=alpha_tv))

    free, _ = train(0.0)
    tied, history = train(10.0)
    assert len(history.total_variation) == 15 and history.total_variation[-1] > 0
    free_tv, tied_tv = (float(total_variation(n.fields).detach()) for n in (free, tied))
    assert 0 < tied_tv < 0.5 * free_tv


def test_solver_statistics(sine):
    implicit = fit(make_net(1.0), F.mse_loss, sine, quiet(epochs=2))
    assert len(implicit.iterations) == 2 and all(it > 0 for it in implicit.iterations)
    assert all(b is not None and b > 0 for b in implicit.backward_iterations)
    assert implicit.unconverged == [0.0, 0.0]
    explicit = fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=2))
    assert explicit.iterations == [0.0, 0.0] and explicit.backward_iterations == [None, None]
    assert explicit.unconverged == [0.0, 0.0]


def test_history_is_json_ready(sine):
    history = fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=2, alpha_div=0.1), val=sine)
    record = json.loads(json.dumps(history.as_dict(), allow_nan=False))
    assert record["loss"] == history.loss and record["backward_iterations"] == [None, None]


def test_progress_false_prints_nothing(sine, capsys):
    fit(make_net(), F.mse_loss, sine, quiet(epochs=2), val=sine)
    assert capsys.readouterr() == ("", "")
    fit(make_net(), F.mse_loss, sine, TrainConfig(epochs=2), val=sine)
    out, err = capsys.readouterr()
    assert out == "" and "fit" in err  # the bar goes to stderr only


def test_callback_stops_and_lr_decays(sine):
    seen = []

    def callback(epoch: int, history: History) -> bool:
        seen.append((epoch, len(history)))
        return epoch == 2

    config = quiet(epochs=10, lr=0.1, lr_decay=0.5, min_lr=0.02)
    history = fit(make_net(0.0), F.mse_loss, sine, config, callback=callback)
    assert seen == [(0, 1), (1, 2), (2, 3)] and len(history) == 3
    assert history.lr == pytest.approx([0.1, 0.05, 0.025])
    history = fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=6, lr=0.1, lr_decay=0.5))
    assert history.lr[-1] == pytest.approx(0.1 * 0.5**5)
    # On a plateau only: a huge lr_patience never decays.
    plateau = quiet(epochs=5, lr=0.1, lr_decay=0.5, lr_patience=100)
    assert fit(make_net(0.0), F.mse_loss, sine, plateau).lr == [0.1] * 5


def test_custom_optimizer_and_gradient_clipping(sine):
    net = make_net(0.0)
    before = torch.cat([p.detach().flatten() for p in net.parameters()])
    sgd = torch.optim.SGD(net.parameters(), lr=1.0)
    fit(net, F.mse_loss, sine, quiet(epochs=1, grad_clip=1e-3), optimizer=sgd)
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert 0 < float((after - before).norm()) <= 1e-3 * (1 + 1e-9)


def test_config_validation():
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(lr_decay=1.5)
    with pytest.raises(ValueError, match="samples"):
        TrainConfig(samples=0)


# ------------------------------------------------------------------------ evaluate / accuracy
class ModeProbe(nn.Module):
    """Identity that records the mode it was called in."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[bool] = []

    def forward(self, x):
        self.calls.append(self.training)
        return x


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


# ------------------------------------------------------------------------------- checkpoints
def test_save_load_round_trip(tmp_path, sine):
    net = make_net(1.0, seed=0)
    fit(net, F.mse_loss, sine, quiet(epochs=2))
    path = save(net, tmp_path / "net.pt", epochs=2, note="sine")
    fresh = make_net(1.0, seed=1)
    assert not torch.equal(fresh(sine[0]), net(sine[0]))
    assert load(fresh, path) == {"epochs": 2, "note": "sine"}
    net.eval()
    fresh.eval()
    assert torch.equal(fresh(sine[0]), net(sine[0]))
    # A plain torch.save(state_dict) loads too, with no metadata.
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    assert load(make_net(1.0, seed=2), tmp_path / "plain.pt") == {}


def test_save_never_overwrites_silently(tmp_path):
    path = tmp_path / "net.pt"
    first, second = make_net(seed=0), make_net(seed=1)
    save(first, path)
    with pytest.raises(FileExistsError, match="net.pt"):
        save(second, path)
    with pytest.raises(TypeError):
        save(second, path, overwrite=True, bad=object())  # not JSON: nothing is written
    probe = make_net(seed=2)
    load(probe, path)
    assert all(
        torch.equal(p, q) for p, q in zip(probe.parameters(), first.parameters(), strict=True)
    )
    save(second, path, overwrite=True)
    load(probe, path)
    assert all(
        torch.equal(p, q) for p, q in zip(probe.parameters(), second.parameters(), strict=True)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]  # no temp files left


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load(make_net(), tmp_path / "missing.pt")
    path = save(make_net(steps=2, shared=False), tmp_path / "per_step.pt")
    with pytest.raises(RuntimeError, match=r"(?s)per_step\.pt.*Unexpected key"):
        load(make_net(), path)
    wide = irn.ImplicitResNet(Field(width=9), codim=1, output_map=nn.Linear(2, 1, dtype=DT))
    with pytest.raises(RuntimeError, match=r"(?s)narrow\.pt.*size mismatch"):
        load(wide, save(make_net(), tmp_path / "narrow.pt"))

"""irn.train: the loop (loss, regularizers, solver stats, seeds), faults, evaluation,
checkpoints and bit-identical resumption."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import irn
from irn.checkpoint import CheckpointError, read_checkpoint
from irn.regularizers import total_variation
from irn.train import History, TrainConfig, TrainingError, accuracy, evaluate, fit, load, save

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
    with pytest.raises(ValueError, match="on_nonfinite"):
        TrainConfig(on_nonfinite="ignore")


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


def test_save_keeps_optimizer_and_scheduler(tmp_path, sine):
    net = make_net(0.0)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    fit(net, F.mse_loss, sine, quiet(epochs=2), optimizer=opt)
    sched.step()
    path = save(net, tmp_path / "full.pt", optimizer=opt, scheduler=sched, note="x")
    fresh = make_net(0.0, seed=1)
    opt2 = torch.optim.Adam(fresh.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    assert load(fresh, path, optimizer=opt2, scheduler=sched2) == {"note": "x"}
    assert sched2.state_dict() == sched.state_dict() and opt2.param_groups[0]["lr"] == 0.05
    moments = [(s["exp_avg"], s["exp_avg_sq"]) for s in opt.state_dict()["state"].values()]
    loaded = [(s["exp_avg"], s["exp_avg_sq"]) for s in opt2.state_dict()["state"].values()]
    assert len(moments) == len(loaded) > 0
    assert all(
        torch.equal(a, b) and torch.equal(c, d)
        for (a, c), (b, d) in zip(moments, loaded, strict=True)
    )
    # Asking for a state the file does not hold names the file and what is missing.
    bare = save(net, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match=r"bare\.pt holds no optimizer state"):
        load(fresh, bare, optimizer=opt2)


def _damage(path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_text("not a checkpoint\n")
    elif how == "list":
        torch.save([1, 2, 3], path)
    elif how == "format":
        torch.save({"format": "irn.checkpoint/99", "state_dict": {}, "extra": "{}"}, path)
    elif how == "object":
        torch.save({"weights": ModeProbe}, path)  # a class: refused by weights_only loading


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("truncated", "is truncated or damaged"),
        ("empty", r"empty \(0 bytes\)"),
        ("text", "is not a torch checkpoint"),
        ("list", "holds a list, not a dict"),
        ("format", "has format 'irn.checkpoint/99'"),
        ("object", "holds Python objects"),
    ],
)
def test_damaged_checkpoint_names_file_and_defect(tmp_path, sine, how, reason):
    net = make_net(0.0)
    path = tmp_path / "run.pt"
    fit(net, F.mse_loss, sine, quiet(epochs=1), checkpoint=path)
    _damage(path, how)
    pattern = rf"run\.pt.*{reason}"
    with pytest.raises(CheckpointError, match=pattern):
        load(make_net(0.0), path)
    with pytest.raises(CheckpointError, match=pattern):
        fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=2), resume=path)


def test_resume_needs_training_state(tmp_path, sine):
    path = save(make_net(0.0), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match=r"weights\.pt holds no training state"):
        fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=1), resume=path)


def test_checkpoint_every_and_contents(tmp_path, sine):
    path = tmp_path / "run.pt"
    held = []

    def callback(epoch, history):  # runs after the epoch's checkpoint, if one is due
        held.append(read_checkpoint(path)["training"]["epoch"] if path.exists() else None)

    history = fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=5, batch_size=7),
                  checkpoint=path, checkpoint_every=2, callback=callback)  # fmt: skip
    assert held == [None, 2, 2, 4, 5]  # every 2 epochs, and after the last one
    training = read_checkpoint(path)["training"]
    assert History.from_dict(training["history"]).loss == history.loss
    assert set(training["rng"]) >= {"torch", "shuffler", "python", "numpy"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]  # no temp files
    # A resumed run with another configuration is allowed, but not silently.
    with pytest.warns(UserWarning, match=r"different TrainConfig \(lr\)"):
        again = fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=5, batch_size=7, lr=0.5),
                    resume=path)  # fmt: skip
    assert comparable(again) == comparable(history)  # nothing left to train


# -------------------------------------------------------------------------------- resumption
def _params(net: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in net.state_dict().values()]


def _identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_resume_after_callback_stop_is_bit_identical(tmp_path, sine):
    # A plateau schedule that decays after the interruption only if it remembers the best loss
    # from before it (epoch 3's loss is above epoch 2's): the scheduler state must be restored.
    config = quiet(epochs=5, batch_size=7, lr=0.2, lr_decay=0.5, lr_patience=0)
    ref_net = make_net(random_theta=(0.5, 1.0))
    ref = fit(ref_net, F.mse_loss, sine, config)
    assert ref.lr[:4] == [0.2] * 4 and ref.lr[4] == 0.1
    path = tmp_path / "run.pt"
    first = fit(make_net(random_theta=(0.5, 1.0)), F.mse_loss, sine, config, checkpoint=path,
                callback=lambda epoch, history: epoch == 2)  # fmt: skip
    assert len(first) == 3
    net = make_net(seed=7, random_theta=(0.5, 1.0))  # other weights, other RNG state
    torch.manual_seed(123)
    resumed = fit(net, F.mse_loss, sine, config, checkpoint=path, resume=path)
    assert comparable(resumed) == comparable(ref)
    assert _identical(_params(net), _params(ref_net))


class PowerCut(Exception):
    """Stands for any crash in the middle of an epoch."""


def test_resume_after_crash_mid_epoch_is_bit_identical(tmp_path, sine):
    # Mini-batches (shuffling), Hutchinson probes, random θ, Adam moments, an lr decay: all of
    # it must continue exactly; the crash loses epoch 3's first batch, redone after resuming.
    config = quiet(epochs=5, batch_size=7, alpha_div=0.1, samples=2, lr=0.05, lr_decay=0.8)

    def run(net, loss_fn, **kwargs):
        adam = torch.optim.Adam(net.parameters(), lr=0.05)
        return fit(net, loss_fn, sine, config, optimizer=adam, **kwargs), adam

    ref_net = make_net(random_theta=(0.5, 1.0))
    ref, ref_adam = run(ref_net, F.mse_loss)
    calls = []

    def crashing(out, target):
        calls.append(1)
        if len(calls) == 3 * 3 + 2:  # epoch 3 (3 batches per epoch), batch 1
            raise PowerCut("lights out")
        return F.mse_loss(out, target)

    path = tmp_path / "run.pt"
    with pytest.raises(PowerCut) as info:
        run(make_net(random_theta=(0.5, 1.0)), crashing, checkpoint=path)
    err = info.value
    assert (err.epoch, err.batch, err.checkpoint, len(err.history)) == (3, 1, 3, 3)
    assert err.history.loss == ref.loss[:3]
    if sys.version_info >= (3, 11):
        assert "run.pt: it holds 3 epochs" in "".join(err.__notes__)
    net = make_net(seed=7, random_theta=(0.5, 1.0))
    resumed, adam = run(net, F.mse_loss, checkpoint=path, resume=path)
    assert comparable(resumed) == comparable(ref)
    assert _identical(_params(net), _params(ref_net))
    state, ref_state = adam.state_dict()["state"], ref_adam.state_dict()["state"]
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert _identical([s[key] for s in state.values()], [s[key] for s in ref_state.values()])


# ------------------------------------------------------------------------------------ faults
def _finite(net: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in net.parameters())


def test_nonfinite_target_raises_with_history_and_clean_parameters(sine):
    x, y = sine[0], sine[1].clone()
    net = make_net(1.0)
    snapshot = {}

    def poison(epoch, history):  # after epoch 1 a target turns into nan
        if epoch == 1:
            snapshot["params"] = _params(net)
            y[4] = float("nan")

    with pytest.raises(TrainingError, match=r"non-finite loss.*epoch 2, batch 0") as info:
        fit(net, F.mse_loss, (x, y), quiet(epochs=5), callback=poison)
    err = info.value
    assert (err.epoch, err.batch, len(err.history)) == (2, 0, 2)
    assert _identical(_params(net), snapshot["params"])  # nothing was stepped
    # Skipping instead: the mini-batch holding the nan is dropped every epoch.
    history = fit(net, F.mse_loss, (x, y), quiet(epochs=3, batch_size=5, on_nonfinite="skip"))
    assert history.skipped == [1, 1, 1] and _finite(net)
    assert all(math.isfinite(v) for v in history.loss)
    # Full batch, every batch non-finite: nothing can train, whatever the policy.
    with pytest.raises(TrainingError, match="every batch of epoch 0"):
        fit(net, F.mse_loss, (x, y), quiet(epochs=2, on_nonfinite="skip"))


def test_nonfinite_inputs_and_gradients(sine):
    x, y = sine[0].clone(), sine[1]
    x[3] = float("inf")
    net = make_net(1.0)
    with pytest.raises(TrainingError, match=r"non-finite inputs in epoch 0, batch \d"):
        fit(net, F.mse_loss, (x, y), quiet(epochs=2, batch_size=5))
    history = fit(net, F.mse_loss, (x, y), quiet(epochs=2, batch_size=5, on_nonfinite="skip"))
    assert history.skipped == [1, 1] and _finite(net)

    net = make_net(1.0)
    before = _params(net)
    weight = net.output_map.weight

    def kinked(out, target):  # adds 0·√0 = 0, but its gradient is 0·∞ = nan
        return F.mse_loss(out, target) + 0.0 * (weight - weight.detach()).abs().sqrt().sum()

    with pytest.raises(TrainingError, match=r"non-finite gradients in epoch 0, batch 0"):
        fit(net, kinked, sine, quiet(epochs=2))
    assert _identical(_params(net), before)
    assert all(p.grad is None for p in net.parameters())  # no nan left behind for a later step


def test_any_error_carries_history(tmp_path, sine):
    def bad_callback(epoch, history):
        if epoch == 1:
            raise KeyError("broken logger")

    with pytest.raises(KeyError) as info:
        fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=4), callback=bad_callback,
            checkpoint=tmp_path / "run.pt")  # fmt: skip
    err = info.value
    assert (len(err.history), err.epoch, err.batch, err.checkpoint) == (2, 1, None, 2)


class Pushed(nn.Module):
    """F(t, (u, r)) = (λ r u + b, 0): per sample the test equation u' = λr·u (+ b), r fixed.

    Backward Euler (θ = h = 1) solves ``(1 − λr) u = u₀ + b``; Picard iteration converges iff
    ``|λr| < 1``. With r ∈ {¼, 1} and λ = ½ every sample converges; pushing λ to 2 puts the
    r = 1 samples past θhλr = 1 (1 − θhλr = −1): their Picard iteration diverges.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lam = 0.5
        self.b = nn.Parameter(torch.zeros(1, dtype=DT))

    def forward(self, t, y):
        u, r = y[:, :1], y[:, 1:]
        return torch.cat([self.lam * r * u + self.b, torch.zeros_like(r)], dim=1)


def pushed_problem(on_failure: str):
    torch.manual_seed(0)
    u0 = torch.randn(16, 1, dtype=DT)
    rate = torch.full((16, 1), 0.25, dtype=DT)
    rate[::4] = 1.0  # 4 of 16 samples
    net = irn.ImplicitResNet(
        Pushed(), steps=1, theta=1.0, solver="fixed-point", solver_options={"damping": 1.0},
        tol=1e-4, max_iter=15, on_failure=on_failure, output_map=nn.Linear(2, 1, dtype=DT),
    )  # fmt: skip

    def push(epoch, history):
        if epoch == 1:
            net.layers[0].field.lam = 2.0

    return net, (torch.cat([u0, rate], dim=1), torch.sin(u0)), push


def test_solver_failures_warn_are_recorded_per_epoch(tmp_path):
    net, data, push = pushed_problem("warn")
    path = tmp_path / "run.pt"
    with pytest.warns(irn.ConvergenceWarning, match="did not converge"):
        history = fit(net, F.mse_loss, data, quiet(epochs=4, batch_size=4), callback=push,
                      checkpoint=path)  # fmt: skip
    # Per sample and epoch: 4 of 16 forward solves fail, all 16 adjoint (GMRES) solves converge.
    assert history.unconverged == [0.0, 0.0, 4 / 32, 4 / 32]
    assert all(b is not None and b > 0 for b in history.backward_iterations)
    assert history.skipped == [0] * 4 and _finite(net)
    saved = read_checkpoint(path)["training"]
    assert saved["epoch"] == 4 and saved["history"]["unconverged"] == history.unconverged


def test_solver_failure_raise_keeps_history_and_checkpoint(tmp_path):
    net, data, push = pushed_problem("raise")
    path = tmp_path / "run.pt"
    with pytest.raises(irn.ConvergenceError) as info:
        fit(net, F.mse_loss, data, quiet(epochs=4, batch_size=4), callback=push, checkpoint=path)
    err = info.value
    assert len(err.history) == 2 and err.epoch == 2 and err.checkpoint == 2
    assert err.history.unconverged == [0.0, 0.0]
    saved = read_checkpoint(path)
    assert saved["training"]["epoch"] == 2
    assert saved["training"]["history"]["loss"] == err.history.loss
    fresh, _, _ = pushed_problem("raise")
    load(fresh, path)  # intact and loadable
    assert _finite(fresh)


def test_infinite_learning_rate_is_refused_at_construction():
    """lr=inf was accepted, and the next batch blamed the data ('non-finite inputs')."""
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=float("nan"))


@pytest.mark.parametrize("offset", [0, 100, 4095])
def test_a_flipped_bit_inside_a_tensor_record_is_detected(tmp_path, offset):
    """One flipped bit in a tensor's bytes loaded silently (weights changed by up to 3.7e37);
    the zip archive's CRC-32 catches it, at load and at resume."""
    import struct
    import zipfile

    torch.manual_seed(0)
    net = nn.Linear(32, 32)
    path = tmp_path / "net.pt"
    save(net, path)
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    data[info.header_offset + 30 + name_len + extra_len + offset] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError, match=r"net\.pt is damaged: record '.*data/0' fails its CRC"
    ):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="CRC"):
        load(nn.Linear(32, 32), path)


def test_solver_statistics_of_a_wrapped_network_are_logged():
    """fit on nn.Sequential(ImplicitResNet(...)) logged no solver statistics."""
    x, y = torch.randn(32, 3), torch.randn(32, 3)
    torch.manual_seed(0)
    inner = irn.ImplicitResNet(irn.MLP(3, 8), steps=2, theta=1.0)
    wrapped = nn.Sequential(nn.Identity(), inner)
    history = fit(wrapped, F.mse_loss, (x, y), TrainConfig(epochs=2, progress=False))
    assert len(history.iterations) == 2 and all(i > 0 for i in history.iterations)
    assert all(b is not None and b > 0 for b in history.backward_iterations)
    torch.manual_seed(0)
    direct = irn.ImplicitResNet(irn.MLP(3, 8), steps=2, theta=1.0)
    reference = fit(direct, F.mse_loss, (x, y), TrainConfig(epochs=2, progress=False))
    assert history.iterations == reference.iterations  # the same solves, counted the same
    assert history.backward_iterations == reference.backward_iterations


def test_record_stats_collects_nested_layer_calls():
    layer = irn.ThetaLayer(irn.MLP(2), theta=1.0, h=0.5)
    with irn.layers.record_stats() as outer:
        with irn.layers.record_stats() as inner:
            layer(torch.randn(4, 2))
        layer(torch.randn(4, 2))
    assert len(inner) == 1 and len(outer) == 2
    layer(torch.randn(4, 2))
    assert len(outer) == 2  # nothing is recorded outside the block

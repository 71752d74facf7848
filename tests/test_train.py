"""irn.train: the loop (loss, regularizers, solver stats, seeds), its checks and faults, and the
public paths of the training API (checkpoints: test_checkpoint.py; loggers:
test_training_logging.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from training_helpers import DT, comparable, finite, identical, make_net, params, quiet, sine_data

import irn
from irn.checkpoint import read_checkpoint
from irn.regularizers import total_variation
from irn.train import History, TrainConfig, TrainingError, fit, load


@pytest.fixture
def sine():
    return sine_data()


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


# ------------------------------------------------------------------------------------ faults
def test_nonfinite_target_raises_with_history_and_clean_parameters(sine):
    x, y = sine[0], sine[1].clone()
    net = make_net(1.0)
    snapshot = {}

    def poison(epoch, history):  # after epoch 1 a target turns into nan
        if epoch == 1:
            snapshot["params"] = params(net)
            y[4] = float("nan")

    with pytest.raises(TrainingError, match=r"non-finite loss.*epoch 2, batch 0") as info:
        fit(net, F.mse_loss, (x, y), quiet(epochs=5), callback=poison)
    err = info.value
    assert (err.epoch, err.batch, len(err.history)) == (2, 0, 2)
    assert identical(params(net), snapshot["params"])  # nothing was stepped
    # Skipping instead: the mini-batch holding the nan is dropped every epoch.
    history = fit(net, F.mse_loss, (x, y), quiet(epochs=3, batch_size=5, on_nonfinite="skip"))
    assert history.skipped == [1, 1, 1] and finite(net)
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
    assert history.skipped == [1, 1] and finite(net)

    net = make_net(1.0)
    before = params(net)
    weight = net.output_map.weight

    def kinked(out, target):  # adds 0·√0 = 0, but its gradient is 0·∞ = nan
        return F.mse_loss(out, target) + 0.0 * (weight - weight.detach()).abs().sqrt().sum()

    with pytest.raises(TrainingError, match=r"non-finite gradients in epoch 0, batch 0"):
        fit(net, kinked, sine, quiet(epochs=2))
    assert identical(params(net), before)
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
    assert history.skipped == [0] * 4 and finite(net)
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
    assert finite(fresh)


def test_infinite_learning_rate_is_refused_at_construction():
    """lr=inf was accepted, and the next batch blamed the data ('non-finite inputs')."""
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=float("inf"))
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=float("nan"))


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


def test_an_optimizer_over_other_parameters_is_refused(sine):
    """An optimizer built for a copy of the model trained nothing, silently, for every epoch."""
    net, copy = make_net(0.0), make_net(0.0)
    before = params(net)
    stray = torch.optim.Adam(copy.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"none of them belongs to the model \(ImplicitResNet\)"):
        fit(net, F.mse_loss, sine, quiet(epochs=2), optimizer=stray)
    assert identical(params(net), before)
    # The model's parameters and some of the loss's own: allowed, and both train.
    scale = nn.Parameter(torch.ones((), dtype=DT))
    both = torch.optim.Adam([*net.parameters(), scale], lr=0.1)
    fit(net, lambda out, y: F.mse_loss(scale * out, y), sine, quiet(epochs=2), optimizer=both)
    assert not identical(params(net), before) and float(scale.detach()) != 1.0


# ------------------------------------------------------------------------------- public paths
def test_import_irn_imports_no_training_code():
    """``import irn`` (for a layer or a solver) loads neither the training package nor tqdm;
    ``irn.train`` loads them when first used. (``import torch`` itself imports tqdm when it is
    installed, through torch.hub, so the test blocks tqdm instead of looking for it.)"""
    code = (
        "import sys; sys.modules['tqdm'] = None\n"
        "import irn\n"
        "assert not {'irn.train', 'irn.training'} & set(sys.modules), sorted(sys.modules)\n"
        "irn.ThetaLayer(irn.MLP(2), theta=1.0)\n"
        "try:\n"
        "    irn.train\n"
        "except ImportError as err:\n"
        "    assert 'tqdm' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('irn.train imported without tqdm')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_public_paths_are_the_training_modules():
    from irn import checkpoint, distributed, metrics
    from irn.training import checkpoint as ckpt_module
    from irn.training import distributed as dist_module
    from irn.training import metrics as metrics_module

    for public, module in ((checkpoint, ckpt_module), (distributed, dist_module),
                           (metrics, metrics_module)):  # fmt: skip
        assert public.__all__ and all(
            getattr(public, n) is getattr(module, n) for n in public.__all__
        )
    assert set(irn.train.__all__) >= {"CheckpointError", "History", "TrainConfig", "TrainingError",
                                      "accuracy", "evaluate", "fit", "load", "save"}  # fmt: skip
    assert {"checkpoint", "distributed", "train"} <= set(irn.__all__) <= set(dir(irn))

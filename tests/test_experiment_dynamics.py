"""Chapter 7 experiments: Lotka–Volterra (paper-notes §4.2) and the stiff ODE (§4.3)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import irn
from irn.experiments import load_results, save_results, stiff
from irn.experiments import lotka_volterra as lv

TINY_LV = dict(thetas=(0.0, 1.0), window=1, epochs=2, lbfgs_evals=2, horizon=16.0,
               window_time=5.0, fine_step=0.05)  # fmt: skip
TINY_STIFF = dict(thetas=(0.0, 1.0), observe_every=(10,), n_train=4, n_val=3, epochs=2,
                  fine_step=0.02)  # fmt: skip


def _without_times(obj):
    """Results minus the measured times (the only entries allowed to differ between runs)."""
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items()
                if k not in ("wall_time", "cpu_time", "train_time")}  # fmt: skip
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def lv_results():
    return lv.run(lv.Config(**TINY_LV))


@pytest.fixture(scope="module")
def stiff_results():
    return stiff.run(stiff.Config(**TINY_STIFF))


# ----------------------------------------------------------------------------- Lotka–Volterra
def test_lv_keys_and_shapes(lv_results):
    assert set(lv_results) == {"experiment", "config", "meta", "results"}
    assert lv_results["experiment"] == "lotka_volterra"
    res = lv_results["results"]
    assert res["thetas"] == [0.0, 1.0] and res["seeds"] == [0]
    runs = res["runs"]
    assert len(runs) == 2 and all(len(row) == 1 for row in runs)
    run = runs[0][0]
    for key in ("loss_train", "loss_val", "rmse_extrapolation", "growth_rates", "median_rate",
                "amplitude_ratios", "trace_shift", "equilibrium_eigenvalues", "loss_history",
                "portrait_fine", "spectrum_learned", "spectrum_true"):  # fmt: skip
        assert key in run, key
    assert len(run["growth_rates"]) == 13  # every initial condition but the centre
    assert np.asarray(run["portrait_fine"]).shape == (3, 81, 2)
    learned = np.asarray(run["spectrum_learned"])
    assert learned.shape == (2, 7 * 25 * 2)  # 7 trajectories, every 2nd of 50 steps, 2 eigs
    assert learned.shape == np.asarray(run["spectrum_true"]).shape


def test_lv_json_round_trip_and_determinism(lv_results, tmp_path):
    path = save_results(lv_results, tmp_path / "lv.json")
    assert load_results(path) == json.loads(json.dumps(lv_results))
    again = lv.run(lv.Config(**TINY_LV))
    assert _without_times(again) == _without_times(lv_results)


@pytest.mark.parametrize(
    "bad",
    [dict(seeds=0), dict(thetas=()), dict(thetas=(1.5,)), dict(scheme="rk4"), dict(window=0),
     dict(window=51), dict(epochs=0, lbfgs_evals=0), dict(decay=0.0), dict(tol=0.0),
     dict(horizon=12.0), dict(horizon=30.1), dict(fine_step=0.3), dict(fine_step=0.03)],
)  # fmt: skip
def test_lv_bad_config(bad):
    with pytest.raises(ValueError):
        lv.Config(**bad)


def test_lv_paper_loss_formula():
    gen = torch.Generator().manual_seed(0)
    out, target = torch.randn(3, 51, 2, generator=gen), torch.randn(3, 51, 2, generator=gen)
    by_hand = sum(
        float(torch.sum((out[i, j] - target[i, j]) ** 2)) for i in range(3) for j in range(1, 51)
    ) / (50 * 3)
    assert math.isclose(float(lv.paper_loss(out, target)), by_hand, rel_tol=1e-6)


def test_lv_inverse_stability_predicts_the_centre_shift():
    # R(h·R⁻¹(r)/h) = r, and at the centre Re μ = (cos ωh − 1)/h for θ = 0, 0 for θ = ½.
    r = np.exp(0.2j * lv.OMEGA)
    for theta in (0.0, 0.25, 0.5, 1.0):
        mu = lv.inverse_stability(r, theta, 0.2)
        assert abs(irn.stability.stability_function(0.2 * mu, theta) - r) < 1e-12
    assert math.isclose(lv.inverse_stability(r, 0.0, 0.2).real,
                        (math.cos(0.2 * lv.OMEGA) - 1) / 0.2, rel_tol=1e-12)  # fmt: skip
    assert abs(lv.inverse_stability(r, 0.5, 0.2).real) < 1e-12
    assert lv.inverse_stability(r, 1.0, 0.2).real > 0.06


def test_lv_rk4_conserves_the_invariant_of_the_true_field():
    z0 = torch.tensor([[1.0, 0.7], [1.0, 1.5]], dtype=torch.float64)
    states, escape = lv.rk4(lv.LotkaVolterraField(), z0, 10.0, 0.01, every=10)
    assert states.shape == (2, 101, 2) and torch.isinf(escape).all()
    drift = (
        irn.data.lotka_volterra_invariant(states) - irn.data.lotka_volterra_invariant(z0)[:, None]
    )
    assert float(drift.abs().max()) < 1e-8


class _Spiral(torch.nn.Module):
    """ż = [[σ, −2], [2, σ]] (z − c): orbits around c (period π) whose amplitude grows like
    e^{σt}."""

    def __init__(self, sigma):
        super().__init__()
        self.A = torch.tensor([[sigma, -2.0], [2.0, sigma]], dtype=torch.float64)

    def forward(self, t, z):
        return (z - torch.tensor([1.0, 0.5], dtype=torch.float64)) @ self.A.T


@pytest.mark.parametrize("sigma", [-0.05, 0.0, 0.04])
def test_lv_growth_rate_of_a_linear_spiral(sigma):
    cfg = lv.Config(horizon=20.0, window_time=5.0, fine_step=0.01)
    z0 = torch.tensor([[1.0, 0.7], [1.0, 0.9]], dtype=torch.float64)
    states, escape = lv.rk4(_Spiral(sigma), z0, cfg.horizon, cfg.fine_step, every=20)
    rates, ratios = lv._growth_rates(states.numpy(), escape.numpy(), 0.2, cfg)
    # a linear flow maps one stretch onto the next scaled by e^{σw}: exact up to RK4's error
    assert all(abs(r - sigma) < 1e-6 for r in rates)
    expected = math.exp(sigma * (cfg.horizon - cfg.window_time))
    assert all(abs(q / expected - 1) < 1e-6 for q in ratios)


def test_lv_rk4_records_the_escape_time():
    class Growth(torch.nn.Module):
        def forward(self, t, z):
            return z

    states, escape = lv.rk4(Growth(), torch.tensor([[1.0, 0.5]], dtype=torch.float64), 4.0, 0.01)
    assert abs(float(escape[0]) - math.log(10.0)) < 0.011  # |z|_∞ = e^t passes 10
    assert float(states[0, -1].abs().max()) <= 10.0  # frozen inside the box
    # escaped at 2.3: a growth rate over [0, 1] -> [1, 2] exists (e^t: rate 1), the fate not
    rates, ratios = lv._growth_rates(
        states.numpy(), escape.numpy(), 0.01, lv.Config(horizon=12.0, window_time=1.0)
    )
    assert abs(rates[0] - 1.0) < 1e-6 and ratios == [None]
    rates, _ = lv._growth_rates(
        states.numpy(), escape.numpy(), 0.01, lv.Config(horizon=12.0, window_time=2.0)
    )
    assert rates == [None]  # [2, 4] is not inside


def test_lv_trajectory_net_returns_every_state():
    field = lv.LotkaVolterraField()
    net = lv.TrajectoryNet(field, steps=3, interval=0.6, theta=0.0)
    z0 = torch.tensor([[1.0, 0.7]], dtype=torch.float64)
    out = net(z0)
    assert out.shape == (1, 4, 2)
    z1 = z0 + 0.2 * irn.data.lotka_volterra_field(0.0, z0)
    assert torch.allclose(out[:, 1], z1, rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------- stiff ODE
def test_stiff_keys_and_shapes(stiff_results):
    assert set(stiff_results) == {"experiment", "config", "meta", "results"}
    res = stiff_results["results"]
    assert res["observation_spacing"] == [1.0]
    run = res["runs"][1][0][0]
    for key in (
        "rmse_observed",
        "rmse_between",
        "rmse_all",
        "tv_ratio",
        "max_error",
        "fine_rmse",
        "hlambda",
        "loss_history",
        "plot_discrete",
        "plot_fine",
    ):
        assert key in run, key
    assert np.asarray(run["plot_discrete"]).shape == (3, 21)
    assert np.asarray(run["plot_fine"]).shape == (3, 101)
    # the learned hλ stays in the band h·[α, β] = [−2.5, −1.5]
    assert -2.5 <= run["hlambda"][0] <= run["hlambda"][1] <= -1.5


def test_stiff_json_round_trip_and_determinism(stiff_results, tmp_path):
    path = save_results(stiff_results, tmp_path / "stiff.json")
    assert load_results(path) == json.loads(json.dumps(stiff_results))
    again = stiff.run(stiff.Config(**TINY_STIFF))
    assert _without_times(again) == _without_times(stiff_results)


@pytest.mark.parametrize(
    "bad",
    [dict(seeds=0), dict(thetas=(-0.1,)), dict(observe_every=()), dict(observe_every=(3,)),
     dict(observe_every=(0,)), dict(n_val=2), dict(alpha=-15.0, beta=-25.0), dict(beta=1.0),
     dict(knots=1), dict(epochs=0), dict(lr=0.0), dict(offset_lr=-1.0), dict(fine_step=0.03)],
)  # fmt: skip
def test_stiff_bad_config(bad):
    with pytest.raises(ValueError):
        stiff.Config(**bad)


def test_stiff_backward_euler_on_the_true_field_is_the_closed_form():
    # one-leg θ = 1: y_{k+1} = (y_k + 20h cos t_{k+1}) / (1 + 20h), per-sample start times
    cfg = stiff.Config(tol=1e-12)
    net = stiff.StiffNet(stiff.TrueField(), 1.0, cfg)
    x = torch.tensor([[0.0, 0.0], [1.2, 0.7]], dtype=torch.float64)
    out = net(x)[..., 0]
    y, t = x[:, 0].clone(), x[:, 1].clone()
    for k in range(1, 21):
        t = t + 0.1
        y = (y + 2.0 * torch.cos(t)) / 3.0
        assert torch.allclose(out[:, k], y, rtol=0, atol=1e-10)


def test_stiff_field_eigenvalues_in_the_band():
    torch.manual_seed(0)
    field = stiff.build_field(stiff.Config())
    for _ in range(5):  # a few training-mode calls move the power iteration along
        field(0.3, torch.randn(8, 1, dtype=torch.float64))
    field.eval()
    y = torch.linspace(-3, 3, 50, dtype=torch.float64)[:, None]
    t = torch.linspace(0, 4, 50, dtype=torch.float64)[:, None]
    J = irn.stability.batch_jacobian(field, t, y).reshape(-1)
    assert float(J.min()) >= -25.0 and float(J.max()) <= -15.0


def test_stiff_time_offset_interpolates():
    e = stiff.TimeOffset(5)  # knots at t = 0, 1, 2, 3, 4
    with torch.no_grad():
        e.values.copy_(torch.tensor([0.0, 2.0, -1.0, 4.0, 1.0]))
    t = torch.tensor([[0.0], [1.0], [1.5], [3.25], [4.0], [5.0]])
    expected = torch.tensor([[0.0], [2.0], [0.5], [3.25], [1.0], [1.0]])
    assert torch.allclose(e(t), expected)


def test_stiff_rk4_matches_the_exact_solution():
    y0 = torch.tensor([[0.0], [1.3]], dtype=torch.float64)
    t0 = torch.tensor([[0.0], [1.1]], dtype=torch.float64)
    fine = stiff.rk4(stiff.TrueField(), y0, t0, 0.005, every=4)
    times = t0 + 0.02 * torch.arange(fine.shape[1], dtype=torch.float64)
    exact = irn.data.stiff_ode_solution(times, t0, y0)
    assert fine.shape == (2, 101)
    assert float((fine - exact).abs().max()) < 1e-6

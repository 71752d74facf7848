"""The robustness experiment (paper-notes §4.4): configuration, results, read-outs."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from irn import experiments
from irn.experiments import robustness as rb
from irn.stability import stability_function

TINY = dict(
    seeds=1,
    thetas=(0.0, 1.0),
    noise_stds=(0.0, 0.5),
    n_train=40,
    n_test=30,
    epochs=2,
    batch_size=20,
    dim=4,
    width=8,
    spectrum_samples=3,
)
TIMINGS = ("epoch_time", "eval_time", "epoch_cpu_time", "eval_cpu_time", "train_cpu_time")


@pytest.fixture(scope="module")
def tiny():
    # One-time import costs (scikit-learn, torch's lazy optimizer imports) are not the run's.
    rb.load_data(rb.Config(**TINY))
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    # CPU time, not wall time: the test machines are shared, so wall time measures the load.
    start = time.process_time()
    results = rb.run(rb.Config(**TINY))
    return results, time.process_time() - start


def _without_timings(results: dict) -> dict:
    out = json.loads(json.dumps(results))
    out["meta"].pop("wall_time")
    out["meta"].pop("cpu_time")
    for key in TIMINGS:
        out["results"].pop(key)
    return out


def test_tiny_run_is_fast_and_complete(tiny):
    results, seconds = tiny
    assert seconds < 5.0
    assert set(results) == {"experiment", "config", "meta", "results"}
    assert results["experiment"] == "robustness"
    assert results["config"] == dataclasses.asdict(rb.Config(**TINY))
    assert {"torch", "threads", "wall_time", "processor"} <= set(results["meta"])
    res = results["results"]
    assert res["n_train"] == 40 and res["n_test"] == 30 and res["h"] == 1.0
    for split in ("train", "test"):
        for key in ("accuracy", "top2"):
            a = np.asarray(res[key][split])
            assert a.shape == (2, 1, 2)  # (θ, seed, std)
            assert ((a >= 0) & (a <= 100)).all()
        # top-2 counts every top-1 hit
        assert (np.asarray(res["top2"][split]) >= np.asarray(res["accuracy"][split])).all()
    assert np.asarray(res["contraction_max"]).shape == (2, 1, 2)  # (θ, seed, layer)
    assert (np.asarray(res["contraction_max"]) >= np.asarray(res["contraction_median"])).all()
    assert (np.asarray(res["gain_max"]) >= np.asarray(res["gain_median"])).all()
    assert np.asarray(res["gain_median"]).min() > 0
    assert res["iterations"][0] == [0.0] and res["iterations"][1][0] > 0  # θ = 0 solves nothing
    assert res["bands"] == [[-2.5, 1.0], [-2.5, 1.0]]
    for key in TIMINGS:
        assert np.asarray(res[key]).shape == (2, 1) and np.asarray(res[key]).min() > 0, key


@pytest.mark.parametrize("overrides", [dict(field="conv", dim=2, width=2), dict(codim=2)])
def test_variants_run(overrides):
    config = rb.Config(**{**TINY, "epochs": 1, "thetas": (1.0,), **overrides})
    res = rb.run(config)["results"]
    assert np.asarray(res["accuracy"]["test"]).shape == (1, 1, 2)
    assert res["unconverged_training"] == [[0.0]] and res["unconverged_eval"] == [[0.0]]


def test_run_is_deterministic(tiny):
    again = rb.run(rb.Config(**TINY))
    assert _without_timings(again) == _without_timings(tiny[0])


def test_json_round_trip(tiny, tmp_path):
    results = tiny[0]
    path = experiments.save_results(results, tmp_path / "sub" / "robustness.json")
    assert experiments.load_results(path) == json.loads(json.dumps(results))
    assert [p.name for p in path.parent.iterdir()] == ["robustness.json"]  # no temp file left
    again = experiments.load_results(path)
    assert rb.summary(again) == rb.summary(results)


@pytest.mark.parametrize(
    "field, value",
    [
        ("seeds", 0),
        ("thetas", (0.0, 1.5)),
        ("thetas", ()),
        ("noise_stds", (-0.1,)),
        ("noise_draws", 0),
        ("n_train", 0),
        ("n_train", 5000),
        ("n_test", -1),
        ("field", "cnn"),
        ("limits", "both"),
        ("beta", -3.0),
        ("r_max", 0.1),
        ("tol", 0.0),
        ("interval", 0.0),
        ("lr", -1.0),
        ("mnist", "/nonexistent/folder"),
        ("gain_std", 0.0),
    ],
)
def test_bad_values_raise(field, value):
    with pytest.raises(ValueError, match=field):
        rb.Config(**{field: value})


def test_full_overrides_are_valid_fields():
    names = {f.name for f in dataclasses.fields(rb.Config)}
    assert set(rb.FULL) <= names
    config = experiments.make_config("robustness", full=True)
    assert config.seeds >= 3 and max(config.noise_stds) == 1.0


def test_stability_band_gives_the_requested_contraction():
    config = rb.Config(limits="stability", r_min=0.3, r_max=1.5)
    for theta in (0.0, 0.5, 1.0):
        alpha, beta = rb.band(config, theta)
        r = stability_function(np.array([alpha, beta]) * config.h, theta)
        np.testing.assert_allclose(r, [0.3, 1.5], rtol=1e-12)
    # paper-notes §3.3 (h = 1): θ = 1 gives the band [-2.33, 0.33]
    np.testing.assert_allclose(rb.band(config, 1.0), (-7 / 3, 1 / 3), rtol=1e-12)


def test_block_gain_of_an_affine_block():
    # With F(y) = c·y (weights of the inner field zeroed) each step multiplies by R(hc),
    # so every image's gain is |R(hc)|^T exactly.
    config = rb.Config(dim=3, width=4)
    for theta in (0.0, 0.5, 1.0):
        net = rb.build_model(config, theta, (1, 8, 8), 10).double().eval()
        with torch.no_grad():
            for p in net.layers[0].field.field.parameters():
                p.zero_()
        x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
        c = net.layers[0].field.center  # (α + β)/2 = -0.75
        expected = abs(stability_function(c * config.h, theta)) ** config.steps
        assert rb.block_gain(net, x, 0.3, seed=0) == pytest.approx([expected] * 5, rel=1e-6)


@pytest.mark.parametrize("theta", [0.0, 0.5, 1.0])
def test_contraction_is_max_abs_R_of_the_dense_jacobian(theta):
    torch.manual_seed(1)
    config = rb.Config(dim=3, width=5, tol=1e-12)
    net = rb.build_model(config, theta, (1, 8, 8), 10).double().eval()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    c_max, c_med = rb.contraction(net, x)
    # Independently: states y_k, then the Jacobian of F at y_{k+1} (linear scheme; x for θ = 0).
    with torch.no_grad():
        _, traj = net(x, return_trajectory=True)
    field, h = net.layers[0].field, config.h
    for k in range(config.steps):
        per_sample = []
        for b in range(4):
            point = traj.states[k + (theta > 0)][b : b + 1]
            J = torch.autograd.functional.jacobian(lambda y: field(0.0, y), point)
            lam = torch.linalg.eigvals(J.reshape(3, 3))
            per_sample.append(float((1 + (1 - theta) * h * lam).abs().div(
                (1 - theta * h * lam).abs()).max()))  # fmt: skip
        assert c_max[k] == pytest.approx(max(per_sample), rel=1e-9)
        assert c_med[k] == pytest.approx(
            float(torch.tensor(per_sample, dtype=torch.float64).median()), rel=1e-9
        )


def _fake(acc: np.ndarray) -> dict:
    """Results with accuracies ``acc[θ, seed, std]`` for θ = 0, ½, 1 and stds 0, .3, .5."""
    return {
        "thetas": [0.0, 0.5, 1.0],
        "noise_stds": [0.0, 0.3, 0.5],
        "seeds": list(range(acc.shape[1])),
        "accuracy": {"train": acc.tolist(), "test": acc.tolist()},
    }


def test_trend_verdicts():
    base = np.array([100.0, 80.0, 60.0])
    spread = np.array([-1.0, 0.0, 1.0])[:, None]  # three seeds
    rising = np.stack([base + 10 * t + spread for t in (0, 1, 2)])  # (θ, seed, std)
    out = rb.trend(_fake(rising))
    assert out["verdict"] == "holds"
    assert out["gaps"] == pytest.approx([20.0, 20.0]) and out["gap_sd"] == pytest.approx([0, 0])
    assert out["spread"] == pytest.approx([np.sqrt(4 / 3)] * 2)  # unpaired: hypot of seed sds
    assert rb.trend(_fake(rising[::-1].copy()))["verdict"] == "reversed"
    flat = np.stack([base + spread] * 3)
    assert rb.trend(_fake(flat))["verdict"] == "inconclusive"
    # Paired: a small gap that every seed shows holds, a larger one with mixed signs does not.
    small = np.stack([base + spread, base + spread, base + 0.5 + spread])
    assert rb.trend(_fake(small))["verdict"] == "holds"
    mixed = np.stack([base + spread, base + spread, base + 0.5 + spread[::-1]])  # d: 2.5, .5, -1.5
    assert rb.trend(_fake(mixed))["min_gap"] == pytest.approx([-1.5, -1.5])
    assert rb.trend(_fake(mixed))["verdict"] == "inconclusive"
    # Every seed positive but the mean within two standard errors: d = 0.1, 0.1, 5.
    noisy = small.copy()
    noisy[2, :, 1:] = (base + spread)[:, 1:] + np.array([[0.1], [0.1], [5.0]])
    assert rb.trend(_fake(noisy))["verdict"] == "inconclusive"
    # The rank correlation must be positive too: θ = ½ far below θ = 0.
    dip = rising.copy()
    dip[1] -= 50
    assert rb.trend(_fake(dip))["verdict"] == "holds"  # Spearman 0.5 > 0
    dip[1] += 100
    assert rb.trend(_fake(dip))["spearman"] == pytest.approx([0.5, 0.5])
    out = rb.trend(_fake(rising), min_std=0.4)
    assert out["stds"] == [0.5] and out["gaps"] == pytest.approx([20.0])
    assert rb.trend(_fake(rising[:, :2]))["verdict"] == "inconclusive"  # two seeds: too few
    with pytest.raises(ValueError, match="std"):
        rb.trend(_fake(rising), min_std=0.9)


def test_summarize_reduces_over_seeds():
    acc = np.arange(18.0).reshape(3, 2, 3)
    s = rb.summarize(_fake(acc))
    np.testing.assert_allclose(s["mean"], acc.mean(1))
    np.testing.assert_allclose(s["std"], acc.std(1))
    np.testing.assert_allclose(s["min"], acc[:, 0])
    np.testing.assert_allclose(s["max"], acc[:, 1])


def test_spearman_closed_forms_and_constant_input():
    """The trend's rank correlation (scipy's): monotone ±1, ties averaged, constant input 0
    (without scipy's ConstantInputWarning, an error under this suite's filters)."""
    from irn.experiments.robustness_readouts import _spearman

    theta = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    assert _spearman(theta, theta**3) == pytest.approx(1.0)
    assert _spearman(theta, -theta) == pytest.approx(-1.0)
    # ranks (1, 2, 3, 4, 5) against (1.5, 1.5, 3, 4, 5): cov 1.9, variances 2 and 1.9
    assert _spearman(theta, [7, 7, 8, 9, 10]) == pytest.approx(1.9 / np.sqrt(2 * 1.9))
    assert _spearman(theta, np.full(5, 0.9)) == 0.0


def test_paper_table_shape():
    assert len(rb.PAPER_TOP1) == len(rb.PAPER_STDS)
    assert all(len(row) == len(rb.PAPER_THETAS) for row in rb.PAPER_TOP1)
    table = np.asarray(rb.PAPER_TOP1)
    assert table[0].tolist() == [100.0] * 5 and table[3].tolist() == [78.5, 87.3, 90.3, 91.9, 94.2]

"""The regularization experiment (chapter 6): a tiny run, its results, JSON, config checks."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from irn.experiments import load_results, save_results
from irn.experiments import regularization as m

TINY = dict(
    seeds=1, thetas=(0.0, 1.0), alpha_divs=(0.0, 1.0), epochs=3, width=4, depth=1,
    n_train=6, n_val=4, grid_points=5, band_points=3,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny() -> dict:
    return m.run(m.Config(**TINY))


def test_result_layout(tiny):
    assert set(tiny) == {"experiment", "config", "meta", "results"}
    assert tiny["experiment"] == "regularization"
    assert tiny["config"] == dataclasses.asdict(m.Config(**TINY))
    assert {"torch", "threads", "wall_time", "processor"} <= set(tiny["meta"])
    res = tiny["results"]
    assert res["thetas"] == [0.0, 1.0] and res["alpha_divs"] == [0.0, 1.0]
    assert res["seeds"] == [0]
    for key in ("train_loss", "val_loss", "divergence", "iterations", "reversals",
                "negative_r", "max_abs_r", "band_ratio", "unconverged"):  # fmt: skip
        table = res[key]
        assert len(table) == 2 and all(len(row) == 2 for row in table), key
        assert all(len(cell) == 1 for row in table for cell in row), key
        assert all(math.isfinite(v) for row in table for cell in row for v in cell), key
    # θ = 0 is explicit: no solver iterations; θ = 1 solves every step.
    assert res["iterations"][0] == [[0.0], [0.0]]
    assert all(v >= 1 for cell in res["iterations"][1] for v in cell)
    ex = res["examples"]
    assert len(ex["band"][1][1]["lower"]) == TINY["grid_points"]
    assert len(ex["trajectories"][0][0]) == TINY["n_train"]  # samples
    assert len(ex["trajectories"][0][0][0]) == m.Config().steps + 1  # states per sample
    assert len(ex["history"][0][1]["divergence"]) == len(ex["history"][0][1]["loss"]) > 0
    assert ex["history"][0][0]["divergence"] == []  # α_div = 0: not logged


def test_fractions_and_ratios_are_in_range(tiny):
    res = tiny["results"]
    for key in ("reversals", "negative_r", "unconverged"):
        assert all(0 <= v <= 1 for row in res[key] for cell in row for v in cell), key
    assert all(v >= 0 for row in res["band_ratio"] for cell in row for v in cell)


def test_json_round_trip(tiny, tmp_path):
    path = save_results(tiny, tmp_path / "regularization.json")
    back = load_results(path)
    assert back["results"] == tiny["results"]  # lists of floats survive exactly
    assert m.Config(**back["config"]) == m.Config(**TINY)  # tuples come back as lists
    assert json.loads(path.read_text()) == back


def test_deterministic(tiny):
    again = m.run(m.Config(**TINY))
    assert again["results"] == tiny["results"]
    assert again["config"] == tiny["config"]


def test_flow_of_a_zero_field_is_the_identity():
    # A zero field (weights and biases 0): every θ-step maps its input to itself.
    config = m.Config(**{**TINY, "thetas": (0.5,)})
    net = m.build_model(config, 0.5)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    states, iters = m.flow(net, torch.tensor([[0.3, 0.1], [-1.0, -0.2]]))
    assert torch.equal(states[-1], states[0])
    assert len(iters) == config.steps


@pytest.mark.parametrize(
    "field, value",
    [("seeds", 0), ("thetas", ()), ("thetas", (1.5,)), ("alpha_divs", (-1.0,)), ("p", -1.0),
     ("field", "resnet"), ("activation", "swish"), ("beta", -5.0), ("steps", 0),
     ("interval", 0.0), ("n_train", 1),
     ("scheme", "midpoint"), ("solver", "adam"), ("tol", 0.0), ("tol", 1.0), ("max_iter", 0),
     ("epochs", 0), ("lr", 0.0), ("band", 0.0), ("band_points", 1), ("grid_points", 1)],
)  # fmt: skip
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field):
        m.Config(**{field: value})


def test_spectral_field_keeps_its_eigenvalues_in_the_disc(tiny):
    # F^{α,β} with [α, β] = [-3, 3] and tanh: every eigenvalue of ∂F/∂y in |λ| <= 3 max σ(ϑ).
    for row in tiny["results"]["examples"]["eigenvalues"]:
        for eig in row:
            lam = torch.complex(torch.tensor(eig["real"]), torch.tensor(eig["imag"]))
            assert bool((lam.abs() < 3.0).all())


def test_unconstrained_field_runs():
    res = m.run(m.Config(**{**TINY, "field": "mlp", "thetas": (0.5,), "alpha_divs": (1.0,)}))
    assert res["results"]["iterations"][0][0][0] >= 1

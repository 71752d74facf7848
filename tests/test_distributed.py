"""irn.distributed and data-parallel irn.train.fit: two CPU ranks (gloo) under torchrun.

Run as a script (``torchrun --nproc_per_node=2 tests/test_distributed.py OUT``) this file is
the worker of :func:`test_torchrun_two_ranks_match_one_process`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import irn
from irn import distributed
from irn.train import TrainConfig, fit

DT = torch.float64


def build() -> tuple[irn.ImplicitResNet, tuple[torch.Tensor, torch.Tensor], TrainConfig]:
    """The problem both runs train: spectral-norm buffers, random θ, an uneven last batch."""
    torch.manual_seed(0)
    field = irn.SpectralNormalized(irn.MLP(2, width=8), alpha=-1.0, beta=0.5)
    net = irn.ImplicitResNet(field, codim=1, steps=2, output_map=nn.Linear(2, 1),
                             random_theta=(0.5, 1.0), tol=1e-10).to(DT)  # fmt: skip
    x = torch.linspace(-2, 2, 23, dtype=DT)[:, None]
    # 23 samples in batches of 8: the last global batch of 7 splits 4 + 3 over two ranks.
    config = TrainConfig(epochs=3, batch_size=8, lr=0.05, lr_decay=0.9, progress=False)
    return net, (x, torch.sin(2 * x)), config


def worker(out: Path) -> None:
    """One rank: train, resume one more epoch with a pre-wrapped model, skip a nan batch, and
    save what it holds (the parameters after the resumed run)."""
    assert distributed.init_from_env(), "torchrun should have set WORLD_SIZE=2"
    assert sys.modules["network_guard"].installed()
    rank = distributed.rank()
    net, data, config = build()
    config.progress = True
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):  # only rank 0 may draw the progress bar
        history = fit(net, F.mse_loss, data, config, val=data, checkpoint=out / "ddp.pt")
    config.epochs += 1
    config.progress = False
    wrapped = nn.parallel.DistributedDataParallel(net)
    resumed = fit(wrapped, F.mse_loss, data, config, resume=out / "ddp.pt")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    # A nan target that only one rank sees: both must skip that batch (or DDP would hang).
    x, y = data
    y = y.clone()
    y[-1] = float("nan")
    skipping = TrainConfig(epochs=1, batch_size=8, on_nonfinite="skip", progress=False)
    skipped = fit(wrapped, F.mse_loss, (x, y), skipping).skipped
    reduced = {
        "mean": distributed.all_reduce_mean(torch.tensor([float(rank)])).item(),
        "max": distributed.all_reduce_max(torch.tensor([float(rank)])).item(),
        "broadcast": distributed.broadcast_(torch.tensor([float(rank) + 1])).item(),
    }
    distributed.barrier()
    torch.save(
        {
            "rank": rank,
            "world_size": distributed.world_size(),
            "main": distributed.is_main(),
            "state": state,
            "after_skip": net.state_dict(),
            "history": history.as_dict(),
            "resumed": resumed.as_dict(),
            "skipped": skipped,
            "stderr": stderr.getvalue(),
            "reduced": reduced,
        },
        out / f"rank{rank}.pt",
    )
    distributed.cleanup()


# ------------------------------------------------------------------------- without a group
def test_helpers_outside_a_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() is False
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init_from_env() is False
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    distributed.barrier()  # returns at once
    values = torch.tensor([1.5, -2.0], dtype=DT)
    assert torch.equal(distributed.all_reduce_mean(values), values)
    assert torch.equal(distributed.all_reduce_sum(values), values)
    assert torch.equal(distributed.broadcast_(values.clone()), values)
    distributed.cleanup()  # nothing to leave
    monkeypatch.setenv("LOCAL_RANK", "0")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert distributed.device().type == expected


@pytest.mark.parametrize(("count", "parts"), [(7, 2), (8, 2), (5, 3), (2, 4), (100, 7)])
def test_shards_match_tensor_split(count, parts):
    expected = [(int(c[0]), int(c[-1]) + 1) if len(c) else None
                for c in torch.tensor_split(torch.arange(count), parts)]  # fmt: skip
    got = [distributed.shard(count, parts, r) for r in range(parts)]
    assert [g if g[1] > g[0] else None for g in got] == expected
    assert got[0][0] == 0 and got[-1][1] == count


# --------------------------------------------------------------------------- two ranks
def test_torchrun_two_ranks_match_one_process(tmp_path):
    # The launcher and the ranks run under the suite's network guard (its sitecustomize).
    guard = str(Path(__file__).with_name("netguard"))
    path = os.pathsep.join(p for p in (guard, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=path)
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo's traffic on the loopback interface
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           __file__, str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(r["rank"], r["world_size"], r["main"]) for r in ranks] == [(0, 2, True), (1, 2, False)]
    assert ranks[0]["reduced"] == ranks[1]["reduced"] == {"mean": 0.5, "max": 1.0, "broadcast": 1.0}
    # Replicas stay identical, spectral-norm power-iteration buffers included, and agree on
    # every logged number (reduced over ranks).
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert a.keys() == b.keys() and any("_v" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ranks[0]["history"] == ranks[1]["history"] and ranks[0]["resumed"] == ranks[1]["resumed"]
    assert "fit" in ranks[0]["stderr"] and ranks[1]["stderr"] == ""
    assert ranks[0]["skipped"] == ranks[1]["skipped"] == [1]
    a2, b2 = ranks[0]["after_skip"], ranks[1]["after_skip"]
    assert all(torch.equal(a2[k], b2[k]) and not torch.equal(a2[k], a[k]) for k in a2)
    # Rank 0 wrote the checkpoint; no temporary files are left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.pt", "rank0.pt", "rank1.pt"]

    # One process on the same global batches: the same run up to rounding.
    net, data, config = build()
    single = fit(net, F.mse_loss, data, config, val=data, checkpoint=tmp_path / "one.pt")
    history = ranks[0]["history"]
    for key in ("loss", "val_loss", "lr", "unconverged", "skipped"):
        assert history[key] == pytest.approx(getattr(single, key), rel=1e-10, abs=1e-13), key
    config.epochs += 1
    resumed = fit(net, F.mse_loss, data, config, resume=tmp_path / "one.pt")
    assert ranks[0]["resumed"]["loss"] == pytest.approx(resumed.loss, rel=1e-10)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(a[key], value, rtol=1e-10, atol=1e-12, msg=key)


if __name__ == "__main__":
    torch.set_num_threads(1)
    worker(Path(sys.argv[1]))

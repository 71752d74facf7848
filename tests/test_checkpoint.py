"""irn.checkpoint and fit's checkpoints: save/load, damaged files, bit-identical resumption,
and what a resume or a checkpoint path refuses (another optimizer class, replacing a run)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from training_helpers import (
    DT,
    Field,
    ModeProbe,
    comparable,
    identical,
    make_net,
    params,
    quiet,
    sine_data,
)

import irn
from irn.checkpoint import CheckpointError, read_checkpoint
from irn.train import History, fit, load, save


@pytest.fixture
def sine():
    return sine_data()


# ------------------------------------------------------------------------------ save / load
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
    assert identical(params(net), params(ref_net))


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
    assert identical(params(net), params(ref_net))
    state, ref_state = adam.state_dict()["state"], ref_adam.state_dict()["state"]
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert identical([s[key] for s in state.values()], [s[key] for s in ref_state.values()])


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


# ------------------------------------------------------------------------ refusals (issue 18)
def test_resuming_with_another_optimizer_class_names_both(tmp_path, sine):
    """An Adam checkpoint resumed with SGD loaded without complaint and failed at SGD's first
    step with a bare KeyError: 'momentum'."""
    path = tmp_path / "adam.pt"
    fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=1), checkpoint=path)
    net = make_net(0.0)
    sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    before = sgd.state_dict()
    pattern = r"adam\.pt holds the state of an optimizer of class Adam.*given SGD: pass an opt"
    with pytest.raises(CheckpointError, match=pattern) as info:
        fit(net, F.mse_loss, sine, quiet(epochs=2), optimizer=sgd, resume=path)
    assert "without resume=" in str(info.value)
    assert sgd.state_dict() == before  # refused before anything was loaded into it
    with pytest.raises(CheckpointError, match=r"class Adam.*given SGD"):
        load(net, path, optimizer=sgd)
    # The same class resumes, and a file written without the class name (older irn) is still
    # refused, by the options SGD misses in Adam's groups.
    fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=2), resume=path)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["optimizer_class"]
    torch.save(ckpt, path)
    with pytest.raises(
        CheckpointError, match=r"another optimizer class \(its groups lack SGD's.*momentum"
    ):
        fit(net, F.mse_loss, sine, quiet(epochs=2), optimizer=sgd, resume=path)


def test_an_existing_checkpoint_is_replaced_only_by_its_own_run(tmp_path, sine):
    """fit(checkpoint=existing) without resume= silently replaced a longer run's checkpoint
    with the new run's first epoch."""
    path = tmp_path / "long.pt"
    fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=4), checkpoint=path)
    written = path.read_bytes()
    net = make_net(0.0, seed=3)
    before = params(net)
    with pytest.raises(FileExistsError, match=r"long\.pt exists.*resume=.*overwrite=True") as info:
        fit(net, F.mse_loss, sine, quiet(epochs=1), checkpoint=path)
    assert "another checkpoint path" in str(info.value)
    with pytest.raises(FileExistsError, match="long.pt exists"):  # resuming another run
        fit(net, F.mse_loss, sine, quiet(epochs=1), checkpoint=path,
            resume=save(net, tmp_path / "other.pt"))  # fmt: skip
    assert path.read_bytes() == written and identical(params(net), before)  # nothing happened
    # Continuing the run in that file, or asking for the replacement, writes it.
    longer = fit(make_net(0.0), F.mse_loss, sine, quiet(epochs=5), checkpoint=path, resume=path)
    assert len(longer) == 5 and read_checkpoint(path)["training"]["epoch"] == 5
    fit(net, F.mse_loss, sine, quiet(epochs=1), checkpoint=path, overwrite=True)
    assert read_checkpoint(path)["training"]["epoch"] == 1

"""Interrupted experiment runs lose nothing: ``--out FILE`` keeps each finished cell in
``FILE.partial.jsonl`` (:mod:`irn.experiments.cells`), and ``--resume`` continues from there to
the results an uninterrupted run writes, times apart."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from irn import __main__ as cli
from irn.experiments import cells
from irn.experiments import regularization as reg

# Four cells each, seconds in all. Robustness reads MNIST-format files (no scikit-learn import).
ARGS = {
    "regularization": ["--seeds", "1", "--thetas", "0", "1", "--alpha-divs", "0", "1",
                       "--epochs", "3", "--width", "4", "--depth", "1", "--n-train", "6",
                       "--n-val", "4", "--grid-points", "5", "--band-points", "3"],
    "lotka_volterra": ["--seeds", "2", "--thetas", "0", "1", "--epochs", "2", "--lbfgs-evals",
                       "2", "--horizon", "16", "--window-time", "5", "--fine-step", "0.05"],
    "stiff": ["--seeds", "1", "--thetas", "0", "1", "--observe-every", "10", "5", "--n-train",
              "4", "--n-val", "3", "--epochs", "2", "--fine-step", "0.02"],
    "robustness": ["--seeds", "2", "--thetas", "0", "1", "--noise-stds", "0", "0.5",
                   "--n-train", "30", "--n-test", "20", "--epochs", "2", "--batch-size", "10",
                   "--dim", "3", "--width", "4", "--spectrum-samples", "2", "--attack-eps",
                   "0.1", "--pgd-steps", "2", "--attack-samples", "5"],
}  # fmt: skip
# Measured times: the only entries a resumed run may change.
TIMES = {"wall_time", "cpu_time", "train_time", "epoch_time", "eval_time", "epoch_cpu_time",
         "eval_cpu_time", "train_cpu_time"}  # fmt: skip


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> Path:
    """30 + 20 random 6×6 "images" with labels 0..9, in the four MNIST IDX file names."""
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("t10k", 20)):
        for kind, data in (("images-idx3", rng.integers(0, 256, (n, 6, 6))),
                           ("labels-idx1", np.arange(n) % 10)):  # fmt: skip
            head = bytes([0, 0, 8, data.ndim]) + np.asarray(data.shape, ">u4").tobytes()
            (folder / f"{split}-{kind}-ubyte").write_bytes(head + data.astype(np.uint8).tobytes())
    return folder


def _args(name: str, out: Path, mnist: Path, *extra: str) -> list[str]:
    data = ["--mnist", str(mnist)] if name == "robustness" else []
    return ["experiments", name, *ARGS[name], *data, "--threads", "1", "--out", str(out), *extra]


def _irn(args: list[str], **kwargs):
    """The command line in a fresh process (a resumed run starts in one)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "irn", *args], env=env, capture_output=True,
                          text=True, timeout=300, **kwargs)  # fmt: skip


def _interrupt_after(monkeypatch, k: int) -> None:
    """Ctrl-C right after the k-th finished cell has been written."""
    add, count = cells.Partial.add, []

    def add_then_stop(self, *args, **kwargs):
        add(self, *args, **kwargs)
        count.append(1)
        if len(count) == k:
            raise KeyboardInterrupt

    monkeypatch.setattr(cells.Partial, "add", add_then_stop)


def _without_times(obj):
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items() if k not in TIMES}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


def _first_difference(a, b, path="") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return f"{path}: keys {list(a)} vs {list(b)}"
        return next(filter(None, (_first_difference(a[k], b[k], f"{path}.{k}") for k in a)), None)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        pairs = zip(a, b, strict=True)
        return next(filter(None, (_first_difference(x, y, f"{path}[{i}]")
                                  for i, (x, y) in enumerate(pairs))), None)  # fmt: skip
    return None if json.dumps(a) == json.dumps(b) else f"{path}: {a!r} vs {b!r}"  # NaN == NaN


def _assert_same_results(a: Path, b: Path) -> None:
    """The files agree exactly (bit for bit in every number), measured times apart."""
    ra, rb = (json.loads(p.read_text(encoding="utf-8")) for p in (a, b))
    assert _first_difference(_without_times(ra), _without_times(rb)) is None
    assert set(ra["meta"]) == set(rb["meta"])  # nothing about resuming is recorded


def _cell_times(name: str, results: dict) -> list[float]:
    """A time measured inside each cell, in grid order (none in regularization)."""
    res = results["results"]
    if name == "lotka_volterra":
        return [r["train_time"] for row in res["runs"] for r in row]
    if name == "stiff":
        return [r["train_time"] for row in res["runs"] for cell in row for r in cell]
    return [t for row in res["train_cpu_time"] for t in row]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------ interrupted, then resumed
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, k", [("regularization", 2), ("lotka_volterra", 1), ("stiff", 3), ("robustness", 2)]
)
def test_resumed_run_writes_what_an_uninterrupted_one_does(name, k, mnist, tmp_path, monkeypatch):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    partial = cells.partial_path(b)
    assert cli.main(_args(name, a, mnist)) == 0
    assert not cells.partial_path(a).exists()  # removed once the results are written
    _interrupt_after(monkeypatch, k)
    assert cli.main(_args(name, b, mnist)) == 130
    assert not b.exists()
    lines = _lines(partial)
    assert len(lines) == 1 + k
    header = lines[0]
    assert header["experiment"] == name and header["argv"] == _args(name, b, mnist)[1:]
    assert set(header["environment"]) == {"irn_commit", "source", "torch", "threads", "cpu"}
    assert header["config"] == json.loads(json.dumps(header["config"]))
    proc = _irn(_args(name, b, mnist, "--resume"))  # a fresh process, as after a crash
    assert proc.returncode == 0, proc.stderr
    assert f"{k} finished cell(s)" in proc.stderr
    assert not partial.exists()
    _assert_same_results(a, b)
    if name != "regularization":  # the restored cells were read back, not run again
        key = "train_cpu_time" if name == "robustness" else "train_time"
        kept = [line["result"][key] for line in lines[1:]]
        assert _cell_times(name, json.loads(b.read_text()))[:k] == kept


def test_resume_runs_only_the_missing_cells(mnist, tmp_path, monkeypatch, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    assert cli.main(_args("regularization", a, mnist)) == 0
    # --resume without a partial file is a fresh run (and says so)
    assert cli.main(_args("regularization", c, mnist, "--resume")) == 0
    assert "no finished cells" in capsys.readouterr().err
    _assert_same_results(a, c)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 1)
        assert cli.main(_args("regularization", b, mnist)) == 130
    one, calls = reg._one, []

    def counted(config, theta, alpha_div, seed, data):
        calls.append((theta, alpha_div, seed))
        return one(config, theta, alpha_div, seed, data)

    monkeypatch.setattr(reg, "_one", counted)
    assert cli.main(_args("regularization", b, mnist, "--resume")) == 0
    assert calls == [(0.0, 1.0, 0), (1.0, 0.0, 0), (1.0, 1.0, 0)]  # not (0.0, 0.0, 0)
    _assert_same_results(a, b)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_results(mnist, tmp_path):
    """SIGKILL at any moment: the partial file on disk is always complete, never torn."""
    args = ["--seeds", "3", "--thetas", "0", "0.5", "1", "--epochs", "8"]  # 9 cells
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert cli.main(_args("lotka_volterra", a, mnist, *args)) == 0
    partial = cells.partial_path(b)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "irn", *_args("lotka_volterra", b, mnist, *args)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen(command, env=env, **quiet)
    try:
        finished, deadline = 0, time.monotonic() + 240
        while finished < 2 and proc.poll() is None and time.monotonic() < deadline:
            if partial.exists():  # read while it is being rewritten: every version is whole
                lines = _lines(partial)
                assert lines[0]["format"] == cells.FORMAT
                finished = len(lines) - 1
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed: make it longer"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not b.exists()
    assert 2 <= len(_lines(partial)) - 1 < 9
    resumed = _irn(_args("lotka_volterra", b, mnist, *args, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_results(a, b)


# ------------------------------------------------------------------------------ refusals
@pytest.fixture
def interrupted(mnist, tmp_path, monkeypatch) -> Path:
    """The --out of a regularization run stopped after one cell (its partial file exists)."""
    out = tmp_path / "r.json"
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 1)
        assert cli.main(_args("regularization", out, mnist)) == 130
    return out


def _refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_a_partial_file_is_not_overwritten_without_resume(interrupted, mnist, capsys):
    before = cells.partial_path(interrupted).read_bytes()
    err = _refused(_args("regularization", interrupted, mnist), capsys)
    assert "1 finished cell(s)" in err and "pass --resume" in err and "delete" in err
    assert cells.partial_path(interrupted).read_bytes() == before
    assert not interrupted.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (["--thetas", "0"], "thetas: [0.0, 1.0] there, [0.0] here"),
        (["--epochs", "4"], "epochs: 3 there, 4 here"),
    ],
)
def test_resume_refuses_other_arguments(interrupted, mnist, capsys, change, message):
    before = cells.partial_path(interrupted).read_bytes()
    err = _refused(_args("regularization", interrupted, mnist, *change, "--resume"), capsys)
    assert message in err and "python -m irn experiments regularization" in err
    assert "delete it" in err
    assert cells.partial_path(interrupted).read_bytes() == before


def test_resume_refuses_another_experiment(interrupted, mnist, capsys):
    err = _refused(_args("stiff", interrupted, mnist, "--resume"), capsys)
    assert "experiment 'regularization', not 'stiff'" in err


def test_resume_refuses_other_threads(interrupted, mnist, capsys):
    try:
        err = _refused(_args("regularization", interrupted, mnist, "--threads", "2",
                             "--resume"), capsys)  # fmt: skip
    finally:
        torch.set_num_threads(1)
    assert "threads 1" in err and "this run has 2" in err and "--threads" in err


@pytest.mark.parametrize(
    "key, value, fix",
    [("irn_commit", "0123abc", "check out that commit"), ("source", "0" * 16, "irn's source")],
)
def test_resume_refuses_other_code(interrupted, mnist, capsys, key, value, fix):
    path = cells.partial_path(interrupted)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    header["environment"][key] = value
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    err = _refused(_args("regularization", interrupted, mnist, "--resume"), capsys)
    assert f"{key} {value!r}" in err and fix in err


def test_resume_refuses_a_damaged_file(interrupted, mnist, capsys):
    path = cells.partial_path(interrupted)
    path.write_text(path.read_text() + '{"cell": {"theta"\n')
    assert "is damaged" in _refused(_args("regularization", interrupted, mnist, "--resume"),
                                    capsys)  # fmt: skip


@pytest.mark.parametrize("out", [None, "-"])
def test_resume_needs_an_output_file(out, capsys):
    argv = ["experiments", "stiff", "--resume"] + ([] if out is None else ["--out", out])
    assert "--resume needs --out FILE" in _refused(argv, capsys)


# ------------------------------------------------------------------------- the cell runner
def test_run_cells_hands_back_what_a_resumed_run_reads(tmp_path):
    out = cells.run_cells([{"s": 0}, {"s": 1}], lambda c: {"t": (c["s"], 0.1), 3: float("inf")})
    assert out == [{"t": [0, 0.1], "3": float("inf")}, {"t": [1, 0.1], "3": float("inf")}]
    with pytest.raises(TypeError, match='cell {"s": 0}.*not JSON-serializable'):
        cells.run_cells([{"s": 0}], lambda c: {"x": object()}, desc="toy")
    calls = []
    twice = cells.run_cells([{"s": 0}, {"s": 0}], lambda c: calls.append(c) or [len(calls)])
    assert twice == [[1], [1]] and twice[0] is not twice[1] and len(calls) == 1
    stray = {"cell": {"s": 9}, "wall": 1.0, "cpu": 1.0, "result": 0}
    partial = cells.Partial(tmp_path / "x.json.partial.jsonl", {}, {'{"s": 9}': stray})
    with pytest.raises(cells.PartialError, match="outside this run's grid"):
        cells.run_cells([{"s": 0}], lambda c: 0, partial=partial)


# ----------------------------------------------------------------------- make results
@pytest.fixture
def make_results(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "make_results", Path(__file__).resolve().parents[1] / "scripts" / "make_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_results", module)  # dataclasses look it up
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "BOOK", tmp_path / "book" / "results")
    monkeypatch.setattr(module, "_dirty", lambda: "")
    (tmp_path / "book" / "results").mkdir(parents=True)
    return module


def test_make_results_ignores_leftovers_of_interrupted_runs(make_results):
    assert make_results.PARTIAL == cells.SUFFIX
    ours = ["?? book/results/stiff.json.partial.jsonl", "?? book/results/.stiff.json.ab12.tmp"]
    theirs = [" M book/results/stiff.json", "?? irn/new.py", "?? book/stiff.json.partial.jsonl"]
    assert all(make_results._ours(line) for line in ours)
    assert not any(make_results._ours(line) for line in theirs)


def test_make_results_refuses_or_resumes_interrupted_runs(make_results, monkeypatch):
    (make_results.BOOK / "stiff.json.partial.jsonl").write_text("{}\n")
    monkeypatch.setattr(sys, "argv", ["make_results.py", "--only", "stiff"])
    with pytest.raises(SystemExit, match=r"book/results/stiff.json.partial.jsonl; pass --resume"):
        make_results.main()
    started = []
    monkeypatch.setattr(make_results, "_run", lambda job: (started.append(job), (job, 0.0))[1])
    monkeypatch.setattr(sys, "argv", ["make_results.py", "--only", "stiff", "--resume"])
    make_results.main()
    assert [(j.stem, j.resume) for j in started] == [("stiff", True)]

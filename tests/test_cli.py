"""``python -m irn experiments``: the registry, options generated from a Config, exit codes."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest

from irn import __main__ as cli
from irn import experiments

TINY_ARGS = [
    "--seeds", "1", "--thetas", "0", "1", "--noise-stds", "0", "0.5", "--n-train", "30",
    "--n_test", "20", "--epochs", "1", "--dim", "3", "--width", "4", "--spectrum-samples", "2",
]  # fmt: skip


def _write_idx(path, data: np.ndarray) -> None:
    """An IDX file (the MNIST format): zero bytes, type 0x08 (ubyte), ndim, sizes, data."""
    header = bytes([0, 0, 8, data.ndim]) + np.asarray(data.shape, ">u4").tobytes()
    path.write_bytes(header + data.astype(np.uint8).tobytes())


def _fake_mnist(folder) -> None:
    """40 + 20 random 6×6 "images" with labels 0..9, in the four MNIST file names."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 20)):
        _write_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 6, 6)))
        _write_idx(folder / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)


def _irn(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run(
        [sys.executable, "-m", "irn", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


# ------------------------------------------------------------------------------- subprocess
def test_help_lists_every_experiment():
    proc = _irn("experiments", "--help")
    assert proc.returncode == 0, proc.stderr
    for name in ("regularization", "lotka_volterra", "stiff", "robustness"):
        assert f"  {name} " in proc.stdout
    assert experiments.describe("robustness") in proc.stdout


def test_bad_option_is_one_line_and_exit_2():
    proc = _irn("experiments", "robustness", "--no-such-option", "3")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and "--no-such-option" in proc.stderr


def test_tiny_run_writes_json(tmp_path):
    # Local MNIST-format files: exercises --mnist, and skips importing scikit-learn (slow).
    _fake_mnist(tmp_path)
    out = tmp_path / "robustness.json"
    args = [*TINY_ARGS, "--mnist", str(tmp_path), "--threads", "1", "--out", str(out)]
    proc = _irn("experiments", "robustness", *args)
    assert proc.returncode == 0, proc.stderr
    results = experiments.load_results(out)
    assert results["experiment"] == "robustness"
    assert results["config"]["n_train"] == 30 and results["config"]["thetas"] == [0.0, 1.0]
    assert results["results"]["n_train"] == 30 and results["results"]["n_test"] == 20
    assert results["meta"]["threads"] == 1
    assert "top-1 accuracy" in proc.stdout  # the summary table
    assert "Traceback" not in proc.stderr


def test_torchrun_two_ranks_match_one_process(tmp_path):
    # DDP on CPU (gloo): rank 0 alone prints and writes, and the numbers match one process.
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    if not os.path.exists(torchrun):
        pytest.skip("torchrun not installed next to this Python")
    _fake_mnist(tmp_path)
    args = [*TINY_ARGS, "--mnist", str(tmp_path), "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "irn", "experiments",
         "robustness", *args, "--out", str(tmp_path / "ddp.json")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.count("top-1 accuracy") == 1  # one summary: rank 0 only
    a = experiments.load_results(tmp_path / "ddp.json")["results"]
    b = experiments.run("robustness", **experiments.load_results(tmp_path / "ddp.json")["config"])
    b = json.loads(json.dumps(b["results"]))  # tuples to lists, as in the file
    assert a["accuracy"] == b["accuracy"]
    for key in ("final_loss", "contraction_max", "gain_median"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, err_msg=key)


# -------------------------------------------------------------------------------- in process
@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "missing command"),
        (["train"], "unknown command"),
        (["experiments"], "missing experiment"),
        (["experiments", "nope"], "unknown experiment 'nope'"),
    ],
)
def test_command_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "x"], "argument --epochs: not an integer: 'x'"),
        (["--thetas", "0", "2"], "thetas must be"),  # the Config's ValueError
        (["--n-train", "0"], "n_train must be >= 1"),
        (["--thetas"], "expected at least one argument"),
        (["--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_bad_values_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["experiments", "robustness", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_experiment_help_shows_fields_defaults_and_full(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["experiments", "robustness", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "--noise-stds FLOAT [FLOAT ...]" in out
    assert "--clamp, --no-clamp" in out
    assert "(default: 3; --full: 5)" in out  # seeds
    assert "std of the input noise" in out  # the field's comment
    assert "--noise_stds" not in out  # the underscore alias works but is not listed
    assert "--resume continue an interrupted run" in out and ".partial.jsonl" in out


@dataclass
class _Toy:
    """A toy config.

    flag: documented in the docstring
    """

    seeds: int = 2  # number of seeds
    scale: float = 0.5  # a number; 100% documented
    # a comment above a field with a trailing comment is not its help
    name: str = "a"  # a string
    # a comment block above a field
    # on two lines
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None  # optional
    flag: bool = False
    values: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")


def _toy_module() -> types.ModuleType:
    module = types.ModuleType("toy")
    module.Config, module.FULL, module.DESCRIPTION = _Toy, {"seeds": 9}, "a toy"
    return module


def test_field_comments():
    helps = cli._field_comments(_Toy)
    assert helps["seeds"] == "number of seeds"
    assert helps["scale"] == "a number; 100%% documented"  # escaped for argparse
    assert helps["name"] == "a string"
    assert helps["sizes"] == "a comment block above a field on two lines"
    assert helps["flag"] == "documented in the docstring"
    assert helps["values"] == ""


def test_options_parse_every_field_type():
    parser, fields = cli._experiment_parser("toy", _toy_module())
    assert fields == ["seeds", "scale", "name", "sizes", "limit", "flag", "values"]
    args = parser.parse_args(
        ["--seeds", "4", "--sizes", "3", "4", "5", "--limit", "none", "--flag", "--scale", "2"]
    )
    got = {k: getattr(args, k) for k in fields if hasattr(args, k)}
    assert got == {"seeds": 4, "sizes": [3, 4, 5], "limit": None, "flag": True, "scale": 2.0}
    assert parser.parse_args(["--limit", "7", "--no-flag"]).limit == 7
    assert not hasattr(parser.parse_args([]), "seeds")  # only given options override


def test_full_then_overrides(monkeypatch):
    module = _toy_module()
    monkeypatch.setitem(sys.modules, "irn.experiments._toy", module)
    monkeypatch.setitem(experiments.REGISTRY, "_toy", "irn.experiments._toy")
    assert experiments.make_config("_toy").seeds == 2
    assert experiments.make_config("_toy", full=True).seeds == 9
    assert experiments.make_config("_toy", full=True, seeds=3).seeds == 3
    with pytest.raises(ValueError, match="unknown config field"):
        experiments.make_config("_toy", epochs=3)
    with pytest.raises(ValueError, match="seeds must be"):
        experiments.make_config("_toy", seeds=0)


def test_registry():
    assert experiments.names() == ["regularization", "lotka_volterra", "stiff", "robustness"]
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.load("nope")
    from irn.experiments import robustness

    assert experiments.describe("robustness") == robustness.DESCRIPTION
    meta = experiments.meta(12.3456)
    assert meta["wall_time"] == 12.346 and {"torch", "threads", "cpu", "processor"} <= set(meta)


def test_results_io_errors(tmp_path):
    with pytest.raises(ValueError, match="lack"):
        experiments.save_results({"experiment": "x"}, tmp_path / "a.json")
    with pytest.raises(TypeError):
        experiments.save_results(
            {"experiment": "x", "config": {}, "meta": {}, "results": {"f": object()}},
            tmp_path / "b.json",
        )
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON file"):
        experiments.load_results(tmp_path / "c.json")
    (tmp_path / "d.json").write_text(json.dumps({"results": 1}))
    with pytest.raises(ValueError, match="not an experiment results file"):
        experiments.load_results(tmp_path / "d.json")


def test_saved_json_keeps_number_lists_on_one_line(tmp_path):
    results = {
        "experiment": "x",
        "config": {"t": (0.0, 0.5)},
        "meta": {},
        "results": {"grid": [[1, 2], [3, 4]], "nan": float("nan"), "rows": [{"a": [1.5]}]},
    }
    path = experiments.save_results(results, tmp_path / "r.json")
    text = path.read_text()
    assert '"t": [0.0, 0.5]' in text and '"grid": [[1, 2], [3, 4]]' in text
    back = experiments.load_results(path)
    assert back["results"]["rows"] == [{"a": [1.5]}] and back["results"]["nan"] != 0
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not private like a mkstemp file
    experiments.save_results(results, path)  # overwriting works
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_unwritable_out_is_refused_before_the_run(tmp_path):
    """An --out that cannot be written fails at once (exit 2, one line), not after the run."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    a_file = tmp_path / "file.txt"
    a_file.write_text("")
    cases = [(tmp_path, "is a folder"), (a_file / "r.json", "is not a folder")]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((locked / "r.json", "not writable"))
    try:
        for out, why in cases:
            proc = _irn("experiments", "robustness", "--seeds", "1", "--out", str(out))
            assert proc.returncode == 2 and why in proc.stderr, proc.stderr
            assert proc.stderr.count("\n") == 1
    finally:
        locked.chmod(0o700)

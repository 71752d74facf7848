"""The paper's experiments, each one module with a config dataclass and a ``run`` function.

An experiment ``irn/experiments/<name>.py`` defines ``Config`` (a dataclass whose defaults are
the reduced run the book executes live, with ``seeds`` among its fields), ``FULL`` (the field
overrides of the paper-scale run), ``DESCRIPTION`` (one line) and
``run(config, *, progress=False, partial=None) -> dict`` returning JSON-serializable
``{"experiment", "config", "meta", "results"}``. Its grid of cells (θ, seed, ...) runs through
``irn.experiments.cells.run_cells``, which keeps each finished cell in ``partial`` (the
command line's ``--out FILE`` + ``.partial.jsonl``), so that ``--resume`` continues an
interrupted run. The registry below maps names to modules and imports a module only when it is
used, so listing the experiments imports none of them. ``python -m irn experiments`` is the
command line for the same registry.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

from ..atomic import write_atomic

__all__ = [
    "REGISTRY",
    "describe",
    "fetch",
    "finish",
    "load",
    "load_results",
    "make_config",
    "meta",
    "names",
    "run",
    "save_results",
]

# name -> module path (paper-notes sections in each module's docstring).
REGISTRY: dict[str, str] = {
    "regularization": "irn.experiments.regularization",  # §4.1, chapter 6
    "lotka_volterra": "irn.experiments.lotka_volterra",  # §4.2, chapter 7
    "stiff": "irn.experiments.stiff",  # §4.3, chapter 7
    "robustness": "irn.experiments.robustness",  # §4.4, chapter 8
}
_KEYS = ("experiment", "config", "meta", "results")


def names() -> list[str]:
    """The registered experiment names, in registry order."""
    return list(REGISTRY)


def _module_path(name: str) -> str:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; choose one of {names()}") from None


def describe(name: str) -> str | None:
    """The experiment's one-line ``DESCRIPTION``, read from its source without importing it
    (``None`` if the module is not installed or defines no literal ``DESCRIPTION``)."""
    spec = importlib.util.find_spec(_module_path(name))
    if spec is None or spec.origin is None or not os.path.isfile(spec.origin):
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "DESCRIPTION" and node.value is not None:
            try:
                return str(ast.literal_eval(node.value))
            except ValueError:  # not a literal: only an import would tell
                return None
    return None


def load(name: str) -> ModuleType:
    """Import and return the module of experiment ``name``.

    Raises:
        ValueError: If ``name`` is not registered.
        ModuleNotFoundError: If the module is registered but not (yet) written.
    """
    return importlib.import_module(_module_path(name))


def make_config(name: str, *, full: bool = False, **overrides: Any):
    """``Config`` of experiment ``name``: the defaults, then ``FULL`` if ``full``, then
    ``overrides``. The Config validates the values (ValueError)."""
    module = load(name)
    fields = {f.name for f in dataclasses.fields(module.Config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"{name}: unknown config field(s) {unknown}; known: {sorted(fields)}")
    values = {**(dict(module.FULL) if full else {}), **overrides}
    return module.Config(**values)


def run(
    name: str, config=None, *, full: bool = False, progress: bool = False, partial=None, **overrides
):
    """Run experiment ``name`` and return its results dict.

    ``config`` (a ``Config`` of that experiment) or else the defaults (``FULL`` on top if
    ``full``) is updated with ``overrides`` (field values) before the run. ``partial`` (a
    ``irn.experiments.cells.Partial``) keeps the finished cells on disk and restores them.
    """
    module = load(name)
    if config is None:
        config = make_config(name, full=full, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    return module.run(config, progress=progress, partial=partial)


def check_config(config: Any, checks: list[tuple[str, bool, str]]) -> None:
    """Raise ``ValueError`` naming the first failed ``(field, ok, rule)`` of a Config."""
    for name, ok, rule in checks:
        if not ok:
            raise ValueError(f"{name} must be {rule}, got {getattr(config, name)!r}")


def envelope(name: str, config: Any, info: dict[str, Any], results: dict[str, Any]) -> dict:
    """The JSON layout every experiment returns: name, config, ``info`` (from :func:`meta`)
    and results."""
    return {
        "experiment": name,
        "config": dataclasses.asdict(config),
        "meta": info,
        "results": results,
    }


def meta(wall_time: float) -> dict[str, Any]:
    """What an experiment records about the machine and code that ran it (its ``"meta"``
    key). Call it when the run starts, so that ``irn_commit`` is the code that ran, and set
    ``wall_time`` and ``cpu_time`` at the end (:func:`finish`)."""
    import torch  # deferred: keeps listing experiments cheap

    commit, clean = _git_commit()
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "wall_time": round(float(wall_time), 3),
        "cpu_time": None,
        "processor": platform.processor() or platform.machine(),
        "cpu": _cpu_model(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "irn_commit": commit,
        "clean": clean,
    }


def finish(info: dict[str, Any], start: float, start_cpu: float, partial=None) -> dict[str, Any]:
    """``info`` with the run's wall time (since ``time.perf_counter()`` was ``start``) and
    this process's CPU time (since ``time.process_time()`` was ``start_cpu``), plus, in a
    resumed run, the times the cells restored from ``partial`` took when they ran."""
    import time

    wall = getattr(partial, "restored_wall", 0.0)
    cpu = getattr(partial, "restored_cpu", 0.0)
    return {
        **info,
        "wall_time": round(time.perf_counter() - start + wall, 3),
        "cpu_time": round(time.process_time() - start_cpu + cpu, 3),
    }


def _git_commit() -> tuple[str | None, bool | None]:
    """``(commit, clean)`` of the irn checkout that ran: its HEAD (with ``+dirty`` when
    irn/ has uncommitted or untracked changes) and whether it had none. ``(None, None)``
    when irn is not in a git checkout of its own, e.g. installed into site-packages inside
    some other repository: the caller's commit would describe other code."""
    package = Path(__file__).resolve().parents[1]  # .../irn
    root = package.parent
    git = ["git", "-C", str(root)]
    try:
        top = subprocess.run(
            [*git, "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=10
        )
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
            return None, None
        tracked = subprocess.run(
            [*git, "ls-files", "--error-unmatch", "irn/__init__.py"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        if tracked.returncode != 0:  # a repository that does not hold irn's source
            return None, None
        head = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "irn"], capture_output=True, text=True,
            timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, None
    if head.returncode != 0:
        return None, None
    clean = not dirty.stdout.strip()
    return head.stdout.strip() + ("" if clean else "+dirty"), clean


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _to_json(obj: Any, indent: int = 0) -> str:
    """JSON with one line per list of scalars: readable and diff-friendly for result tables."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {_to_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        flat = json.dumps(list(obj), allow_nan=True)
        if len(flat) <= 100 or not any(isinstance(v, (dict, list, tuple)) for v in obj):
            return flat
        return "[\n" + ",\n".join(inner + _to_json(v, indent + 1) for v in obj) + "\n" + pad + "]"
    if isinstance(obj, float) and not math.isfinite(obj):
        return json.dumps(obj)  # NaN/Infinity: what Python's json reads back
    return json.dumps(obj)


def save_results(results: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``results`` as JSON to ``path`` atomically (temporary file, then rename), so an
    interrupted write never leaves a truncated file; creates the parent folder.

    Raises:
        ValueError: If a required key (experiment, config, meta, results) is missing.
        TypeError: If the dict is not JSON-serializable (checked before anything is written).
    """
    missing = [k for k in _KEYS if k not in results]
    if missing:
        raise ValueError(f"results lack the key(s) {missing}")
    text = _to_json(results) + "\n"
    json.loads(text)  # the writer above must produce valid JSON (Python's dialect)
    return write_atomic(path, text)


def fetch(path: str | os.PathLike[str], *, repo: str, ref: str, source: str | None = None) -> Path:
    """``path`` if it exists, else a copy downloaded from the repository (a notebook opened on
    Colab has no checkout): ``https://raw.githubusercontent.com/<owner>/<name>/<ref>/<source>``
    with ``source`` the file's path in the repository (default: ``book/`` + ``path``).

    A failed download prints one line that says what to do and stops the cell
    (``SystemExit``), instead of a traceback.
    """
    import urllib.error
    import urllib.request

    path = Path(path)
    if path.exists():
        return path
    owner_name = repo.rstrip("/").removesuffix(".git").split("github.com/")[-1]
    source = source or f"book/{path.as_posix()}"
    url = f"https://raw.githubusercontent.com/{owner_name}/{ref}/{source}"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        urllib.request.urlretrieve(url, path)
    except (OSError, urllib.error.URLError) as err:
        if path.exists():
            path.unlink()
        raise SystemExit(
            f"could not download {url} ({err}); run the notebook in a clone of {repo} "
            f"(git checkout {ref}), or save that file as {path}"
        ) from None
    return path


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results file written by :func:`save_results`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not JSON or lacks a required key.
    """
    with open(path, encoding="utf-8") as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a JSON file ({err})") from err
    if not isinstance(results, dict) or any(k not in results for k in _KEYS):
        raise ValueError(f"{path}: not an experiment results file (needs keys {list(_KEYS)})")
    return results

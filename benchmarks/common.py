"""Timing, tables and result files shared by the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from irn.atomic import write_atomic

RESULTS = Path(__file__).parent / "results"


#: The device every benchmark runs on (``python -m benchmarks --device``).
DEVICE = torch.device("cpu")
#: Where results go instead of ``results/<device>.json`` (``python -m benchmarks --out``).
OUT: Path | None = None


def set_out(path: str | Path | None) -> Path | None:
    """Write results to ``path`` instead of :data:`RESULTS` (a trial run leaves the committed
    ``results/<device>.json`` alone); ``None`` restores the default."""
    global OUT
    OUT = None if path is None else Path(path)
    return OUT


def set_device(name: str) -> torch.device:
    """Run the benchmarks on ``name`` ("cpu" or "cuda"); refuses a device that is absent."""
    global DEVICE
    if name not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be 'cpu' or 'cuda', got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    DEVICE = torch.device(name)
    return DEVICE


def machine() -> dict:
    """What produced the numbers: CPU model, cores, threads, torch build, and the GPU if used."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": DEVICE.type,
    }
    if DEVICE.type == "cuda":
        out.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    return out


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def median_time(
    fn: Callable[[], object], repeats: int, warmup: int = 1, min_sample: float = 0.02
) -> float:
    """Median wall time of one ``fn()`` call in seconds over ``repeats`` samples.

    Each sample times as many back-to-back calls as fill ``min_sample`` seconds (calibrated
    in the warm-up), so sub-millisecond calls are not drowned in timer and scheduler noise.
    """
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync()
    once = (time.perf_counter() - start) / max(warmup, 1)
    number = max(1, int(min_sample / max(once, 1e-9)))
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def side_by_side(
    fns: dict[str, Callable[[], object]], rounds: int, repeats: int = 3
) -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved rounds.

    Every round times each function once (a :func:`median_time` of ``repeats`` samples), so a
    slow spell of a shared machine hits all of them alike; ratios of the returned medians are
    the side-by-side ratios the targets are stated in.
    """
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(median_time(fn, repeats))
    return {k: statistics.median(v) for k, v in samples.items()}


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, min_sample: float = 0.02
) -> dict[str, float]:
    """Median seconds per call of each function over ``rounds`` interleaved rounds.

    Like :func:`side_by_side`, but each function is warmed up and calibrated once (the number
    of back-to-back calls that fill ``min_sample`` seconds), and every round then times one
    sample of each: a call of a tenth of a second costs ``rounds + 1`` calls, not ``4·rounds``.
    """
    number = {}
    for name, fn in fns.items():
        sync()
        start = time.perf_counter()
        fn()
        sync()
        number[name] = max(1, int(min_sample / max(time.perf_counter() - start, 1e-9)))
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            for _ in range(number[name]):
                fn()
            sync()
            samples[name].append((time.perf_counter() - start) / number[name])
    return {k: statistics.median(v) for k, v in samples.items()}


def table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of ``rows`` (dicts) with the given column order."""

    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def results_path(quick: bool = False) -> Path:
    """``results/<device>.json`` (``<device>-quick.json`` for a quick run), or :data:`OUT`."""
    if OUT is not None:
        return OUT
    return RESULTS / f"{DEVICE.type}{'-quick' if quick else ''}.json"


def write(name: str, payload: dict, quick: bool = False) -> Path:
    """Store one benchmark's results under ``name`` in :func:`results_path`, with the machine.

    The file holds every benchmark of one device; running a subset replaces only its entries.
    """
    path = results_path(quick)
    data = json.loads(path.read_text()) if path.exists() else {}
    data["machine"] = machine()
    data[name] = {"machine": machine(), **payload}
    return write_atomic(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def write_meta(info: dict, quick: bool = False) -> Path:
    """Store the run's ``meta`` (irn commit and whether the tree was clean, machine, wall and
    CPU time, command) in :func:`results_path`: what `make results` needs to reproduce it."""
    path = results_path(quick)
    data = json.loads(path.read_text()) if path.exists() else {}
    data["meta"] = info
    return write_atomic(path, json.dumps(data, indent=1, sort_keys=False) + "\n")

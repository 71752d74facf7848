"""Regenerate every committed experiment result at one clean commit: ``make results``.

Each result is one ``python -m irn experiments NAME --full ... --out FILE`` run (the command
is listed below, so anyone can rerun one by hand). Jobs run in two processes, one torch
thread each (the machine's two cores), longest first; the matched-compute controls start once
the run they take their epoch budget from has finished. Every file then gets a
``meta.spot_check``: the one cell (θ, seed) that ``tests/test_results.py`` recomputes at full
size, and the tolerances it must match within.

Refuses to run on a dirty tree: a result records the commit that made it, and ``+dirty``
would make it unreproducible. ``--only NAME...`` reruns a subset (by output stem). Every run
keeps its finished cells in ``book/results/<stem>.json.partial.jsonl`` until it ends;
``--resume`` continues the runs an interruption left there (at the same commit), and without it
such files are refused up front.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book" / "results"

EPS = ["--attack-eps", "0.02", "0.05", "0.1"]
DIGITS = ["--full", *EPS]
# The paper's MNIST network at its own widths (8/16/32 channels), 1000 training images, the
# same number of optimizer steps as the paper (100 epochs of 100 against 200 of 200).
MNIST = ["--full", "--data", "mnist", "--field", "conv", "--dim", "8", "--thetas", "0", "0.5",
         "1", "--epochs", "100", "--batch-size", "100", *EPS,
         "--attack-samples", "1000"]  # fmt: skip
# Matched fit: train every network until its epoch loss reaches this (epochs: the cap).
FIT = {"robustness_fit": ("0.01", "200")}

# Tolerances of the CI spot check (relative for losses and times, points for accuracies).
ROBUST_TOL = {"accuracy_points": 2.5, "loss_rel": 0.2}


@dataclass
class Job:
    stem: str  # output file book/results/<stem>.json
    args: list[str]  # after `python -m irn experiments`
    seconds: float  # rough cost on one core, for scheduling (longest first)
    spot: dict  # meta.spot_check
    after: str | None = None  # a job whose result this one's arguments need ("*": all others)
    extra: list[str] = field(default_factory=list)
    out: str = ""  # the result file, relative to the repository (default book/results/<stem>)
    resume: bool = False  # continue from the cells an interrupted run kept (--resume)


def _robust(stem: str, args: list[str], seconds: float, theta: float, after=None) -> Job:
    spot = {"overrides": {"thetas": [theta], "seeds": 1}, "theta": theta, "seed": 0,
            "tolerance": ROBUST_TOL}  # fmt: skip
    return Job(stem, ["robustness", *args], seconds, spot, after)


JOBS = [
    Job("regularization", ["regularization", "--full"], 600,
        {"overrides": {"thetas": [1.0], "alpha_divs": [1.0], "seeds": 1}, "theta": 1.0,
         "alpha_div": 1.0, "seed": 0, "tolerance": {"loss_rel": 0.2}}),
    Job("stiff", ["stiff", "--full"], 430,
        {"overrides": {"thetas": [1.0], "seeds": 1}, "theta": 1.0, "seed": 0,
         "tolerance": {"loss_rel": 0.2}}),
    Job("lotka_volterra", ["lotka_volterra", "--full"], 200,
        {"overrides": {"thetas": [1.0], "seeds": 1}, "theta": 1.0, "seed": 0,
         "tolerance": {"loss_rel": 0.2}}),
    _robust("robustness", DIGITS, 450, 1.0),
    _robust("robustness_stability", [*DIGITS, "--limits", "stability"], 450, 0.0),
    _robust("robustness_contractive", [*DIGITS, "--explicit", "contractive", "--thetas", "0"],
            40, 0.0),
    _robust("robustness_plain", [*DIGITS, "--explicit", "plain", "--thetas", "0"], 40, 0.0),
    _robust("robustness_fit", [*DIGITS, "--target-loss", FIT["robustness_fit"][0], "--epochs",
                               FIT["robustness_fit"][1]], 600, 0.0),
    _robust("robustness_compute", [*DIGITS, "--thetas", "0"], 150, 0.0, after="robustness"),
    # Inexact gradients (irn.inexact) against robustness.json's exact θ = 1 runs, same seeds.
    _robust("robustness_jfb", [*DIGITS, "--thetas", "1", "--backward", "jfb"], 90, 1.0),
    _robust("robustness_phantom", [*DIGITS, "--thetas", "1", "--backward", "phantom"], 90, 1.0),
    _robust("robustness_mnist", MNIST, 900, 0.0),
    _robust("robustness_mnist_stability", [*MNIST, "--limits", "stability"], 900, 0.0),
    _robust("robustness_mnist_contractive", [*MNIST, "--explicit", "contractive", "--thetas",
                                             "0"], 100, 0.0),
    _robust("robustness_mnist_plain", [*MNIST, "--explicit", "plain", "--thetas", "0"], 100,
            0.0),
    # Matched fit needs no MNIST run: at 100 epochs every network's training loss is below
    # 1e-3 (chapter 8 shows it from robustness_mnist.json).
    _robust("robustness_mnist_compute", [*MNIST, "--thetas", "0"], 400, 0.0,
            after="robustness_mnist"),
    # Timings need a quiet machine: the benchmarks run last, alone (they write cpu.json with
    # its meta themselves; the spot check does not rerun timings).
    Job("cpu", ["-m", "benchmarks"], 500, {}, after="*", out="benchmarks/results/cpu.json"),
]  # fmt: skip


def matched_epochs(reference: Path) -> int:
    """Epochs that give θ = 0 the training CPU time θ = 1 used in ``reference`` (means over
    seeds): θ = 1's whole-fit CPU time over θ = 0's CPU time per epoch."""
    res = json.loads(reference.read_text())["results"]
    thetas = res["thetas"]
    one = res["train_cpu_time"][thetas.index(1.0)]
    zero = res["epoch_cpu_time"][thetas.index(0.0)]
    return max(1, round((sum(one) / len(one)) / (sum(zero) / len(zero))))


PARTIAL = ".partial.jsonl"  # irn.experiments.cells.SUFFIX (not imported: no torch here)


def _ours(line: str) -> bool:
    """A ``git status --porcelain`` line for an interrupted run's leftovers in book/results:
    its partial file, or a temporary file of an atomic write killed midway."""
    path = Path(line[3:].strip().strip('"'))
    name = path.name
    temporary = name.startswith(".") and name.endswith(".tmp")
    return path.parent.as_posix() == "book/results" and (name.endswith(PARTIAL) or temporary)


def _dirty() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return "\n".join(line for line in out.stdout.splitlines() if not _ours(line))


def _partial(job: Job) -> Path:
    return BOOK / f"{job.stem}.json{PARTIAL}"


def _run(job: Job) -> tuple[Job, float]:
    if job.out:  # the benchmark suite: its own command line and result file
        print(f"start {job.stem}: python {' '.join(job.args)}", flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, *job.args], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        return job, time.perf_counter() - start
    out = BOOK / f"{job.stem}.json"
    cmd = [sys.executable, "-m", "irn", "experiments", *job.args, *job.extra, "--threads", "1",
           "--out", str(out), *(["--resume"] if job.resume else [])]  # fmt: skip
    print(f"start {job.stem}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    data = json.loads(out.read_text())
    data["meta"]["spot_check"] = job.spot
    data["meta"]["command"] = "python -m irn experiments " + " ".join(job.args + job.extra)
    sys.path.insert(0, str(ROOT))
    from irn.experiments import save_results

    save_results(data, out)
    return job, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="output stems to rerun (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes (default 2)")
    parser.add_argument("--resume", action="store_true",
                        help="continue interrupted runs from their finished cells")  # fmt: skip
    args = parser.parse_args()
    if _dirty():
        sys.exit("make results: the tree has uncommitted changes; commit them first, so the "
                 "results record a commit that reproduces them (git status)")  # fmt: skip
    jobs = [j for j in JOBS if not args.only or j.stem in args.only]
    left = [str(_partial(j).relative_to(ROOT)) for j in jobs if _partial(j).exists()]
    if left and not args.resume:
        sys.exit(f"make results: interrupted runs left finished cells in {', '.join(left)}; "
                 "pass --resume (python scripts/make_results.py --resume) to continue them, "
                 "or delete the files to start afresh")  # fmt: skip
    for job in jobs:
        job.resume = args.resume
    pending = sorted(jobs, key=lambda j: -j.seconds)
    done: set[str] = {j.stem for j in JOBS if j not in jobs}
    running = {}
    with ThreadPoolExecutor(args.jobs) as pool:
        while pending or running:
            others = {j.stem for j in pending} | {j.stem for j in running.values()}
            ready = [j for j in pending if j.after is None or j.after in done
                     or (j.after == "*" and others == {j.stem})]  # fmt: skip
            while ready and len(running) < args.jobs:
                job = ready.pop(0)
                pending.remove(job)
                if job.after not in (None, "*"):  # matched compute: θ = 1's CPU time
                    epochs = matched_epochs(BOOK / f"{job.after}.json")
                    job.extra = ["--epochs", str(epochs)]
                running[pool.submit(_run, job)] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                job, seconds = fut.result()
                running.pop(fut)
                done.add(job.stem)
                print(f"done  {job.stem}: {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()

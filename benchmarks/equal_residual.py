"""Benchmark 7: the forward solve at equal accuracy, irn against torchdeq at its best.

Every method is judged by one measure, the final true relative residual of its answer
(:func:`~benchmarks.reference.relative_residual`, computed after the solve in the answer's
dtype, the same way for every method),

    ρ(y) = max_i ‖y_i − x_i − h F(y_i)‖ / max(‖y_i‖, ‖x_i‖)      (backward Euler, θ = h = 1),

and timed at the cheapest setting that reaches ``ρ ≤ R`` in every sample, for the targets
``R`` in :data:`TARGETS`. A method's own tolerance is searched on the geometric grid
``R·GRID`` (100R down to R/1000), loosest first: the first tolerance whose answer meets ``R``
is its cheapest setting (fewer iterations, for every method here). A method that exhausts its
iteration cap (:data:`MAX_ITER`) without meeting its own tolerance ends the search, since a
tighter tolerance repeats the same capped iterations; it, and a method that never meets ``R``
on the grid, is reported as not reaching ``R``, with the best residual it got.

The methods: irn's default (``solver="auto"``) and every registered nonlinear solver forced,
each at its defaults, on the plain and on the declared field; torchdeq's solvers and dampings of
:data:`~benchmarks.forward.TORCHDEQ`, which see the plain field (torchdeq reads no declared
spectrum, so its rows serve both). torchdeq at its defaults (Anderson, its own stopping rule at
tolerance ``R``, not searched) is an extra labelled row, outside the "best".

``R = 1e-5`` is solved in float32, the dtype of the other benchmarks. ``R = 1e-7`` is solved in
float64: in float32 the rounding of ``ρ`` itself leaves every method between 4e-8 and 9e-8 here
(measured), too close to 1e-7 to tell solvers apart.

Timing: the search times one sample of each method's cheapest setting (as many calls as fill
20 ms). irn's default, and the methods within :data:`SCREEN` times the fastest of their group
(irn on the plain field, irn on the declared field, torchdeq), are then timed together in
interleaved rounds (:func:`~benchmarks.common.interleaved`, medians); the others, which cannot
be a group's best, keep that one sample (the ``timing`` column says which). The headline ratio
is torchdeq's best time over irn's best, per field; the issue's target is at least 1.5.

Result keys (``equal_residual`` in the result file): ``targets`` (R -> dtype), ``grid``,
``max_iter``, ``quick``; ``rows``, one per method and case: ``problem``, ``size``, ``state``,
``batch``, ``R``, ``dtype``, ``method``, ``family`` ("irn", "torchdeq", "torchdeq defaults"),
``field`` ("plain", "declared"; "any" for torchdeq), ``reached`` (ρ ≤ R), ``residual`` (ρ of
the chosen answer; if not reached, the lowest seen), ``why`` (if not reached), ``tries``; if
reached also ``tol`` (the method's own tolerance chosen), ``tol / R``, ``grid_edge`` (the
loosest grid point already met R), ``iterations``, ``evaluations``, ``sample_ms`` (the first
sample), ``ms`` and ``timing`` (how ``ms`` was measured); ``summary``, one per problem, size, R
and field: ``irn_best``, ``irn_best_ms``, ``irn_best_evaluations``, ``irn_auto_ms``,
``torchdeq_best``, ``torchdeq_best_ms``, ``torchdeq_best_evaluations``, ``vs_torchdeq_best``
(torchdeq's best ms / irn's best), ``auto_vs_torchdeq_best`` (/ irn's default),
``torchdeq_defaults_ms``, ``torchdeq_defaults_residual``, ``goal``, ``goal_met``,
``not_reached`` (the methods of that field and torchdeq's that never met R).
"""

from __future__ import annotations

import math
import time

import torch

import irn
from irn.solvers import registry

from .common import interleaved, sync, table, write
from .forward import TORCHDEQ
from .problems import dims, problem
from .reference import relative_residual, torchdeq_solve

TARGETS = {1e-5: torch.float32, 1e-7: torch.float64}  # R -> the dtype it is solved in
GRID = (100.0, 30.0, 10.0, 3.0, 1.0, 1 / 3, 1 / 10, 1 / 30, 1 / 100, 1 / 300, 1 / 1000)
MAX_ITER = 100
GOAL = 1.5  # the target: torchdeq's best / irn's best
DEFAULTS = "torchdeq anderson (defaults, own rule at tol R)"
SCREEN = 3.0  # slower than this many times its group's fastest: one sample, no rounds


def irn_method(field, solver: str):
    """``make(tol) -> run(x) -> (y, info)`` for irn's layer with ``solver`` at ``tol``."""

    def make(tol: float):
        layer = irn.ThetaLayer(field, theta=1.0, h=1.0, solver=solver, tol=tol,
                               max_iter=MAX_ITER, on_failure="ignore")  # fmt: skip

        def run(x):
            with torch.no_grad():
                y = layer(x)
            s = layer.stats
            return y, {"iterations": s.iterations, "evaluations": s.evaluations,
                       "met_own": s.converged}  # fmt: skip

        return run

    return make


def torchdeq_method(field, name: str, **kwargs):
    """``make(tol) -> run(x) -> (y, info)`` for torchdeq's solver ``name`` at ``tol``."""

    def make(tol: float):
        return lambda x: torchdeq_solve(name, field, x, tol, max_iter=MAX_ITER, **kwargs)

    return make


def _timed(run, x):
    """``run(x)`` and its wall time in seconds."""
    sync()
    start = time.perf_counter()
    out = run(x)
    sync()
    return out, time.perf_counter() - start


def _sample(run, x, seconds: float, min_sample: float = 0.02) -> float:
    """Seconds per call of ``run(x)``, averaged over enough calls to fill ``min_sample``
    (``seconds``: one call's time, already measured; a call that long is not repeated)."""
    number = int(min_sample / max(seconds, 1e-9))
    if number < 2:
        return seconds
    sync()
    start = time.perf_counter()
    for _ in range(number):
        run(x)
    sync()
    return (time.perf_counter() - start) / number


def search(make, field, x, target: float, grid=GRID) -> dict:
    """The loosest tolerance ``target·g`` (``g`` in ``grid``, loosest first) whose answer has
    ``relative_residual ≤ target``, with that answer's residual, counts and the time of one
    sample (``reached``); else ``reached=False``, why, and the best residual seen.
    ``make(tol)`` returns ``run(x)``."""
    best, tries = math.inf, 0
    for factor in grid:
        tol = target * factor
        run = make(tol)
        (y, info), seconds = _timed(run, x)
        res = relative_residual(field, x, y)
        best, tries = min(best, res), tries + 1
        if res <= target:
            if tries == 1:  # the method's first call may carry one-time costs: time another
                seconds = _timed(run, x)[1]
            seconds = _sample(run, x, seconds)
            return {"reached": True, "tol": tol, "tol / R": factor, "residual": res,
                    "iterations": info["iterations"], "evaluations": info["evaluations"],
                    "tries": tries, "grid_edge": factor == grid[0],
                    "sample_ms": 1e3 * seconds}  # fmt: skip
        if not info["met_own"]:
            why = f"iteration cap ({MAX_ITER}) before its own tol {tol:.1e}"
            return {"reached": False, "why": why, "residual": best, "tries": tries}
    why = f"no tolerance down to {target * grid[-1]:.0e} gave ρ ≤ R"
    return {"reached": False, "why": why, "residual": best, "tries": tries}


def _methods(kind: str, size: str, dtype) -> dict[str, tuple[str, str, object, object]]:
    """label -> (family, field name, field, make)."""
    out = {}
    for declared in (False, True):
        field, _ = problem(kind, size, dtype=dtype, declared=declared)
        name = "declared" if declared else "plain"
        for solver in ["auto", *registry("nonlinear")]:
            label = f"irn {solver} [{name}]"
            if solver == "auto":  # say what the default picks for this field
                label = f"irn auto: {irn.ThetaLayer(field, theta=1.0).method()} [{name}]"
            out[label] = ("irn", name, field, irn_method(field, solver))
        if not declared:
            for deq, kw in TORCHDEQ:
                label = f"torchdeq {deq}" + "".join(f" {k}={v}" for k, v in kw.items())
                out[label] = ("torchdeq", "any", field, torchdeq_method(field, deq, **kw))
    return out


def _contenders(rows: list[dict]) -> set[str]:
    """irn's default, and the methods whose first sample took at most :data:`SCREEN` times the
    fastest of their group (irn on the plain field, irn on the declared field, torchdeq): the
    only ones whose time can decide a ratio, so the only ones timed in rounds. torchdeq's
    defaults row counts as torchdeq but sets no baseline unless it reached the target."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if "sample_ms" in r:
            key = "torchdeq" if r["family"].startswith("torchdeq") else f"irn {r['field']}"
            groups.setdefault(key, []).append(r)
    out = {r["method"] for r in rows if r["method"].startswith("irn auto") and r["reached"]}
    for mine in groups.values():
        fastest = min((r["sample_ms"] for r in mine if r["reached"]), default=math.inf)
        out |= {r["method"] for r in mine if r["sample_ms"] <= SCREEN * fastest}
    return out


def measure(kind: str, size: str, target: float, rounds: int) -> list[dict]:
    """Search every method on one problem at one target, then time the contenders together in
    interleaved rounds; the others keep their first sample (``timing`` says which)."""
    dtype = TARGETS[target]
    plain, x = problem(kind, size, dtype=dtype, declared=False)
    n, batch = dims(size)
    base = {"problem": kind, "size": size, "state": n, "batch": batch, "R": target,
            "dtype": str(dtype).replace("torch.", "")}  # fmt: skip
    rows, runs = [], {}
    for label, (family, name, field, make) in _methods(kind, size, dtype).items():
        row = {**base, "method": label, "family": family, "field": name}
        try:
            found = search(make, field, x, target)
        except Exception as err:  # a baseline that crashes is reported, not hidden
            rows.append({**row, "reached": False, "why": f"error: {repr(err)[:80]}"})
            continue
        rows.append({**row, **found})
        if found["reached"]:
            runs[label] = make(found["tol"])
    # torchdeq at its defaults: Anderson with its own stopping rule at tol R, not searched.
    runs[DEFAULTS] = torchdeq_method(plain, "anderson")(target)
    (y, info), seconds = _timed(runs[DEFAULTS], x)
    seconds = _sample(runs[DEFAULTS], x, _timed(runs[DEFAULTS], x)[1])  # the 1st may be slow
    res = relative_residual(plain, x, y)
    rows.append({**base, "method": DEFAULTS, "family": "torchdeq defaults", "field": "any",
                 "reached": bool(res <= target), "tol": target, "tol / R": 1.0,
                 "residual": res, "iterations": info["iterations"],
                 "evaluations": info["evaluations"],
                 "sample_ms": 1e3 * seconds})  # fmt: skip
    timed = _contenders(rows)
    seconds = interleaved({k: (lambda f=runs[k]: f(x)) for k in timed}, rounds)
    for r in rows:
        if r["method"] in seconds:
            r.update(ms=1e3 * seconds[r["method"]], timing=f"median of {rounds} rounds")
        elif "sample_ms" in r:
            r.update(ms=r["sample_ms"], timing=f"one sample (> {SCREEN:g}x its group's fastest)")
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per problem, size, R and field: irn's best and default against torchdeq's best."""
    nan, out = float("nan"), []
    keys = sorted({(r["problem"], r["size"], r["R"]) for r in rows}, key=str)
    for kind, size, target in keys:
        case = [r for r in rows if (r["problem"], r["size"], r["R"]) == (kind, size, target)]
        ok = [r for r in case if r.get("reached") and r.get("timing", "").startswith("median")]
        deq = min((r for r in ok if r["family"] == "torchdeq"), key=lambda r: r["ms"],
                  default=None)  # fmt: skip
        default = next((r for r in case if r["method"] == DEFAULTS), {})
        for name in ("plain", "declared"):
            mine = [r for r in ok if r["family"] == "irn" and r["field"] == name]
            best = min(mine, key=lambda r: r["ms"], default=None)
            auto = next((r for r in mine if r["method"].startswith("irn auto")), None)
            speedup = deq["ms"] / best["ms"] if deq and best else nan
            out.append({
                "problem": kind, "size": size, "R": target, "field": name,
                "irn_best": best["method"] if best else None,
                "irn_best_ms": best["ms"] if best else nan,
                "irn_best_evaluations": best["evaluations"] if best else None,
                "irn_auto_ms": auto["ms"] if auto else nan,
                "torchdeq_best": deq["method"] if deq else None,
                "torchdeq_best_ms": deq["ms"] if deq else nan,
                "torchdeq_best_evaluations": deq["evaluations"] if deq else None,
                "vs_torchdeq_best": speedup,
                "auto_vs_torchdeq_best": deq["ms"] / auto["ms"] if deq and auto else nan,
                "torchdeq_defaults_ms": default.get("ms", nan),
                "torchdeq_defaults_residual": default.get("residual", nan),
                "goal": GOAL, "goal_met": bool(speedup >= GOAL),
                "not_reached": [r["method"] for r in case if not r.get("reached")
                                and r["family"] != "torchdeq defaults"
                                and r["field"] in (name, "any")],
            })  # fmt: skip
    return out


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    rows = []
    for size in ("small",) if quick else ("small", "large"):
        rounds = (2 if quick else 5) if size == "large" else (3 if quick else 7)
        for kind in ("contractive", "picard-divergent"):
            for target in TARGETS:
                rows += measure(kind, size, target, rounds)
    summary = summarize(rows)
    cols = ["method", "ms", "residual", "tol / R", "iterations", "evaluations", "reached",
            "why", "timing"]  # fmt: skip
    for kind, size, target in sorted({(r["problem"], r["size"], r["R"]) for r in rows}, key=str):
        case = [r for r in rows if (r["problem"], r["size"], r["R"]) == (kind, size, target)]
        print(f"\n### Forward solve at equal residual ρ ≤ {target:g}, {kind}, {size} "
              f"({case[0]['dtype']}, 1 thread)\n")  # fmt: skip
        print(table(case, cols))
    print("\n### Equal residual: torchdeq's best time / irn's best (target ≥ 1.5)\n")
    print(table(summary, ["problem", "size", "R", "field", "irn_best", "torchdeq_best",
                          "vs_torchdeq_best", "auto_vs_torchdeq_best", "goal_met"]))  # fmt: skip
    write("equal_residual", {"targets": {str(k): str(v).replace("torch.", "")
                                         for k, v in TARGETS.items()},
                             "grid": list(GRID), "max_iter": MAX_ITER, "quick": quick,
                             "rows": rows, "summary": summary}, quick)  # fmt: skip
    return {"rows": rows, "summary": summary}


if __name__ == "__main__":
    run()

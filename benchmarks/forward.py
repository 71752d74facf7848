"""Benchmark 1: forward solve of one implicit step, irn vs torchdeq at its best vs the paper.

Every method stops at the same accuracy, irn's relative residual ≤ ``TOL`` (a method whose
answer misses it is marked unconverged and left out of the ratios). torchdeq is run over a grid
of its solvers and dampings (``tau``), and the headline ratio is against the *best* of them,
for a plain field (no declared spectrum, which is what torchdeq sees) and a declared one (where
irn uses the declaration and torchdeq cannot). torchdeq at its defaults stays in the table,
labelled as such. Each method stops by its own rule here; the comparison at equal final
residual, each method's tolerance searched, is :mod:`benchmarks.equal_residual`.
"""

from __future__ import annotations

import torch

import irn
from irn.solvers import registry

from .common import side_by_side, table, write
from .problems import problem
from .reference import paper_lbfgs, relative_residual, torchdeq_solve

TOL = 1e-5
# irn's solvers: every registered nonlinear solver, forced, besides the default ("auto").
IRN_SOLVERS = list(registry("nonlinear"))
# torchdeq's solvers with the dampings a user would try; the first entry is its default.
TORCHDEQ = [
    ("anderson", {}),
    ("anderson", {"tau": 0.5}),
    ("anderson", {"tau": 0.25}),
    ("broyden", {}),
    ("fixed_point_iter", {"tau": 1.0}),
    ("fixed_point_iter", {"tau": 0.5}),
    ("fixed_point_iter", {"tau": 0.25}),
]
DEFAULT = "torchdeq anderson (default)"


def _methods(field):
    """name -> callable(x) returning (y, {"evaluations", "iterations"})."""
    out = {}
    for solver in ["auto", *IRN_SOLVERS]:
        layer = irn.ThetaLayer(field, theta=1.0, h=1.0, solver=solver, tol=TOL, max_iter=100)

        def run(x, layer=layer):
            with torch.no_grad():
                y = layer(x)
            s = layer.stats
            return y, {"evaluations": s.evaluations, "iterations": s.iterations}

        label = f"irn default (auto: {layer.method()})" if solver == "auto" else f"irn {solver}"
        out[label] = run
    for i, (name, kw) in enumerate(TORCHDEQ):
        label = f"torchdeq {name}" + "".join(f" {k}={v}" for k, v in kw.items())
        label = DEFAULT if i == 0 else label
        out[label] = lambda x, name=name, kw=kw: torchdeq_solve(name, field, x, TOL, **kw)
    out["paper L-BFGS (torch.optim)"] = lambda x: paper_lbfgs(field, x, TOL)
    return out


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    rounds = 2 if quick else 5
    results = []
    cases = [(k, s, d) for k in ("contractive", "picard-divergent") for s in ("small", "large")
             for d in (False, True)]  # fmt: skip
    for kind, size, declared in cases:
        field, x = problem(kind, size, declared=declared)
        timed, rows = {}, {}
        for name, method in _methods(field).items():
            try:
                y, info = method(x)
                res = relative_residual(field, x, y)
            except Exception as err:  # a baseline that crashes is reported, not hidden
                results.append({"problem": kind, "size": size, "declared": declared,
                                "method": name, "error": repr(err)[:80]})  # fmt: skip
                continue
            timed[name] = lambda m=method, x=x: m(x)
            rows[name] = {
                "problem": kind, "size": size, "declared": declared, "method": name,
                "iterations": info["iterations"], "evaluations": info["evaluations"],
                "residual": res, "converged": bool(res <= TOL * 1.0001),
            }  # fmt: skip
        # All methods of a case in interleaved rounds: a slow spell of the machine hits all.
        for name, seconds in side_by_side(timed, rounds).items():
            results.append({**rows[name], "ms": 1e3 * seconds})
    summaries = []
    nan = float("nan")
    for kind, size, declared in cases:
        rows = [r for r in results
                if (r["problem"], r["size"], r["declared"]) == (kind, size, declared)]  # fmt: skip
        ok = [r for r in rows if r.get("converged")]
        default = next(r["ms"] for r in ok if r["method"].startswith("irn default"))
        deq = [r for r in ok if r["method"].startswith("torchdeq")]
        best = min(deq, key=lambda r: r["ms"], default=None)
        deq_default = [r["ms"] for r in deq if r["method"] == DEFAULT]
        paper = [r["ms"] for r in ok if r["method"].startswith("paper")]
        for r in rows:
            r["time / irn default"] = r["ms"] / default if "ms" in r else None
        summary = {
            "problem": kind, "size": size, "declared": declared, "irn_default_ms": default,
            "irn_default": next(r["method"] for r in rows if r["method"].startswith("irn def")),
            "torchdeq_best": best["method"] if best else None,
            "vs_torchdeq_best": best["ms"] / default if best else nan,
            "vs_torchdeq_defaults": min(deq_default, default=nan) / default,
            "vs_paper_lbfgs": min(paper, default=nan) / default,
        }  # fmt: skip
        summaries.append(summary)
        field_kind = "declared" if declared else "plain"
        print(f"\n### Forward solve, {kind}, {size}, {field_kind} field (tol {TOL:g}, 1 thread)\n")
        print(table(rows, ["method", "ms", "iterations", "evaluations", "residual",
                           "converged", "time / irn default"]))  # fmt: skip
        print(
            f"\nirn default is {summary['vs_torchdeq_best']:.2f}x faster than torchdeq at its "
            f"best ({summary['torchdeq_best']}), {summary['vs_torchdeq_defaults']:.2f}x than "
            f"torchdeq at its defaults, {summary['vs_paper_lbfgs']:.2f}x than the paper's L-BFGS"
        )
    write("forward", {"tol": TOL, "quick": quick, "rows": results, "summary": summaries}, quick)
    return {"rows": results}


if __name__ == "__main__":
    run()

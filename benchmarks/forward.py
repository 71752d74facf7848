"""Benchmark 1: forward solve of one implicit step, irn vs torchdeq vs the paper's L-BFGS."""

from __future__ import annotations

import torch

import irn

from .common import median_time, table, write
from .problems import problem
from .reference import paper_lbfgs, relative_residual, torchdeq_solve

TOL = 1e-5
IRN_SOLVERS = ["anderson", "fixed-point", "newton", "lbfgs"]
TORCHDEQ = [
    ("anderson", {}),
    ("anderson", {"tau": 0.5}),
    ("broyden", {}),
    ("fixed_point_iter", {"tau": 0.5}),
]


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
    for name, kw in TORCHDEQ:
        label = f"torchdeq {name}" + "".join(f" {k}={v}" for k, v in kw.items())
        out[label] = lambda x, name=name, kw=kw: torchdeq_solve(name, field, x, TOL, **kw)
    out["paper L-BFGS (torch.optim)"] = lambda x: paper_lbfgs(field, x, TOL)
    return out


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    repeats = 3 if quick else 15
    results = []
    for kind in ("contractive", "picard-divergent"):
        for size in ("small", "large"):
            field, x = problem(kind, size)
            for name, method in _methods(field).items():
                try:
                    y, info = method(x)
                    seconds = median_time(lambda m=method, x=x: m(x), repeats)
                    res = relative_residual(field, x, y)
                except Exception as err:  # a baseline that crashes is reported, not hidden
                    results.append({"problem": kind, "size": size, "method": name,
                                    "error": repr(err)[:80]})  # fmt: skip
                    continue
                results.append({
                    "problem": kind, "size": size, "method": name, "ms": 1e3 * seconds,
                    "iterations": info["iterations"], "evaluations": info["evaluations"],
                    "residual": res, "converged": bool(res <= TOL * 1.0001),
                })  # fmt: skip
    summaries = []
    for kind in ("contractive", "picard-divergent"):
        for size in ("small", "large"):
            rows = [r for r in results if r["problem"] == kind and r["size"] == size]
            ok = [r for r in rows if r.get("converged")]
            default = next(r["ms"] for r in ok if r["method"].startswith("irn default"))
            # torchdeq at its defaults (tau = 1) and with tau = 0.5 (irn's damping for problem (b)).
            plain = [
                r["ms"] for r in ok if r["method"] in ("torchdeq anderson", "torchdeq broyden")
            ]
            tuned = [r["ms"] for r in ok if "tau=" in r["method"]]
            paper = [r["ms"] for r in ok if r["method"].startswith("paper")]
            for r in rows:
                r["time / irn default"] = r["ms"] / default if "ms" in r else None
            nan = float("nan")
            summary = {
                "problem": kind, "size": size, "irn_default_ms": default,
                "vs_torchdeq_defaults": min(plain, default=nan) / default,
                "vs_paper_lbfgs": min(paper, default=nan) / default,
                "vs_torchdeq_tau_half": min(tuned, default=nan) / default,
            }  # fmt: skip
            summaries.append(summary)
            print(f"\n### Forward solve, problem {kind}, {size} (tol {TOL:g}, 1 thread)\n")
            print(table(rows, ["method", "ms", "iterations", "evaluations", "residual",
                               "converged", "time / irn default"]))  # fmt: skip
            print(
                f"\nirn default is {summary['vs_torchdeq_defaults']:.1f}x faster than torchdeq "
                f"at its defaults, {summary['vs_paper_lbfgs']:.1f}x than the paper's L-BFGS, "
                f"{summary['vs_torchdeq_tau_half']:.2f}x than torchdeq with tau = 0.5"
            )
    payload = {"tol": TOL, "quick": quick, "rows": results, "summary": summaries}
    write("forward", payload, suffix="-quick" if quick else "")
    return {"rows": results}


if __name__ == "__main__":
    run()

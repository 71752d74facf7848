"""Read-outs of the Lotka–Volterra experiment's results (:mod:`irn.experiments.lotka_volterra`):
per-run quantities as arrays, and a short text table."""

from __future__ import annotations

import numpy as np

__all__ = ["summary", "table"]


def table(results: dict, key: str) -> np.ndarray:
    """``results["runs"][θ][seed][key]`` as a float array ``(θ, seed, ...)``."""
    res = results.get("results", results)
    return np.array([[r[key] for r in row] for row in res["runs"]], dtype=float)


def summary(results: dict) -> str:
    """A short text table per θ: losses, median growth rate, equilibrium Re λ, trace shift."""
    res = results["results"]
    lines = [
        f"Lotka-Volterra, h = {res['h']}, {len(res['seeds'])} seed(s): mean [min, max]",
        "theta   loss_train   loss_val    median rate          Re lambda*      trace shift",
    ]
    rate, shift = table(res, "median_rate"), table(res, "trace_shift")
    ltr, lva = table(res, "loss_train"), table(res, "loss_val")
    for i, theta in enumerate(res["thetas"]):
        eq = [r["equilibrium_eigenvalues"] for r in res["runs"][i]]
        re = [np.mean(e[0]) for e in eq if e is not None]
        re_txt = f"{np.mean(re):+.4f}" if re else "   none"
        lines.append(
            f"{theta:5.2f}  {ltr[i].mean():10.2e}  {lva[i].mean():10.2e}  "
            f"{rate[i].mean():+.4f} [{rate[i].min():+.3f}, {rate[i].max():+.3f}]  {re_txt}"
            f"  {shift[i].mean():+.4f} (pred {res['predicted_trace_shift'][i]:+.4f})"
        )
    lines.append(f"wall time {results['meta']['wall_time']:.1f} s")
    return "\n".join(lines)

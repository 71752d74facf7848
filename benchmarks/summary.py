"""Print the README's results table from the committed JSON: ``python -m benchmarks.summary``."""

from __future__ import annotations

import json

from .common import RESULTS


def main() -> None:
    load = lambda name: json.loads((RESULTS / f"{name}.json").read_text())  # noqa: E731
    fwd, train, mem, grad = (load(n) for n in ("forward", "training", "memory", "gradients"))
    # Results written before the rename call problem (b) "stiff" and the estimate "floor".
    kinds = ("picard-divergent", "stiff")
    stiff = {s["size"]: s for s in fwd["summary"] if s["problem"] in kinds}
    step = {(r["size"], r["theta"]): r for r in train["rows"] if r["model"] == "ThetaLayer"}
    adj = [r for r in grad["rows"] if r["method"] == "irn adjoint" and r["tol"] == 1e-8][0]
    worst = max(r["adjoint"] / r["explicit"] for r in mem["iterations"])
    lines = [
        "| measure (problem (b), tol 1e-5) | target | measured |",
        "|---|---|---|",
    ]
    for size in ("small", "large"):
        s = stiff[size]
        lines.append(
            f"| forward solve, {size}: irn default vs best of torchdeq (defaults) / paper "
            f"L-BFGS | ≥ 2× faster | {s['vs_torchdeq_defaults']:.1f}× / "
            f"{s['vs_paper_lbfgs']:.1f}× ({s['irn_default_ms']:.2g} ms) |"
        )
    r = step["large", 1.0]
    lines.append(
        f"| training step θ = 1, large, vs explicit | ≤ 5× | {r['ratio_to_explicit']:.1f}× "
        f"(estimate (k_f + 2k_b + 3)/3 = {r.get('estimate', r.get('floor')):.1f}, "
        f"k_f = {r['k_forward']}, "
        f"k_b = {r['k_backward']}) |"
    )
    lines.append(
        f"| adjoint saved memory, 3 → 40 iterations | flat (±5%), ≤ 2× explicit | "
        f"{100 * mem['adjoint_variation']:.0f}% change, {worst:.2f}× explicit |"
    )
    lines.append(
        f"| adjoint gradient error, float64, tol 1e-8 | ≤ 1e-6 | {adj['relative_error']:.1e} |"
    )
    m = fwd["machine"]
    lines.append(f"\nMachine: {m['cpu']}, {m['torch_threads']} torch thread, torch {m['torch']}.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

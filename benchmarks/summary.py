"""Print the README's results table from the committed JSON: ``python -m benchmarks.summary``.

One column per device whose ``results/<device>.json`` exists (``--cpu FILE``, ``--cuda FILE``
read other files, e.g. a trial run's); "—" where a device was not measured. The targets are
issue 11's (performance round two) and issue 19's (equal residual; inexact gradients are
measured opt-ins, without a target).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import RESULTS

DASH = "—"


def load(device: str, path: str | Path | None = None) -> dict | None:
    path = RESULTS / f"{device}.json" if path is None else Path(path)
    return json.loads(path.read_text()) if path.exists() else None


def _step(data: dict | None, size: str, field: str) -> str:
    if not data or "training" not in data:
        return DASH
    for r in data["training"]["rows"]:
        if (r["size"], r["field"], r["model"], r["theta"]) == (size, field, "ThetaLayer", 1.0):
            return f"{r['ratio_to_explicit']:.1f}× (k = {r['k_forward']}/{r['k_backward']})"
    return DASH


def _forward(data: dict | None, size: str, declared: bool, key: str) -> str:
    if not data or "forward" not in data:
        return DASH
    for s in data["forward"]["summary"]:
        if (s["problem"], s["size"], s["declared"]) == ("picard-divergent", size, declared):
            return f"{s[key]:.2f}×"
    return DASH


def _peak(data: dict | None, size: str) -> str:
    if not data or "training" not in data:
        return DASH
    for r in data["training"]["rows"]:
        if r.get("peak_MB_adjoint") and (r["size"], r["field"]) == (size, "plain"):
            return f"{r['peak_MB_adjoint'] / r['peak_MB_explicit']:.1f}×"
    return DASH


def _gradient(data: dict | None) -> str:
    if not data or "gradients" not in data:
        return DASH
    rows = [
        r for r in data["gradients"]["rows"] if r["method"] == "irn adjoint" and r["tol"] == 1e-8
    ]
    return f"{rows[0]['relative_error']:.1e}" if rows else DASH


def _equal(data: dict | None, target: float, field: str) -> str:
    """How many cases of the equal-residual benchmark meet the goal, and the lowest ratio."""
    if not data or "equal_residual" not in data:
        return DASH
    cases = [c for c in data["equal_residual"]["summary"]
             if c["R"] == target and c["field"] == field]  # fmt: skip
    if not cases:
        return DASH
    low = min(cases, key=lambda c: c["vs_torchdeq_best"])
    met = sum(c["goal_met"] for c in cases)
    return (f"{met} of {len(cases)} (lowest {low['vs_torchdeq_best']:.2f}×: {low['problem']}, "
            f"{low['size']})")  # fmt: skip


def _inexact(data: dict | None, backward: str) -> str:
    """Step / explicit with ``backward`` (problem (b), large, plain) and its gradient error."""
    if not data or "inexact" not in data:
        return DASH
    rows = [r for r in data["inexact"]["rows"] if (r["problem"], r["field"]) ==
            ("picard-divergent", "plain")]  # fmt: skip
    size = "large" if any(r["size"] == "large" for r in rows) else "small"
    by = {r["backward"]: r for r in rows if r["size"] == size}
    if backward not in by:
        return DASH
    r, exact = by[backward], by["adjoint"]
    return (f"{r['ratio_to_explicit']:.1f}× (adjoint {exact['ratio_to_explicit']:.1f}×), "
            f"weight gradient: error {r['rel_error_weights']:.1e}, 1 − cos "
            f"{1 - r['cos_weights']:.0e}; {size}")  # fmt: skip


def _size(data: dict | None, size: str) -> str:
    if not data or "training" not in data:
        return ""
    r = next(r for r in data["training"]["rows"] if r["size"] == size)
    return f"{r['state']}×{r['batch']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", help="CPU result file (default results/cpu.json)")
    parser.add_argument("--cuda", help="GPU result file (default results/cuda.json)")
    args = parser.parse_args()
    cpu, gpu = load("cpu", args.cpu), load("cuda", args.cuda)
    lines = [
        "| measure (problem (b), tol 1e-5, θ = 1) | target CPU | CPU | target GPU | GPU |",
        "|---|---|---|---|---|",
    ]
    gpu_sizes = {"large": "2048×8192", "small": "512×4096"}  # CUDA_SIZES in problems.py
    for size, t_cpu, t_gpu in (("large", "≤ 6×", "≤ 5×"), ("small", "≤ 10×", "≤ 8×")):
        lines.append(
            f"| training step / explicit, plain field, {size} (CPU {_size(cpu, size)}, GPU "
            f"{gpu_sizes[size]}) | {t_cpu} | {_step(cpu, size, 'plain')} | {t_gpu} | "
            f"{_step(gpu, size, 'plain')} |"
        )
    for size in ("large", "small"):
        lines.append(
            f"| training step / explicit, declared field, {size} | ≤ 4× | "
            f"{_step(cpu, size, 'declared')} | | {_step(gpu, size, 'declared')} |"
        )
    for size in ("small", "large"):
        for declared in (False, True):
            kind = "declared" if declared else "plain"
            lines.append(
                f"| forward solve, {size}, {kind}: torchdeq's best / irn | > 1× (kept) | "
                f"{_forward(cpu, size, declared, 'vs_torchdeq_best')} | ≥ 2× | "
                f"{_forward(gpu, size, declared, 'vs_torchdeq_best')} |"
            )
        lines.append(
            f"| forward solve, {size}, plain: paper's L-BFGS / irn | > 1× (kept) | "
            f"{_forward(cpu, size, False, 'vs_paper_lbfgs')} | > 1× | "
            f"{_forward(gpu, size, False, 'vs_paper_lbfgs')} |"
        )
    for target in (1e-5, 1e-7):
        for field in ("plain", "declared"):
            lines.append(
                f"| forward solve at equal residual ρ ≤ {target:g}, both problems and sizes, "
                f"{field} field: cases where torchdeq's best / irn's best ≥ 1.5× | every case | "
                f"{_equal(cpu, target, field)} | every case | {_equal(gpu, target, field)} |"
            )
    for backward in ("jfb", "phantom"):
        lines.append(
            f"| training step / explicit, backward={backward!r}, plain field (opt-in) | "
            f"measured | {_inexact(cpu, backward)} | measured | {_inexact(gpu, backward)} |"
        )
    lines.append(f"| peak memory, adjoint step / explicit | | | ≤ 3× | {_peak(gpu, 'large')} |")
    lines.append(
        f"| adjoint gradient error, float64, tol 1e-8 | ≤ 1e-6 | {_gradient(cpu)} | ≤ 1e-6 | "
        f"{_gradient(gpu)} |"
    )
    for name, data in (("CPU", cpu), ("GPU", gpu)):
        if data:
            m = data["machine"]
            where = f"{m['gpu']}, CUDA {m['cuda']}" if m.get("gpu") else m["cpu"]
            lines.append(
                f"\n{name}: {where}, {m['torch_threads']} torch thread(s), torch {m['torch']}."
            )
        else:
            lines.append(
                f"\n{name}: not measured (no results/{'cuda' if name == 'GPU' else 'cpu'}.json)."
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

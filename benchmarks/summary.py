"""Print the README's results table from the committed JSON: ``python -m benchmarks.summary``.

One column per device whose ``results/<device>.json`` exists; "—" where a device was not
measured. The targets are issue 11's (performance round two).
"""

from __future__ import annotations

import json

from .common import RESULTS

DASH = "—"


def load(device: str) -> dict | None:
    path = RESULTS / f"{device}.json"
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


def _size(data: dict | None, size: str) -> str:
    if not data or "training" not in data:
        return ""
    r = next(r for r in data["training"]["rows"] if r["size"] == size)
    return f"{r['state']}×{r['batch']}"


def main() -> None:
    cpu, gpu = load("cpu"), load("cuda")
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

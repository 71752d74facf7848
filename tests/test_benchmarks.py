"""The equal-residual comparison of ``benchmarks/``: its residual, its tolerance search, and one
tiny case end to end (the search and the reporting, not the timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from fields import DT, NONLINEAR, Affine

ROOT = str(Path(__file__).resolve().parents[1])  # benchmarks/ is a package of the checkout
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import equal_residual, problems  # noqa: E402
from benchmarks.reference import relative_residual  # noqa: E402


def _exact(field, x):
    """The backward-Euler step y = x + A y + b of an affine field, by a dense solve."""
    eye = torch.eye(x.shape[1], dtype=DT)
    m = eye - field.A.detach()
    return torch.linalg.solve(m, (x + field.b.detach()).T).T, m


def test_relative_residual_is_the_worst_sample_of_its_definition():
    field = Affine(5)
    x = torch.randn(3, 5, dtype=DT)
    y_star, m = _exact(field, x)
    delta = 1e-3 * torch.randn(3, 5, dtype=DT)
    y = y_star + delta
    # y − x − F(y) = (I − A)δ at an exact solution plus δ; each sample against max(‖y‖, ‖x‖).
    per = (delta @ m.T).norm(dim=1) / torch.maximum(y.norm(dim=1), x.norm(dim=1))
    assert relative_residual(field, x, y) == pytest.approx(float(per.max()), rel=1e-10)
    assert relative_residual(field, x, y_star) < 1e-14


def _fake(field, x, slope: float, met_own: bool = True):
    """A method whose answer has a relative residual of exactly ``slope·tol`` (or what
    ``met_own=False`` gives: a solver that hit its cap far from the answer)."""
    y_star, m = _exact(field, x)
    e = torch.zeros_like(x)
    e[:, 0] = 1.0
    unit = relative_residual(field, x, y_star + e * 1e-6) / 1e-6  # residual per unit step

    def make(tol):
        def run(x_):
            y = y_star + e * (slope * tol / unit if met_own else 1.0)
            return y, {"iterations": 1, "evaluations": 2, "met_own": met_own}

        return run

    calls = []

    def counted(tol):
        calls.append(tol)
        return make(tol)

    return counted, calls


def test_search_picks_the_loosest_grid_tolerance_that_meets_the_target():
    field = Affine(4)
    x = torch.randn(6, 4, dtype=DT)
    target = 1e-7
    # residual = 0.5·tol: 3R gives 1.5R (misses), R gives 0.5R (meets), looser ones miss first.
    make, calls = _fake(field, x, slope=0.5)
    found = equal_residual.search(make, field, x, target)
    assert found["reached"] and found["tol / R"] == 1.0
    assert found["tol"] == pytest.approx(target)
    assert found["residual"] == pytest.approx(0.5 * target, rel=1e-5)
    assert calls == pytest.approx([target * g for g in equal_residual.GRID[:5]])
    assert not found["grid_edge"]
    # A method far below its own tolerance meets R already at the loosest grid point.
    make, calls = _fake(field, x, slope=1e-3)
    found = equal_residual.search(make, field, x, target)
    assert found["reached"] and found["grid_edge"] and len(calls) == 1


def test_search_reports_a_method_that_never_reaches_the_target():
    field = Affine(4)
    x = torch.randn(6, 4, dtype=DT)
    capped, calls = _fake(field, x, slope=1.0, met_own=False)
    found = equal_residual.search(capped, field, x, 1e-7)
    # A capped solve ends the search: a tighter tolerance repeats the same capped iterations.
    assert not found["reached"] and "iteration cap" in found["why"] and len(calls) == 1
    assert found["residual"] > 1e-3
    # Meeting its own tolerance but never R (residual = 1e4·tol): the whole grid is tried.
    never, calls = _fake(field, x, slope=1e4)
    found = equal_residual.search(never, field, x, 1e-7)
    assert not found["reached"] and "no tolerance" in found["why"]
    assert len(calls) == len(equal_residual.GRID)


def test_one_tiny_case_reports_every_method(monkeypatch):
    """Problem (b) at state 8, batch 4, R = 1e-7 (float64): every registered irn solver on
    both fields and every torchdeq configuration has a row; plain fixed-point iteration, which
    diverges there, is reported as not reaching R, and the default reaches it."""
    pytest.importorskip("torchdeq")
    monkeypatch.setitem(problems.SIZES, "small", (8, 4))
    assert equal_residual.TARGETS[1e-7] == DT
    rows = equal_residual.measure("picard-divergent", "small", 1e-7, rounds=1)
    by = {r["method"]: r for r in rows}
    for field in ("plain", "declared"):
        for solver in NONLINEAR:
            assert f"irn {solver} [{field}]" in by
    assert sum(r["family"] == "torchdeq" for r in rows) == len(equal_residual.TORCHDEQ)
    assert equal_residual.DEFAULTS in by and "ms" in by[equal_residual.DEFAULTS]
    bad = by["irn fixed-point [plain]"]
    assert not bad["reached"] and "iteration cap" in bad["why"] and "ms" not in bad
    for r in rows:
        if r["reached"] and r["family"] != "torchdeq defaults":
            assert r["residual"] <= 1e-7 and r["ms"] > 0
    auto = [r for r in rows if r["method"].startswith("irn auto")]
    assert len(auto) == 2 and all(r["reached"] for r in auto)
    summary = equal_residual.summarize(rows)
    assert [s["field"] for s in summary] == ["plain", "declared"]
    for s in summary:
        assert s["vs_torchdeq_best"] > 0 and s["irn_best"].endswith(f"[{s['field']}]")
        assert "irn fixed-point [plain]" in s["not_reached"] or s["field"] == "declared"

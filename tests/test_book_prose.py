"""Every number in the book's prose is glued from the cell that computes it, or is a definition
listed in its notebook's reviewed allowlist (notebook metadata ``prose_numbers``): drifted
numbers cannot come back. See tests/prose_numbers.py for what is scanned."""

from __future__ import annotations

import json

import pytest
from prose_numbers import BOOK, markdown_cells, numerals

NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))


def _allowed(path) -> list[str]:
    meta = json.loads(path.read_text(encoding="utf-8"))["metadata"]
    return list(meta.get("prose_numbers", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_prose_numbers_are_glued_or_allowed(path):
    allowed = _allowed(path)
    stray = [
        f"cell {i}: {n!r}" for i, text in markdown_cells(path) for n in numerals(text, allowed)
    ]
    assert not stray, (
        f"{path.name}: numbers in the prose that are neither glued ({{glue:text}}`key`) nor in "
        f"the notebook's metadata 'prose_numbers' allowlist: {stray}"
    )


def test_scan_catches_a_number_and_skips_glue_math_code():
    text = "Anderson needs 3 iterations, {glue:text}`n_it` here; $x^2 + 1$, `f(2)`, θ = 1."
    assert numerals(text, []) == ["3"]
    assert numerals(text, ["needs 3 iterations"]) == []


def test_allowlists_are_short_phrases():
    for path in NOTEBOOKS:
        allowed = _allowed(path)
        assert len(allowed) == len(set(allowed)), f"{path.name}: duplicate allowlist entries"
        assert all(0 < len(p) <= 60 for p in allowed), f"{path.name}: allowlist entries are phrases"

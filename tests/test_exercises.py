"""Every exercise solution with code runs and checks its own outcome.

The code blocks of each ``{solution}`` directive are run in a fresh namespace prepared by the
notebook's first code cell (imports, seeds, dtype: what a reader has after running it), so a
solution names everything else it uses. Each must ``assert`` the outcome its text states.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
_SOLUTION = re.compile(r"^(`{3,}|~{3,})\{solution\}\s*(\S+)(.*?)^\1\s*$", re.S | re.M)
_CODE = re.compile(r"^(`{3,})python\s*\n(.*?)^\1\s*$", re.S | re.M)


def _cells(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def solutions() -> list[tuple[str, str, str]]:
    """``(notebook stem, exercise label, code)`` for every solution with code."""
    out = []
    for path in sorted(BOOK.glob("*.ipynb")):
        for cell in _cells(path):
            if cell["cell_type"] != "markdown":
                continue
            for match in _SOLUTION.finditer("".join(cell["source"])):
                code = "\n".join(m.group(2) for m in _CODE.finditer(match.group(3)))
                if code.strip():
                    out.append((path.stem, match.group(2), code))
    return out


def _setup(stem: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    first = next(c for c in _cells(BOOK / f"{stem}.ipynb") if c["cell_type"] == "code")
    return TransformerManager().transform_cell("".join(first["source"]))


SOLUTIONS = solutions()


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """A notebook's setup sets torch's default dtype, threads and seed for the whole process:
    put them back, so the other tests of this worker see the defaults."""
    import torch

    dtype, threads, rng = torch.get_default_dtype(), torch.get_num_threads(), torch.get_rng_state()
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)


def test_solutions_are_found():
    assert len(SOLUTIONS) >= 10


@pytest.mark.parametrize(("stem", "label", "code"), SOLUTIONS,
                         ids=[f"{s}:{lab}" for s, lab, _ in SOLUTIONS])  # fmt: skip
def test_solution_runs_and_asserts(stem, label, code, monkeypatch):
    assert re.search(r"^\s*assert\b", code, re.M), f"{label}: the solution asserts nothing"
    monkeypatch.chdir(BOOK)  # results/ paths are relative to the notebooks
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    namespace: dict = {"__name__": "__main__"}
    exec(compile(_setup(stem), f"{stem}:setup", "exec"), namespace)
    exec(compile(code, f"{stem}:{label}", "exec"), namespace)
    import matplotlib.pyplot as plt

    plt.close("all")

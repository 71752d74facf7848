"""Execute the book's notebooks in place, storing their outputs.

Usage: python scripts/run_notebooks.py [NOTEBOOK.ipynb ...]   (default: every book/*.ipynb)

The stored outputs are what the HTML book shows (it does not execute notebooks) and what
`pytest --nbval` compares against, so run this on the project's reference machine after changing
a notebook or the library. Unlike `jupyter execute --inplace`, it writes no per-cell timestamps
(`metadata.execution`), which would make every run a noisy git diff.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

# The kernel inherits this environment. ipykernel selects matplotlib's inline backend (headless,
# Agg-based, figures stored as PNG outputs) only when MPLBACKEND is unset; with MPLBACKEND=Agg
# the notebook would store no figures at all. `make test` (nbval) runs the kernels the same way.
os.environ.pop("MPLBACKEND", None)

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402
from nbclient.exceptions import CellExecutionError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps from earlier `jupyter execute` runs
    client = NotebookClient(
        nb,
        timeout=600,  # seconds per cell
        kernel_name="python3",
        record_timing=False,
        store_widget_state=True,  # metadata.widgets: the HTML renders widgets from it
        resources={"metadata": {"path": str(path.parent)}},  # run in the notebook's folder
    )
    client.execute()
    nbformat.write(nb, path)


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((ROOT / "book").glob("*.ipynb"))
    failed = []
    for path in paths:
        start = time.perf_counter()
        try:
            run(path)
        except CellExecutionError as err:
            # The notebook file is left as it was; the error names the cell and traceback.
            print(f"FAILED {path} after {time.perf_counter() - start:.1f} s\n{err}", flush=True)
            failed.append(path)
            continue
        print(f"{path}: {time.perf_counter() - start:.1f} s", flush=True)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(map(str, failed))}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

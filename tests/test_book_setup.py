"""Where a reader outside a clone gets irn and the results from: one place for every chapter.

Every notebook's first code cell starts with the header of scripts/book_header.py: the
repository is `_config.yml`'s `repository.url`, the install is pinned to the release
`v<irn.__version__>` with the `data` extra, and results come through
`irn.experiments.fetch(..., repo=REPO, ref=RELEASE)`: no other URL of the repository appears.
"""

from __future__ import annotations

import importlib.util
import json
import urllib.request
from pathlib import Path

import pytest

from irn import experiments

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _header():
    spec = importlib.util.spec_from_file_location(
        "book_header", ROOT / "scripts" / "book_header.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_first_cell_installs_the_release_from_the_configured_repository(path):
    header = _header()
    import irn

    assert header.release() == f"v{irn.__version__}"
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    first = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    assert first.startswith(header.header()), f"{path.name}: run scripts/book_header.py"
    repo = header.repository().split("github.com/")[1]
    for cell in cells:
        text = "".join(cell["source"])
        if cell is not cells[0]:
            text = text.replace(header.header(), "")
        for line in text.splitlines():
            assert repo not in line or line.startswith("REPO, RELEASE = "), (
                f"{path.name}: a hard-coded repository URL ({line.strip()!r}); use REPO/RELEASE"
            )


def test_fetch_returns_an_existing_file_without_the_network(tmp_path):
    existing = tmp_path / "r.json"
    existing.write_text("{}")
    assert experiments.fetch(existing, repo="https://github.com/o/n", ref="v1") == existing


def test_failed_download_is_one_line_saying_what_to_do(tmp_path, monkeypatch):
    seen = []

    def refuse(url, path):
        seen.append(url)
        Path(path).write_text("partial")
        raise OSError("no network")

    monkeypatch.setattr(urllib.request, "urlretrieve", refuse)
    target = tmp_path / "results" / "x.json"
    with pytest.raises(SystemExit) as err:
        experiments.fetch(target, repo="https://github.com/o/n", ref="v1", source="book/x.json")
    message = str(err.value)
    assert seen == ["https://raw.githubusercontent.com/o/n/v1/book/x.json"]
    assert "\n" not in message and "clone of https://github.com/o/n" in message
    assert not target.exists()  # no partial file left behind

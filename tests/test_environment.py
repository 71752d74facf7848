"""The environments a reader gets from the book: Binder, Colab and the published pages.

Binder builds ``environment.yml``; it must install what ``make`` installs (the pins of
``requirements/book.txt``, the Makefile's torch on PyTorch's CPU wheel index, ``irn`` in editable
mode). Colab runs a notebook alone, so its first code cell installs ``irn`` from the repository
and files of the repository are fetched when missing. ``.github/workflows/pages.yml`` builds
the book and publishes ``_build/html`` to GitHub Pages. The installed package says its licence.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _pins(lines) -> dict[str, str]:
    """name -> version of the ``name==version`` lines (names normalized as pip does)."""
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name.strip()).lower()] = version.strip()
    return pins


@pytest.fixture(scope="module")
def pip_section() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "pip" in deps, "environment.yml must install pip for its pip section"
    sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one pip section"
    return [" ".join(str(line).split()) for line in sections[0]]


@pytest.fixture(scope="module")
def makefile_torch() -> str:
    m = re.search(r"^TORCH\s*:=\s*(torch==\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert m, "the Makefile no longer pins torch as TORCH := torch==X"
    return m.group(1)


def test_binder_python_is_the_book_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pythons = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    # requirements/book.txt is pinned for Python 3.11 (see the Makefile's version check).
    assert pythons == ["python=3.11"]


def test_binder_installs_the_pinned_book_environment(pip_section):
    book = (ROOT / "requirements" / "book.txt").read_text().splitlines()
    if "-r requirements/book.txt" in pip_section:
        return
    pinned = _pins(pip_section)
    missing = {k: v for k, v in _pins(book).items() if pinned.get(k) != v}
    assert not missing, f"environment.yml differs from requirements/book.txt: {missing}"


def test_binder_installs_the_makefile_torch_from_the_cpu_index(pip_section, makefile_torch):
    assert makefile_torch in pip_section
    index = [line for line in pip_section if line.startswith(("--extra-index-url", "--index-url"))]
    assert index and index[0].split()[-1] == CPU_INDEX, f"no CPU wheel index in {pip_section}"
    torch_lines = [line for line in pip_section if line.startswith("torch")]
    assert torch_lines == [makefile_torch], "torch must be pinned once, as in the Makefile"


def test_binder_installs_irn_editable(pip_section):
    assert "-e ." in pip_section


def test_book_requirements_are_exact_pins_without_torch_or_irn():
    lines = [
        line.split("#", 1)[0].strip()
        for line in (ROOT / "requirements" / "book.txt").read_text().splitlines()
    ]
    lines = [line for line in lines if line]
    loose = [line for line in lines if "==" not in line]
    assert not loose, f"requirements/book.txt has unpinned lines: {loose}"
    # torch comes with the CPU index (or the Makefile's pin), irn from `-e .`.
    assert not {"torch", "irn"} & set(_pins(lines)), "torch/irn belong outside book.txt"


# The Colab install line and the results downloads of every notebook: tests/test_book_setup.py.


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text())


def test_pages_workflow_runs_on_pushes_to_main(workflow):
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert on["push"]["branches"] == ["main"]


def test_pages_workflow_may_deploy(workflow):
    assert workflow["permissions"]["pages"] == "write"
    assert workflow["permissions"]["id-token"] == "write"


def test_pages_workflow_builds_checks_and_publishes_the_book(workflow):
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    uses = [step.get("uses", "").split("@")[0] for step in steps]
    runs = " ".join(step.get("run", "") for step in steps)
    for action in (
        "actions/checkout",
        "actions/setup-python",
        "actions/upload-pages-artifact",
        "actions/deploy-pages",
    ):
        assert action in uses, f"pages.yml does not use {action}"
    assert "make book" in runs and "-m browser tests/test_browser.py" in runs
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert str(setup["with"]["python-version"]) == "3.11"


# ------------------------------------------------------------------------ the package's licence
def test_license_metadata():
    from importlib.metadata import metadata

    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    meta = metadata("irn")
    assert meta.get("License-Expression") == "MIT" or "MIT" in (meta.get("License") or "")

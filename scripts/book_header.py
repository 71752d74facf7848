"""Write the first lines of every chapter's first code cell: where irn comes from on Colab.

The repository URL is `_config.yml`'s `repository.url` and the release is `v` + irn's version,
so the install line and the results downloads (`irn.experiments.fetch(..., repo=REPO,
ref=RELEASE)`) of every notebook come from one place; tests/test_book_setup.py checks it.
Usage: python scripts/book_header.py   (rewrites book/*.ipynb in place; then `make notebooks`)
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def repository() -> str:
    text = (ROOT / "_config.yml").read_text(encoding="utf-8")
    return re.search(r"^repository:\s*\n\s+url:\s*(\S+)", text, re.M).group(1)


def release() -> str:
    text = (ROOT / "irn" / "__init__.py").read_text(encoding="utf-8")
    return "v" + re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def header() -> str:
    return f'''REPO, RELEASE = "{repository()}", "{release()}"  # _config.yml; the release run here
try:
    import irn
except ImportError:  # e.g. on Colab: install that release of irn, with its data extra
    %pip install -q "irn[data] @ git+{{REPO}}@{{RELEASE}}"
    import irn
try:
    from myst_nb import glue  # hands the values computed here to the book's text
except ImportError:  # outside the book's environment (e.g. on Colab): nothing to hand over
    def glue(name, value, display=True):
        pass
'''


_OLD_INSTALL = re.compile(r"\A(?:REPO, RELEASE = .*?\n)?try:\n    import irn\n"
                          r"except ImportError:.*?\n    import irn\n", re.S)  # fmt: skip
_OLD_GLUE = re.compile(r"\n?try:\n    from myst_nb import glue.*?\n        pass\n|"
                       r"\n?from myst_nb import glue[^\n]*\n", re.S)  # fmt: skip


def rewrite(source: str) -> str:
    body = _OLD_INSTALL.sub("", source, count=1)
    body = _OLD_GLUE.sub("\n", body)
    return header() + "\n" + body.lstrip("\n")


def main() -> None:
    import nbformat

    for path in sorted((ROOT / "book").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if c.cell_type == "code")
        cell.source = rewrite(cell.source)
        nbformat.write(nb, path)


if __name__ == "__main__":
    main()

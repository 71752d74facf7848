"""Numerals in the book's prose: what tests/test_book_prose.py scans, and its allowlist.

A number in a markdown cell is either glued from the cell that computes it (myst-nb's
``{glue:text}`key``` role, stripped before the scan) or a definition or parameter listed in
:data:`ALLOWED` for its notebook as a *phrase* ("h = 0.5", "8×8 digits"), so a reviewer sees
what each allowed numeral means. Everything else that looks like a number is reported.

Not scanned: math (``$...$``, ``$$...$$``, ``{math}``), inline and fenced code, MyST roles
(``{cite}``, ``{eq}``, ``{ref}``, ``{numref}``, ``{glue:text}`` ...), link targets, directive
option lines (``:label:``), cross-references to chapters, sections and equations, and years.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1] / "book"
ALLOWED_FILE = Path(__file__).with_name("prose_numbers.json")

_STRIP = [
    re.compile(r"```.*?```", re.S),  # fenced code (and directive fences: their bodies stay)
    re.compile(r"\$\$.*?\$\$", re.S),  # display math
    re.compile(r"(?<!\\)\$[^$]+?(?<!\\)\$"),  # inline math (may wrap across lines)
    re.compile(r"\{[\w:-]+\}`[^`]*`"),  # MyST roles: {cite}`..`, {glue:text}`..`, {math}`..`
    re.compile(r"``[^`]*``|`[^`\n]*`"),  # inline code
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"https?://\S+"),  # bare URLs
    re.compile(r"<!--.*?-->", re.S),  # HTML comments
    re.compile(r"^\s*:[\w-]+:.*$", re.M),  # directive options (:label:, :class:)
    re.compile(r"^`{3,}\{[\w-]+\}.*$", re.M),  # directive headers (```{exercise} title)
    re.compile(
        r"(?:\b(?:[Cc]hapters?|[Ss]ections?|[Ee]xercises?|[Ff]igures?|[Tt]ables?|"
        r"[Ee]quations?|[Cc]ells?|[Ss]teps? \d+ of|ch)|§)\s?\d+(?:[.–-]\d+)*"
        r"(?:,\s?§\d+(?:\.\d+)*)*"
    ),
    re.compile(r"\b(?:19|20)\d\d\b"),  # years
    # a parameter's value: one symbol (θ, h, T, α_div, σ, ...) set or bounded by a number
    re.compile(r"(?<![\w])[A-Za-zα-ωΑ-Ω](?:_\w+)?\s?[=≤≥<>]\s?[−-]?\d+(?:\.\d+)?(?:/\d+)?"),
    re.compile(r"\b\d{4}\.\d{4,5}\b"),  # arXiv ids
]
_DIRECTIVE_FENCE = re.compile(r"^(`{3,}|~{3,})\{", re.M)
NUMBER = re.compile(r"(?<![\w.])[−-]?\d+(?:[.,]\d+)*(?:e[−-]?\d+)?")


def markdown_cells(path: Path) -> list[tuple[int, str]]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return [(i, "".join(c["source"])) for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "markdown"]  # fmt: skip


def _unfence_directives(text: str) -> str:
    """Drop a directive's fence lines but keep its body (an exercise's text is prose); a fenced
    code block inside (```python in a solution) is code and goes."""
    lines, out, code = text.splitlines(), [], False
    for line in lines:
        stripped = line.strip()
        if re.match(r"^(`{3,}|~{3,})\{(math|code-cell|code)\}", stripped):
            code = True  # a math or code directive: its body is not prose
            continue
        if re.match(r"^(`{3,}|~{3,})\{", stripped):
            continue  # opening fence of a directive
        if re.match(r"^(`{3,}|~{3,})\s*$", stripped) and not code:
            continue  # closing fence of a directive
        if re.match(r"^(`{3,}|~{3,})\w", stripped):
            code = True  # ```python: code until its closing fence
            continue
        if code:
            if re.match(r"^(`{3,}|~{3,})\s*$", stripped):
                code = False
            continue
        out.append(line)
    return "\n".join(out)


def numerals(text: str, allowed: list[str]) -> list[str]:
    """The numerals left in ``text`` once glue, math, code, references and the ``allowed``
    phrases are removed."""
    text = _unfence_directives(text)
    for pattern in _STRIP:
        text = pattern.sub(" ", text)
    text = re.sub(r"\s+", " ", text)  # an allowed phrase may wrap across lines
    for phrase in sorted(allowed, key=len, reverse=True):
        text = text.replace(phrase, " ")
    return NUMBER.findall(text)


def allowed() -> dict[str, list[str]]:
    return json.loads(ALLOWED_FILE.read_text(encoding="utf-8"))

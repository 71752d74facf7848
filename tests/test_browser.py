"""Every page of the built book, as a reader's browser shows it after its scripts ran.

Loads each page of ``_build/html`` in headless Chromium, served from ``localhost`` with every other
host unresolvable, so the pages must work offline (vendored MathJax and widget JavaScript). Per
page it checks: math typeset by MathJax (no raw TeX left, no MathJax error), every image loaded,
every widget rendered from its saved state, a kernel-free slider (``irn.frames``) beside every
widget whose frame changes when the slider moves, no error output, traceback or warning on
stderr, a quiet console (no JavaScript error, no failed request), the launch and repository
buttons, local links, some content, one search field, and captions and table cells readable
(WCAG contrast 4.5:1) in the light and the dark theme. Each page is a first visit (a fresh browser
context). It keeps one screenshot per page (its first 16000 px) in ``_build/screenshots/``.

Run it after building the book:  ``make book && .venv/bin/pytest -m browser tests/test_browser.py``.
It is skipped, with the reason, where no Chromium is installed (``apt-get install chromium``),
where ``_build/html`` is missing, or where a page is older than its source or the configuration
(so ``make test``, which runs before the book is built, skips it). With IRN_BROWSER_REQUIRED=1
(CI) these reasons fail the test instead.

Chromium is driven over the DevTools protocol on a pipe (``tests/chromium.py``, which also holds
the scripts run in each page).
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path

import pytest
from chromium import (
    FRAMES_JS,
    MAX_SHOT_HEIGHT,
    MIN_CONTRAST,
    READY_JS,
    READY_MS,
    REPORT_JS,
    WIDTH,
    DevTools,
    find_chromium,
)

# Another source tree (IRN_BOOK_ROOT) or a book built elsewhere (IRN_BOOK_HTML; e.g.
# `jupyter-book build . --path-output DIR` writes DIR/_build/html) can be checked too.
ROOT = Path(os.environ.get("IRN_BOOK_ROOT", Path(__file__).resolve().parents[1])).resolve()
HTML = Path(os.environ.get("IRN_BOOK_HTML", ROOT / "_build" / "html")).resolve()
SHOTS = HTML.parent / "screenshots"
REPO = "https://github.com/irn-book/irn"
BRANCH = "main"

# Select with -m browser. The marker belongs in pyproject's [tool.pytest.ini_options] markers;
# until it is registered there, pytest's unknown-marker warning (an error here) is silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    pytestmark = pytest.mark.browser


def _html_pages() -> list[str]:
    return sorted(
        p.relative_to(HTML).as_posix()
        for p in HTML.rglob("*.html")
        if not {"_static", "_sources", "_images"} & set(p.relative_to(HTML).parts)
    )


def _source(page: str) -> Path | None:
    """The notebook or Markdown file a page was built from."""
    stem = ROOT / page.removesuffix(".html")
    return next(
        (s for s in (stem.with_suffix(".ipynb"), stem.with_suffix(".md")) if s.is_file()), None
    )


def _skip_reason() -> str | None:
    if find_chromium() is None:
        return "no Chromium (chromium, chromium-browser or google-chrome) on PATH"
    if not (HTML / "index.html").is_file():
        return f"{HTML} is missing: build the book first (make book)"
    # Sphinx rewrites every page after a configuration change and a page after its source changed.
    pages = _html_pages()
    built = {p: (HTML / p).stat().st_mtime for p in pages}
    for config in ("_config.yml", "_toc.yml"):
        if (ROOT / config).stat().st_mtime > max(built.values(), default=0):
            return f"{HTML} is older than {config}: run make book"
    for page in pages:
        source = _source(page)
        if source and source.stat().st_mtime > built[page]:
            return f"{HTML / page} is older than {source.relative_to(ROOT)}: run make book"
    return None


def _pages() -> list:
    reason = _skip_reason()
    if reason:
        return [pytest.param(reason, id="book")]
    return [pytest.param(p, id=p) for p in _html_pages()]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def site():
    """(url of _build/html on localhost, a DevTools connection to a headless Chromium)."""
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as profile,
        open(SHOTS / "chromium.log", "wb") as log,
    ):
        browser = DevTools(find_chromium(), profile, log)
        try:
            yield f"http://localhost:{server.server_address[1]}/", browser
        finally:
            browser.close()
            server.shutdown()
            server.server_close()
            thread.join()


def _frames_problems(sliders: list[dict], source: Path | None) -> list[str]:
    """What is wrong with the page's kernel-free sliders (FRAMES_JS's report)."""
    widgets = bool(source) and "widgets.interact" in source.read_text(encoding="utf-8")
    if widgets and not sliders:
        return ["a widget without a kernel-free slider beside it (irn.frames.slider)"]
    problems = []
    for k, s in enumerate(sliders):
        before, after = s["before"], s["after"]
        name = f"slider {k + 1} of {len(sliders)} ({s['frames']} frames)"
        if len(before["shown"]) != 1 or len(after["shown"]) != 1:
            problems.append(
                f"{name} shows {len(before['shown'])}, then {len(after['shown'])} images (want 1)"
            )
        elif before["shown"][0]["src"] == after["shown"][0]["src"]:
            problems.append(
                f"{name}: moving it from {before['value']} to {after['value']} "
                "did not change the image"
            )
        elif not after["shown"][0]["loaded"]:
            problems.append(f"{name}: the frame at {after['value']} did not load")
        if before["caption"] == after["caption"]:
            problems.append(f"{name}: the caption stayed {before['caption']!r}")
    return problems


def _console(events: list[dict], session: str) -> list[str]:
    """Errors the console showed: script errors, console.error, failed requests (4xx, DNS)."""
    found, urls = [], {}
    for e in events:
        if e.get("sessionId") != session:
            continue
        m, p = e.get("method"), e.get("params", {})
        if m == "Network.requestWillBeSent":
            urls[p["requestId"]] = p["request"]["url"]
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            found.append(f"request failed: {urls.get(p['requestId'])} ({p['errorText']})")
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            found.append(f"exception: {d.get('exception', {}).get('description') or d['text']}")
        elif m == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            found.append(
                "console.error: "
                + " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
            )
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            found.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
    return found


def _redirect(page: str) -> str | None:
    m = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', (HTML / page).read_text())
    return m and m.group(1)


@pytest.mark.parametrize("page", _pages())
def test_page_renders(page, request):
    if not page.endswith(".html"):  # the book cannot be checked here; page says why
        if os.environ.get("IRN_BROWSER_REQUIRED"):  # CI: a skip would hide a broken setup
            pytest.fail(page)
        pytest.skip(page)
    _check_page(page, *request.getfixturevalue("site"))


def _check_page(page: str, base: str, browser: DevTools):
    target = _redirect(page)
    if target:  # the root index.html: a redirect to the first page (_ext/book_html.py)
        text = (HTML / page).read_text()
        assert (HTML / page).parent.joinpath(target).is_file(), f"{page} redirects to {target}"
        assert re.search(r"<title>[^<]+</title>", text), f"{page} has no title"
        assert f'<a href="{target}">' in text, f"{page} does not link to {target}"
        return
    # A fresh browser context per page: no storage or cache from other pages (a first visit).
    context = browser.send("Target.createBrowserContext")["browserContextId"]
    target_id = browser.send("Target.createTarget", url="about:blank", browserContextId=context)[
        "targetId"
    ]
    session = browser.send("Target.attachToTarget", targetId=target_id, flatten=True)["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session)
        browser.send("Page.navigate", session, url=base + page)
        browser.wait_for("Page.loadEventFired", session, timeout=60)
        browser.evaluate(session, READY_JS, timeout=READY_MS / 1000 + 10)
        r = browser.evaluate(session, REPORT_JS)
        browser.evaluate(session, "document.documentElement.dataset.theme = 'light'")
        shot = browser.send(
            "Page.captureScreenshot",
            session,
            format="png",
            captureBeyondViewport=True,
            clip={
                "x": 0,
                "y": 0,
                "width": WIDTH,
                "height": min(r["height"], MAX_SHOT_HEIGHT),
                "scale": 1,
            },
        )
        (SHOTS / (page.replace("/", "__").removesuffix(".html") + ".png")).write_bytes(
            base64.b64decode(shot["data"])
        )
        sliders = browser.evaluate(session, FRAMES_JS)  # after the screenshot: first frames
        console = _console(browser.events, session)  # a script error of a slider shows here
    finally:
        browser.send("Target.disposeBrowserContext", browserContextId=context)
        browser.events.clear()

    problems = [f"console: {c}" for c in console]
    if page != "search.html" and r["content_chars"] - r["heading_chars"] < 40:
        problems.append(f"the page is empty ({r['content_chars']} characters)")
    if r["untypeset"]:
        problems.append(
            f"{len(r['untypeset'])} of {r['math']} math elements not typeset, "
            f"first: {r['untypeset'][0]!r}"
        )
    problems += [f"MathJax error: {e}" for e in r["math_errors"]]
    problems += [f"raw TeX in the text: {t!r}" for t in r["raw_tex"]]
    problems += [f"image not loaded: {src}" for src in r["broken_images"]]
    if r["widgets_without_state"] or r["widgets_as_text"]:
        problems.append(
            f"{r['widgets_without_state'] + r['widgets_as_text']} widget(s) without saved state "
            "(store it with scripts/run_notebooks.py)"
        )
    if r["widgets_unrendered"]:
        problems.append(f"{r['widgets_unrendered']} of {r['widgets']} widget(s) not rendered")
    if r["error_outputs"] or r["tracebacks"]:
        problems.append(f"{r['error_outputs']} error output(s), {r['tracebacks']} traceback(s)")
    problems += [f"warning or error on stderr: {t!r}" for t in r["stderr_problems"]]
    if r["search_fields"] != 1:
        problems.append(f"{r['search_fields']} visible search fields (want 1)")
    problems += [f"low contrast ({MIN_CONTRAST}:1 needed): {c}" for c in r["low_contrast"]]

    source = _source(page)
    problems += _frames_problems(sliders, source)
    if source and source.suffix == ".ipynb":
        path = source.relative_to(ROOT).as_posix()
        slug = REPO.removeprefix("https://github.com/")
        want = {
            "binder": f"https://mybinder.org/v2/gh/{slug}/{BRANCH}?urlpath=lab/tree/{path}",
            "colab": f"https://colab.research.google.com/github/{slug}/blob/{BRANCH}/{path}",
        }
    else:
        want = {"binder": None, "colab": None}  # Markdown and generated pages: nothing to launch
    want["repository"] = REPO
    problems += [f"{k} button: {r[k]!r}, want {v!r}" for k, v in want.items() if r[k] != v]

    for link in r["local_links"]:
        path = HTML / link.lstrip("/")
        if not (path.is_file() or (path / "index.html").is_file()):
            problems.append(f"broken link: {link}")

    assert not problems, f"{page} ({r['title']}):\n  " + "\n  ".join(problems)

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

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 and 4), so no websocket client is needed.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import http.server
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest

# Another source tree (IRN_BOOK_ROOT) or a book built elsewhere (IRN_BOOK_HTML; e.g.
# `jupyter-book build . --path-output DIR` writes DIR/_build/html) can be checked too.
ROOT = Path(os.environ.get("IRN_BOOK_ROOT", Path(__file__).resolve().parents[1])).resolve()
HTML = Path(os.environ.get("IRN_BOOK_HTML", ROOT / "_build" / "html")).resolve()
SHOTS = HTML.parent / "screenshots"
REPO = "https://github.com/irn-book/irn"
BRANCH = "main"
WIDTH, HEIGHT, MAX_SHOT_HEIGHT = 1280, 900, 16000  # Chromium draws at most 16384 px
READY_MS = 15000  # budget for MathJax, widgets and images after the load event
MIN_CONTRAST = 4.5  # WCAG AA for normal text

# Select with -m browser. The marker belongs in pyproject's [tool.pytest.ini_options] markers;
# until it is registered there, pytest's unknown-marker warning (an error here) is silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    pytestmark = pytest.mark.browser


def _chromium() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((p for p in map(shutil.which, names) if p), None)


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
    if _chromium() is None:
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


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe; one page at a time."""

    def __init__(self, exe: str, profile: str, log):
        to_child, self._out = os.pipe()  # we write commands, Chromium reads fd 3
        self._in, from_child = os.pipe()  # Chromium writes fd 4, we read replies and events
        # Above fd 10, so the dup2 onto 3 and 4 in the child cannot overwrite each other.
        hi = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child, from_child)]
        for fd in (to_child, from_child):
            os.close(fd)

        def wire():  # in the child, before exec
            os.dup2(hi[0], 3)
            os.dup2(hi[1], 4)

        args = [
            exe,
            "--headless",
            "--no-sandbox",  # CI containers run as root
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            "--remote-debugging-pipe",
        ]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=wire, pass_fds=(3, 4)
        )
        for fd in hi:
            os.close(fd)
        self._buf = b""
        self._next = 0
        self.events: list[dict] = []

    def close(self):
        os.close(self._out)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._in)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (status {self.proc.poll()})")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params):
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._out, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float):
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline))

    def evaluate(self, session: str, js: str, timeout: float = 30):
        """Value of a JavaScript expression (awaited if it is a promise)."""
        result = self.send(
            "Runtime.evaluate",
            session,
            timeout,
            expression=js,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


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
        browser = DevTools(_chromium(), profile, log)
        try:
            yield f"http://localhost:{server.server_address[1]}/", browser
        finally:
            browser.close()
            server.shutdown()
            server.server_close()
            thread.join()


# After the load event: wait for MathJax's typesetting, the widget manager and every image.
READY_JS = """
(async () => {
  const deadline = Date.now() + READY_MS;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const until = (p) => Promise.race([p, sleep(Math.max(0, deadline - Date.now()))]);
  for (const img of document.images) img.loading = "eager";
  const mathjax = window.MathJax && window.MathJax.startup;
  if (mathjax && mathjax.promise) await until(mathjax.promise);
  const views = () => [...document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-view+json"]')];
  while (Date.now() < deadline && views().some((v) => !(v.previousElementSibling
      && v.previousElementSibling.classList.contains("widget-subarea")
      && v.previousElementSibling.children.length))) await sleep(50);
  await until(Promise.all([...document.images].map((i) => i.decode().catch(() => null))));
  return true;
})()
""".replace("READY_MS", str(READY_MS))

# Everything the test asserts, read from the finished page.
REPORT_JS = r"""
(() => {
  const main = document.querySelector("main") || document.body;
  const visible = (e) => e.getClientRects().length > 0
      && getComputedStyle(e).visibility !== "hidden";
  const out = {title: document.title};
  const article = document.querySelector("article") || main;
  out.content_chars = article.innerText.trim().length;
  out.heading_chars = [...article.querySelectorAll("h1")].map((h) => h.innerText.trim())
      .join("").length;

  const maths = [...main.querySelectorAll(".math")];
  out.math = maths.length;
  out.untypeset = maths.filter((m) => !m.querySelector("mjx-container"))
      .map((m) => m.textContent.trim().slice(0, 60));
  out.math_errors = [...document.querySelectorAll("mjx-merror")]
      .map((e) => e.getAttribute("data-mjx-error") || e.textContent).slice(0, 5);
  const prose = main.cloneNode(true);
  prose.querySelectorAll("pre, code, script, style, textarea, mjx-container, .highlight")
      .forEach((e) => e.remove());
  out.raw_tex = (prose.textContent.match(
      /\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\$[^$\n]{0,80}[\\^_][^$\n]{0,80}\$/g) || []).slice(0, 5);

  out.images = document.images.length;
  out.broken_images = [...document.images].filter((i) => !(i.complete && i.naturalWidth > 0))
      .map((i) => i.getAttribute("src"));

  const saved = new Set();
  for (const s of document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-state+json"]')) {
    Object.keys(JSON.parse(s.textContent).state || {}).forEach((k) => saved.add(k));
  }
  const views = [...document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-view+json"]')];
  out.widgets = views.length;
  out.widgets_without_state = views.filter((v) => !saved.has(JSON.parse(v.textContent).model_id))
      .length;
  // Without saved state myst-nb shows a widget's text form, e.g. "interactive(children=(...".
  out.widgets_as_text = [...main.querySelectorAll(".output.text_plain")].filter((o) =>
      /^\s*(interactive|[A-Z]\w*(Slider|Box|Dropdown|Button|Output))\(/.test(o.textContent))
      .length;
  out.widgets_unrendered = views.filter((v) => {
    const area = v.previousElementSibling;
    return !(area && area.classList.contains("widget-subarea")
        && area.querySelector(".jupyter-widgets, [class*='widget-']")
        && area.getBoundingClientRect().height > 0);
  }).length;

  const outputs = [...main.querySelectorAll(".cell_output")];
  out.error_outputs = main.querySelectorAll(".output.error, .output.traceback").length;
  out.tracebacks = outputs.filter((o) => o.textContent.includes("Traceback (most recent call"))
      .length;
  out.stderr_problems = [...main.querySelectorAll(".output.stderr")].map((o) => o.textContent)
      .filter((t) => /Warning|Error|Exception/.test(t)).map((t) => t.trim().slice(0, 160));

  const href = (sel) => { const a = document.querySelector(sel); return a && a.href; };
  // Bootstrap moves a button's title into a tooltip, so find them by their targets.
  out.binder = href('.dropdown-launch-buttons a[href^="https://mybinder.org/"]');
  out.colab = href('.dropdown-launch-buttons a[href^="https://colab.research.google.com/"]');
  out.repository = href("a.btn-source-repository-button");
  out.local_links = [...new Set([...document.querySelectorAll("a[href]")]
      .filter((a) => a.origin === location.origin && a.protocol.startsWith("http"))
      .map((a) => decodeURIComponent(a.pathname)))];
  out.search_fields = [...document.querySelectorAll(
      ".search-button-field, .search-button, form.bd-search")]
      .filter((e) => visible(e) && !e.closest("main")).length;  // search.html has one in main

  // Contrast of captions against what is behind them, in the light and in the dark theme.
  const rgba = (s) => {
    const v = s.match(/[\d.]+/g).map(Number);
    return v.length === 3 ? [...v, 1] : v;
  };
  const over = (top, below) => top.slice(0, 3).map((c, i) => c * top[3] + below[i] * (1 - top[3]));
  const background = (e) => {
    const layers = [];
    for (let n = e; n; n = n.parentElement) {
      const c = rgba(getComputedStyle(n).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    return layers.reverse().reduce((below, c) => over(c, below), [255, 255, 255]);
  };
  const lum = (c) => {  // WCAG 2 relative luminance
    const l = c.map((v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * l[0] + 0.7152 * l[1] + 0.0722 * l[2];
  };
  const contrast = (e) => {
    const bg = background(e);
    const fg = over(rgba(getComputedStyle(e).color), bg);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    return (a + 0.05) / (b + 0.05);
  };
  const theme = document.documentElement.dataset.theme;
  out.low_contrast = [];
  for (const t of ["light", "dark"]) {
    document.documentElement.dataset.theme = t;
    for (const e of main.querySelectorAll("caption, figcaption, .caption-text, th, td")) {
      if (!visible(e) || !e.textContent.trim()) continue;
      const r = contrast(e);
      if (r < MIN_CONTRAST) out.low_contrast.push(`${t}: ${e.tagName.toLowerCase()} ` +
          `"${e.textContent.trim().slice(0, 40)}" ${r.toFixed(2)}:1`);
    }
  }
  document.documentElement.dataset.theme = theme;
  out.height = Math.ceil(document.documentElement.scrollHeight);
  return out;
})()
""".replace("MIN_CONTRAST", str(MIN_CONTRAST))


# Each kernel-free slider (irn.frames) moved to its other end, as a reader drags it: the value set
# and the events a range input fires. Reports the frame shown before and after.
FRAMES_JS = """
(() => [...document.querySelectorAll(".irn-frames")].map((box) => {
  const input = box.querySelector('input[type="range"]');
  const shown = () => [...box.querySelectorAll("img")].filter((i) => i.getClientRects().length)
      .map((i) => ({src: i.src, loaded: i.complete && i.naturalWidth > 0}));
  const caption = () => box.querySelector("output").textContent;
  const before = {shown: shown(), caption: caption(), value: input.value};
  input.value = input.value === input.max ? input.min : input.max;
  for (const type of ["input", "change"]) input.dispatchEvent(new Event(type, {bubbles: true}));
  return {frames: box.querySelectorAll("img").length, before,
          after: {shown: shown(), caption: caption(), value: input.value}};
}))()
"""


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

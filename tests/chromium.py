"""Headless Chromium over the DevTools protocol, and the scripts the browser test runs in a page.

Chromium is driven on a pipe (``--remote-debugging-pipe``: JSON messages separated by NUL bytes
on file descriptors 3 and 4), so no websocket client is needed. Used by ``test_browser.py``.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time

WIDTH, HEIGHT, MAX_SHOT_HEIGHT = 1280, 900, 16000  # Chromium draws at most 16384 px
READY_MS = 15000  # budget for MathJax, widgets and images after the load event
MIN_CONTRAST = 4.5  # WCAG AA for normal text


def find_chromium() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((p for p in map(shutil.which, names) if p), None)


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

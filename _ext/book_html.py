"""Sphinx extension for the book's HTML: each page's scripts once, and a real root index.html.

1. Sphinx 7.4 (pinned by Jupyter Book 1.x) adds a second copy of every inline script that an
   extension registers after the builder started (``registry.js_files`` holds it with
   ``filename=None`` and the builder's copy is compared as ``filename=""``). sphinx-thebe's
   ``<script>const THEBE_JS_URL = ...</script>`` is such a script, and its second ``const``
   declaration is a SyntaxError on every page ("Identifier 'THEBE_JS_URL' has already been
   declared"). Keep the first of equal scripts.
2. The book's first page is book/intro.html; sphinx-external-toc writes the site's index.html
   as one bare ``<meta http-equiv="Refresh">`` line (no title, an empty page where redirects are
   off) and never updates it. Write a small page with a title, the redirect and a link.

Registered in _config.yml (``sphinx.local_extensions``).
"""

from __future__ import annotations

import html
from pathlib import Path


def _unique_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _index_page(app, exception):
    if exception is not None or app.builder.format != "html" or app.config.root_doc == "index":
        return
    first = app.builder.get_target_uri(app.config.root_doc)
    title = html.escape(app.config.html_title or app.config.project)
    favicon = app.config.html_favicon
    icon = f'<link rel="icon" href="_static/{Path(favicon).name}">\n' if favicon else ""
    Path(app.outdir, "index.html").write_text(
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n"
        f'<meta http-equiv="Refresh" content="0; url={first}">\n{icon}'
        "</head>\n<body>\n"
        f'<p>The book starts at <a href="{first}">{title}</a>.</p>\n'
        "</body>\n</html>\n",
        encoding="utf8",
    )


def setup(app):
    # After the handlers that add per-page scripts (myst-nb's widget JavaScript, priority 500).
    app.connect("html-page-context", _unique_scripts, priority=900)
    # After sphinx-external-toc's own redirect (priority 500), which this replaces.
    app.connect("build-finished", _index_page, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

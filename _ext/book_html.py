"""Sphinx extension for the book's HTML: write each page's scripts once.

Sphinx 7.4 (pinned by Jupyter Book 1.x) adds a second copy of every inline script that an
extension registers after the builder started (``registry.js_files`` holds it with
``filename=None`` and the builder's copy is compared as ``filename=""``). sphinx-thebe's
``<script>const THEBE_JS_URL = ...</script>`` is such a script, and its second ``const``
declaration is a SyntaxError on every page ("Identifier 'THEBE_JS_URL' has already been
declared"). This keeps the first of equal scripts. Registered in _config.yml
(``sphinx.local_extensions``).
"""

from __future__ import annotations


def _unique_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (script.filename or "", tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    # After the handlers that add per-page scripts (myst-nb's widget JavaScript, priority 500).
    app.connect("html-page-context", _unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

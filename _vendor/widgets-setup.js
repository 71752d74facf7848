// Ours (not vendored). Loaded on pages with widgets, after require.js and before the widget
// manager embed-amd.js (the order of nb_ipywidgets_js in _config.yml).
(function () {
  // 1. The widget manager loads its icon fonts from the folder that require.js resolves its module
  //    name to, by default next to the page (book/@jupyter-widgets/html-manager/dist/, a 404):
  //    resolve that name to the vendored fonts in _static/html-manager/ instead.
  var root = new URL(document.documentElement.dataset.content_root || "./", document.baseURI);
  require.config({
    paths: { "@jupyter-widgets/html-manager/dist": new URL("_static/html-manager", root).href },
  });
  // 2. The widget manager typesets widget labels with MathJax 2's API, MathJax.Hub.Queue(...);
  //    the book loads MathJax 3, which has no Hub (a TypeError on every label). Forward the call
  //    to MathJax 3. MathJax is a deferred script, so it exists once the document is parsed.
  document.addEventListener("DOMContentLoaded", function () {
    var mathjax = window.MathJax;
    if (!mathjax || mathjax.Hub || !mathjax.startup) return;
    mathjax.Hub = {
      Queue: function (job) {
        var element = job[2];  // ["Typeset", MathJax.Hub, element]
        mathjax.startup.promise.then(function () { return mathjax.typesetPromise([element]); });
      },
    };
  });
})();

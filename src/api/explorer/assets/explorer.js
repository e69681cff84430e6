// instancemap explorer: the pages are whole without this; it adds copy
// buttons and "/" to focus the search box.
"use strict";
(function () {
  function copy(text, button) {
    var done = function () {
      var was = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = was; }, 1500);
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () { button.textContent = "Copy failed"; });
    } else {
      button.textContent = "Copy failed";
    }
  }
  document.querySelectorAll("button.copy").forEach(function (b) {
    b.hidden = false;
    b.addEventListener("click", function () {
      if (b.dataset.copy !== undefined) {
        copy(b.dataset.copy, b);
      } else if (b.dataset.copyUrl) {
        fetch(b.dataset.copyUrl, { headers: { Accept: "application/json" } })
          .then(function (r) { return r.text(); })
          .then(function (t) { copy(t, b); }, function () { b.textContent = "Copy failed"; });
      }
    });
  });
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.key === "/" && !(t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement)) {
      var q = document.getElementById("q");
      if (q) { e.preventDefault(); q.focus(); q.select(); }
    }
  });
})();

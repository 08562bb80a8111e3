/* Logs page: a click anywhere on a row opens its detail (the time cell's link does the work,
   so keyboard users get the same), the detail panel opens and closes, and the selected row is
   highlighted. */
(function () {
  "use strict";

  function layout() { return document.getElementById("logs-layout"); }

  function openPanel() {
    var panel = document.getElementById("detail");
    if (!panel) return;
    panel.hidden = false;
    layout().classList.add("with-detail");
  }

  function closePanel() {
    var panel = document.getElementById("detail");
    if (!panel) return;
    panel.hidden = true;
    panel.innerHTML = "";
    layout().classList.remove("with-detail");
    document.querySelectorAll("#log-rows tr.selected").forEach(function (tr) { tr.classList.remove("selected"); });
    var url = new URL(location.href);
    if (url.searchParams.has("log")) {
      url.searchParams.delete("log");
      history.pushState({}, "", url.pathname + url.search);
    }
  }

  document.addEventListener("click", function (e) {
    if (e.target.closest("[data-close-detail]")) { closePanel(); return; }
    var row = e.target.closest("#log-rows tr.clickable");
    if (!row || e.target.closest("a, button")) return;
    var link = row.querySelector("td a");
    if (link) link.click();
  });

  document.addEventListener("htmx:beforeRequest", function (e) {
    var row = e.target.closest && e.target.closest("#log-rows tr.clickable");
    if (!row) return;
    document.querySelectorAll("#log-rows tr.selected").forEach(function (tr) { tr.classList.remove("selected"); });
    row.classList.add("selected");
  });

  document.addEventListener("htmx:afterSwap", function (e) {
    if (e.detail.target && e.detail.target.id === "detail") {
      openPanel();
      var panel = document.getElementById("detail");
      var heading = panel.querySelector("h2");
      if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus({ preventScroll: true }); }
    }
  });

  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && document.getElementById("detail") && !document.getElementById("detail").hidden) closePanel();
  });
})();

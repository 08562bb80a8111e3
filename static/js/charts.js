/* Draws every <div data-chart="json-script-id"> with uPlot. Data comes from a json_script
   element: {"t": [epoch seconds...], "<series>": [values...]} or, for group charts,
   {"t": [...], "series": [[label, [values...]], ...]}. Charts are redrawn after htmx swaps,
   on resize and when the colour scheme changes. */
(function () {
  "use strict";
  var charts = [];

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function palette() {
    return [css("--chart-1"), css("--chart-2"), css("--chart-3"), css("--chart-4"), css("--chart-5")];
  }

  function formatter(unit) {
    return function (u, v) {
      if (v == null) return "–";
      if (unit === "usd") return "$" + (v === 0 ? "0" : Math.abs(v) < 0.01 ? v.toPrecision(2) : Math.abs(v) < 0.1 ? v.toFixed(3) : v.toFixed(2));
      if (unit === "ms") return v >= 1000 ? (v / 1000).toFixed(1) + " s" : Math.round(v) + " ms";
      if (unit === "pct") return (v * 100).toFixed(1) + "%";
      if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
      if (Math.abs(v) >= 1e3) return (v / 1e3).toFixed(1) + "k";
      return String(Math.round(v * 100) / 100);
    };
  }

  // Bars are centred on their time, so the first and last would be cut in half at the plot's
  // edges: widen the x range by half a step on each side for bar charts.
  function xScale(t, bars) {
    if (!bars || t.length < 2) return { time: true };
    var half = (t[1] - t[0]) / 2;
    return { time: true, range: function () { return [t[0] - half, t[t.length - 1] + half]; } };
  }

  function readJSON(id) {
    var el = document.getElementById(id);
    if (!el) return null;
    try { return JSON.parse(el.textContent); } catch (e) { return null; }
  }

  function build(el) {
    var data = readJSON(el.dataset.chart);
    if (!data || !data.t || !data.t.length) {
      el.innerHTML = '<p class="muted">No data in this window.</p>';
      return null;
    }
    var colors = palette();
    var unit = el.dataset.unit || "count";
    var fmt = formatter(unit);
    var rows = [data.t];
    var series = [{}];
    if (data.series) {
      data.series.forEach(function (s, i) {
        rows.push(s[1]);
        series.push({ label: String(s[0]), stroke: colors[i % colors.length], width: 2, value: fmt });
      });
    } else {
      var names = (el.dataset.series || "").split(",");
      var labels = (el.dataset.labels || el.dataset.series || "").split(",");
      names.forEach(function (name, i) {
        rows.push(data[name] || []);
        var s = { label: labels[i] || name, stroke: colors[i % colors.length], width: 2, value: fmt };
        if (el.dataset.bars === "true") {
          s.fill = colors[i % colors.length] + "55";
          s.paths = uPlot.paths.bars({ size: [0.7, 40] });
        }
        series.push(s);
      });
      var previous = el.dataset.compare ? readJSON(el.dataset.compare) : null;
      if (previous && previous[names[0]]) {
        var prev = previous[names[0]].slice(0, data.t.length);
        while (prev.length < data.t.length) prev.push(null);
        rows.push(prev);
        series.push({ label: "Previous", stroke: css("--chart-prev"), width: 1.5, dash: [5, 4], value: fmt });
      }
    }
    var axis = { stroke: css("--muted"), grid: { stroke: css("--border"), width: 1 }, ticks: { stroke: css("--border") } };
    var opts = {
      width: Math.max(el.clientWidth, 200),
      height: el.classList.contains("small") ? 160 : 220,
      series: series,
      axes: [axis, Object.assign({}, axis, { values: function (u, vals) { return vals.map(function (v) { return fmt(u, v); }); }, size: 64 })],
      scales: { x: xScale(data.t, el.dataset.bars === "true") },
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    el.innerHTML = "";
    el.setAttribute("role", "img");
    if (!el.getAttribute("aria-label")) el.setAttribute("aria-label", "Chart: " + series.slice(1).map(function (s) { return s.label; }).join(", "));
    return new uPlot(opts, rows, el);
  }

  function drawAll(root) {
    if (typeof uPlot === "undefined") return;
    charts = charts.filter(function (c) {
      if (document.body.contains(c.root)) return true;
      c.destroy();
      return false;
    });
    (root || document).querySelectorAll("[data-chart]").forEach(function (el) {
      var existing = charts.find(function (c) { return el.contains(c.root); });
      if (existing) { existing.destroy(); charts.splice(charts.indexOf(existing), 1); }
      var chart = build(el);
      if (chart) charts.push(chart);
    });
  }

  function redraw() { drawAll(document); }

  window.PorticoCharts = { redraw: redraw };
  document.addEventListener("DOMContentLoaded", redraw);
  document.addEventListener("htmx:afterSettle", redraw);
  document.addEventListener("htmx:historyRestore", redraw);
  // Empty filter fields are left out of the URL, so shared links stay short.
  document.addEventListener("htmx:configRequest", function (e) {
    if (e.detail.verb !== "get") return;
    var fd = e.detail.formData;
    if (!fd || !fd.forEach) return;
    var empty = [];
    fd.forEach(function (v, k) {
      if (fd.getAll(k).every(function (x) { return x === ""; }) && empty.indexOf(k) < 0) empty.push(k);
    });
    empty.forEach(function (k) { fd.delete(k); });
  });
  var timer;
  window.addEventListener("resize", function () { clearTimeout(timer); timer = setTimeout(redraw, 150); });
  if (window.matchMedia) {
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redraw);
  }
})();

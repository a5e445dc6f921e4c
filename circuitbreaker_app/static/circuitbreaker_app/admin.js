/* circuitbreaker_app admin: count down "trial in" cells and refresh a circuit's live
   state panel from the status endpoint. Plain JavaScript, no build step. The words it
   writes come translated from the page (<script id="cb-labels">, see admin.js_labels()). */
"use strict";
(function () {
  var COLOURS = {
    closed: ["#2e7d32", "#ffffff"], open: ["#c62828", "#ffffff"],
    half_open: ["#f9a825", "#1f1f1f"], forced_open: ["#616161", "#ffffff"],
    forced_closed: ["#616161", "#ffffff"], disabled: ["#9e9e9e", "#1f1f1f"]
  };
  var DOTS = { forced_open: "#ef5350", forced_closed: "#66bb6a" };
  var LABELS = null;

  /* The translated words of the page; English when the page carries none. */
  function labels() {
    if (LABELS === null) {
      var node = document.getElementById("cb-labels");
      LABELS = node ? JSON.parse(node.textContent) : {};
      LABELS.states = LABELS.states || {};
    }
    return LABELS;
  }

  function stateLabel(state) {
    return labels().states[state] || state.replace(/_/g, " ");
  }

  function atTrip() { return " " + (labels().at_trip || "at trip"); }

  function badge(state) {
    var span = document.createElement("span");
    var colours = COLOURS[state] || COLOURS.disabled;
    span.className = "cb-badge cb-badge--" + state;
    span.setAttribute("data-state", state);
    span.style.cssText = "background:" + colours[0] + ";color:" + colours[1] +
      ";padding:2px 8px;border-radius:10px;font-weight:600;font-size:11px;" +
      "letter-spacing:.03em;white-space:nowrap";
    if (DOTS[state]) {
      var dot = document.createElement("span");
      dot.className = "cb-dot";
      dot.style.color = DOTS[state];
      dot.setAttribute("aria-hidden", "true");
      dot.textContent = "\u25cf\u00a0";  // the dot stays with the first word
      span.appendChild(dot);
    }
    span.appendChild(document.createTextNode(stateLabel(state).toUpperCase()));
    return span;
  }

  function countdown(seconds) {
    if (seconds === null || seconds === undefined) {
      return document.createTextNode("\u2013");
    }
    var span = document.createElement("span");
    span.className = "cb-countdown";
    span.setAttribute("data-seconds", String(seconds));
    span.textContent = Math.round(seconds) + " s";
    return span;
  }

  /* "12 s ago" with the exact time on hover, as circuitbreaker_app/ago.py renders it. The
     words come translated from the page (cb-labels' "time", with the server's clock). */
  var TIME_WORDS = {
    d: "%(n)s d", h: "%(n)s h", min: "%(n)s min", s: "%(n)s s",
    ago: "%(span)s ago", "in": "in %(span)s"
  };
  var UNITS = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
  var skew = 0;  // server clock minus browser clock, in ms

  function fill(template, name, value) { return template.replace("%(" + name + ")s", value); }

  function duration(seconds) {
    var left = Math.max(0, Math.round(seconds)), first = UNITS.length - 1;
    for (var i = 0; i < UNITS.length; i++) {
      if (left >= UNITS[i][0]) { first = i; break; }
    }
    var parts = [];
    UNITS.slice(first, first + 2).forEach(function (unit) {
      parts.push(fill(TIME_WORDS[unit[1]], "n", Math.floor(left / unit[0])));
      left %= unit[0];
    });
    return parts.join(" ");
  }

  function relative(epochMs) {
    var seconds = (epochMs - (Date.now() + skew)) / 1000;
    if (seconds > 0.5) { return fill(TIME_WORDS["in"], "span", duration(seconds)); }
    return fill(TIME_WORDS.ago, "span", duration(-seconds));
  }

  function timeTag(iso) {
    if (!iso) { return document.createTextNode("\u2013"); }
    var node = document.createElement("time");
    var exact = new Date(iso).toISOString().replace(/\.\d+Z$/, "+00:00");
    node.className = "cb-ago";
    node.setAttribute("datetime", exact);
    node.title = exact;
    node.textContent = relative(Date.parse(iso));
    return node;
  }

  function tickTimes() {
    var nodes = document.querySelectorAll("time.cb-ago[datetime]");
    for (var i = 0; i < nodes.length; i++) {
      nodes[i].textContent = relative(Date.parse(nodes[i].getAttribute("datetime")));
    }
  }

  function loadLabels() {
    var given = labels().time || {};
    for (var key in TIME_WORDS) { if (given[key]) { TIME_WORDS[key] = given[key]; } }
    if (given.now) { skew = given.now * 1000 - Date.now(); }
  }

  function tick() {
    tickTimes();
    var nodes = document.querySelectorAll(".cb-countdown[data-seconds]");
    for (var i = 0; i < nodes.length; i++) {
      var left = Math.max(0, parseFloat(nodes[i].getAttribute("data-seconds")) - 1);
      nodes[i].setAttribute("data-seconds", String(left));
      nodes[i].textContent = left > 0 ? Math.round(left) + " s" : (labels().due || "due");
    }
  }

  function replace(cell, node) {
    while (cell.firstChild) { cell.removeChild(cell.firstChild); }
    cell.appendChild(node);
  }

  function refreshPanel(panel) {
    var url = panel.getAttribute("data-status-url") + "?circuit=" +
      encodeURIComponent(panel.getAttribute("data-circuit"));
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data || !data.circuits.length) { return; }
        var c = data.circuits[0];
        var cell = function (name) { return panel.querySelector('[data-field="' + name + '"]'); };
        replace(cell("state"), badge(c.state));
        replace(cell("retry_after"), countdown(c.retry_after));
        var trip = c.at_trip;
        cell("failure_rate").textContent = (trip ? trip.failure_rate : c.failure_rate).toFixed(1) +
          " %" + (trip ? atTrip() : "");
        if (panel.getAttribute("data-slow-enabled") === "1") {
          cell("slow_call_rate").textContent = (trip ? trip.slow_call_rate : c.slow_call_rate)
            .toFixed(1) + " %" + (trip ? atTrip() : "");
        }
        cell("calls").textContent = String(trip ? trip.calls : c.calls) + (trip ? atTrip() : "");
        cell("open_count").textContent = String(c.open_count);
        if (cell("rejected")) { cell("rejected").textContent = c.rejected.toLocaleString(); }
        cell("generation").textContent = String(c.generation);
        replace(cell("changed_at"), timeTag(c.changed_at));
      })
      .catch(function () { /* keep the last values; the next poll retries */ });
  }

  window.circuitbreakerBadge = badge;
  window.circuitbreakerLabels = labels;
  window.circuitbreakerStateLabel = stateLabel;
  window.circuitbreakerCountdown = countdown;
  window.circuitbreakerTime = { tag: timeTag, relative: relative, duration: duration };
  document.addEventListener("DOMContentLoaded", function () {
    loadLabels();
    tickTimes();
    window.setInterval(tick, 1000);
    var panels = document.querySelectorAll(".cb-live[data-status-url]");
    Array.prototype.forEach.call(panels, function (panel) {
      window.setInterval(function () { refreshPanel(panel); }, 5000);
    });
  });
})();

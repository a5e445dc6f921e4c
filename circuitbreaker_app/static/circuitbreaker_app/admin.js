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
      dot.textContent = "\u25cf ";
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

  function tick() {
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
        cell("generation").textContent = String(c.generation);
        if (c.changed_at) {
          cell("changed_at").textContent = new Date(c.changed_at).toLocaleString();
        }
      })
      .catch(function () { /* keep the last values; the next poll retries */ });
  }

  window.circuitbreakerBadge = badge;
  window.circuitbreakerLabels = labels;
  window.circuitbreakerStateLabel = stateLabel;
  window.circuitbreakerCountdown = countdown;
  document.addEventListener("DOMContentLoaded", function () {
    window.setInterval(tick, 1000);
    var panels = document.querySelectorAll(".cb-live[data-status-url]");
    Array.prototype.forEach.call(panels, function (panel) {
      window.setInterval(function () { refreshPanel(panel); }, 5000);
    });
  });
})();

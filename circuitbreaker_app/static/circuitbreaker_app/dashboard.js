/* circuitbreaker_app dashboard: one card per circuit, redrawn from the status endpoint
   every few seconds, with an inline-SVG sparkline of the failure rate over the last hour.
   Plain JavaScript, no build step; text goes in with textContent (never innerHTML). */
"use strict";
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var WIDTH = 240, HEIGHT = 40, HOUR_MS = 3600 * 1000;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    for (var key in attrs) { node.setAttribute(key, attrs[key]); }
    return node;
  }

  function y(rate) { return (HEIGHT - 2 - (Math.min(100, Math.max(0, rate)) / 100) * (HEIGHT - 4)).toFixed(1); }

  /* The failure rate of the window, one point a minute: a gap where the window held no
     calls, the minutes in which calls were rejected shaded red, the threshold dashed. */
  function sparkline(circuit, now, label) {
    var chart = svg("svg", {
      "class": "cb-spark", viewBox: "0 0 " + WIDTH + " " + HEIGHT,
      preserveAspectRatio: "none", role: "img", "aria-label": label
    });
    var title = svg("title", {});
    title.textContent = label;
    chart.appendChild(title);
    chart.appendChild(svg("rect", { x: 0, y: 0, width: WIDTH, height: HEIGHT, fill: "#f7f7f7" }));
    var threshold = y(circuit.config.failure_rate_threshold);
    chart.appendChild(svg("line", {
      x1: 0, x2: WIDTH, y1: threshold, y2: threshold,
      stroke: "#c62828", "stroke-width": 1, "stroke-dasharray": "3 3", opacity: 0.6
    }));
    var REJECTING = { open: true, half_open: true, forced_open: true };
    var points = (circuit.history || []).map(function (p) {
      return { t: Date.parse(p.t), rate: p.failure_rate, calls: p.calls, state: p.state };
    });
    points.push({ t: now, rate: circuit.failure_rate, calls: circuit.calls, state: circuit.state });
    var x = function (t) { return WIDTH - ((now - t) / HOUR_MS) * WIDTH; };
    var minute = WIDTH / 60;
    var segments = [], current = [];
    points.forEach(function (p) {
      if (now - p.t > HOUR_MS) { return; }
      if (REJECTING[p.state]) {  // shade the minutes in which calls were rejected
        var left = Math.max(0, x(p.t));
        chart.appendChild(svg("rect", {
          x: left.toFixed(1), y: 0, width: Math.max(1, Math.min(minute, WIDTH - left)).toFixed(1),
          height: HEIGHT, fill: "#ef9a9a", opacity: 0.6
        }));
      }
      if (p.calls > 0) {
        current.push(x(p.t).toFixed(1) + "," + y(p.rate));
      } else if (current.length) {  // no calls in the window: a gap, not a 0 % rate
        segments.push(current);
        current = [];
      }
    });
    if (current.length) { segments.push(current); }
    segments.forEach(function (coords) {
      if (coords.length === 1) {
        var only = coords[0].split(",");
        chart.appendChild(svg("circle", { cx: only[0], cy: only[1], r: 1.5, fill: "#1565c0" }));
        return;
      }
      chart.appendChild(svg("polyline", {
        points: coords.join(" "), fill: "none", stroke: "#1565c0", "stroke-width": 1.5,
        "stroke-linejoin": "round"
      }));
    });
    return chart;
  }

  function card(circuit, now, root) {
    var labels = root.dataset;
    var node = el("article", "cb-card");
    node.setAttribute("data-state", circuit.state);
    node.setAttribute("data-circuit", circuit.name);
    var head = el("div", "cb-card-head");
    var name = el("a", "cb-card-name", circuit.name);
    name.href = labels.changeUrl.replace("/0/", "/" + circuit.id + "/");
    head.appendChild(name);
    head.appendChild(window.circuitbreakerBadge(circuit.state));
    node.appendChild(head);
    var facts = el("dl");
    var add = function (term, value) {
      facts.appendChild(el("dt", null, term));
      var dd = el("dd");
      if (typeof value === "string") { dd.textContent = value; } else { dd.appendChild(value); }
      facts.appendChild(dd);
    };
    var trip = circuit.at_trip, suffix = trip ? " " + labels.labelAtTrip : "";
    var opensAt = (window.circuitbreakerLabels().opens_at || "(opens at %(threshold)s %%)")
      .replace("%(threshold)s", String(circuit.config.failure_rate_threshold)).replace("%%", "%");
    add(labels.labelFailure, (trip || circuit).failure_rate.toFixed(1) + " %" + suffix + " " + opensAt);
    if (circuit.config.slow_call_duration !== null) {
      add(labels.labelSlow, (trip || circuit).slow_call_rate.toFixed(1) + " %" + suffix);
    }
    add(labels.labelCalls, String((trip || circuit).calls) + suffix);
    add(labels.labelTrial, window.circuitbreakerCountdown(circuit.retry_after));
    add(labels.labelChanged, circuit.changed_at ? new Date(circuit.changed_at).toLocaleString() : "\u2013");
    node.appendChild(facts);
    node.appendChild(el("div", "cb-spark-label", labels.labelHistory));
    node.appendChild(sparkline(circuit, now, circuit.name + ": " + labels.labelHistory));
    return node;
  }

  function render(root, data) {
    var now = Date.parse(data.generated_at);
    var fragment = document.createDocumentFragment();
    var counts = {};
    data.circuits.forEach(function (circuit) {
      counts[circuit.state] = (counts[circuit.state] || 0) + 1;
      fragment.appendChild(card(circuit, now, root));
    });
    if (!data.circuits.length) { fragment.appendChild(el("p", null, root.dataset.labelEmpty)); }
    while (root.firstChild) { root.removeChild(root.firstChild); }
    root.appendChild(fragment);
    document.getElementById("cb-summary-text").textContent = Object.keys(counts).sort().map(
      function (state) { return counts[state] + " " + window.circuitbreakerStateLabel(state); }
    ).join(" \u00b7 ");
    document.getElementById("cb-updated-at").textContent = new Date(now).toLocaleTimeString();
  }

  function poll(root) {
    var error = document.getElementById("cb-error");
    fetch(root.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) { error.hidden = true; render(root, data); })
      .catch(function (exc) { error.hidden = false; error.textContent = String(exc.message || exc); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("cb-dashboard");
    if (!root) { return; }
    render(root, JSON.parse(document.getElementById("cb-initial").textContent));
    var every = 1000 * (parseFloat(root.dataset.refreshSeconds) || 5);
    window.setInterval(function () { poll(root); }, every);
  });
})();

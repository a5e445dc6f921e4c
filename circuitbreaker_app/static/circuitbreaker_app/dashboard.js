/* circuitbreaker_app dashboard: one card per circuit, trouble first (open, half-open,
   forced, then by failure rate), with a sparkline of the failure rate every 10 s over the
   last 15 minutes. The page carries the first page of circuits and a cursor; every few
   seconds the feed answers only what changed since that cursor (circuits that moved or
   were edited, and the new 10-second samples), which is merged here and redrawn.
   Plain JavaScript, no build step; text goes in with textContent (never innerHTML);
   colours come from CSS classes (admin.css, dark mode included). */
"use strict";
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var WIDTH = 240, HEIGHT = 40;
  var REJECTING = { open: true, half_open: true, forced_open: true };
  var ORDER = { open: 0, half_open: 1, forced_open: 2, forced_closed: 3, disabled: 4, closed: 5 };

  var model = { circuits: {}, states: [], interval: 10, span: 900, now: 0, cursor: "" };

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

  /* Sample points arrive as [period index from origin, calls, failures, state index,
     calls rejected in the period]. */
  function addPoints(circuit, origin, points) {
    var known = {};
    circuit.points.forEach(function (p) { known[p.t] = true; });
    points.forEach(function (p) {
      var t = (origin + p[0] * model.interval) * 1000;
      if (known[t]) { return; }
      circuit.points.push({
        t: t, calls: p[1], failures: p[2], state: model.states[p[3]], rejected: p[4] || 0
      });
    });
    circuit.points.sort(function (a, b) { return a.t - b.t; });
    var oldest = model.now - model.span * 1000;
    circuit.points = circuit.points.filter(function (p) { return p.t > oldest; });
    var last = circuit.points[circuit.points.length - 1];
    if (last && last.t >= circuit.seenAt) {  // the newest sample is newer than the entry
      circuit.calls = last.calls;
      circuit.failure_rate = last.calls ? 100 * last.failures / last.calls : 0;
    }
    // the entry's rejected total, plus what the periods sampled since then rejected
    circuit.rejectedTotal = (circuit.rejected || 0) + circuit.points.reduce(function (sum, p) {
      return p.t >= circuit.seenAt ? sum + p.rejected : sum;
    }, 0);
  }

  function merge(entry) {
    var circuit = model.circuits[entry.id] || { points: [] };
    for (var key in entry) { if (key !== "points") { circuit[key] = entry[key]; } }
    circuit.seenAt = model.now;
    circuit.rejectedTotal = entry.rejected || 0;
    model.circuits[entry.id] = circuit;
    return circuit;
  }

  function rateOf(circuit) { return (circuit.at_trip || circuit).failure_rate; }

  function compare(a, b) {
    return (ORDER[a.state] - ORDER[b.state]) || (rateOf(b) - rateOf(a)) ||
      (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  }

  /* An empty chart WIDTH wide and ``height`` high: its title (read out by screen readers,
     shown on hover) and its background. */
  function chartFrame(className, height, label) {
    var chart = svg("svg", {
      "class": className, viewBox: "0 0 " + WIDTH + " " + height,
      preserveAspectRatio: "none", role: "img", "aria-label": label
    });
    var title = svg("title", {});
    title.textContent = label;
    chart.appendChild(title);
    chart.appendChild(svg("rect", { "class": "cb-spark-bg", x: 0, y: 0, width: WIDTH, height: height }));
    return chart;
  }

  /* The failure rate of the window, one point every 10 s: a gap where the window held no
     calls, the periods in which calls were rejected shaded, the threshold dashed. */
  function sparkline(circuit, label) {
    var chart = chartFrame("cb-spark", HEIGHT, label);
    var threshold = y(circuit.threshold);
    chart.appendChild(svg("line", {
      "class": "cb-spark-threshold", x1: 0, x2: WIDTH, y1: threshold, y2: threshold
    }));
    var span = model.span * 1000, step = WIDTH * model.interval * 1000 / span;
    var x = function (t) { return WIDTH - ((model.now - t) / span) * WIDTH; };
    var segments = [], current = [], runs = [], run = null;
    circuit.points.forEach(function (p) {
      if (REJECTING[p.state]) {  // one shaded band per run of rejecting periods
        var left = Math.max(0, x(p.t)), right = Math.min(WIDTH, x(p.t) + step);
        if (run && left <= run[1] + 0.5) { run[1] = right; } else { run = [left, right]; runs.push(run); }
      } else {
        run = null;
      }
      if (p.calls > 0) {
        current.push(x(p.t).toFixed(1) + "," + y(100 * p.failures / p.calls));
      } else if (current.length) {  // no calls in the window: a gap, not a 0 % rate
        segments.push(current);
        current = [];
      }
    });
    if (current.length) { segments.push(current); }
    runs.forEach(function (band) {
      chart.appendChild(svg("rect", {
        "class": "cb-spark-rejecting", x: band[0].toFixed(1), y: 0,
        width: Math.max(1, band[1] - band[0]).toFixed(1), height: HEIGHT
      }));
    });
    segments.forEach(function (coords) {
      if (coords.length === 1) {
        var only = coords[0].split(",");
        chart.appendChild(svg("circle", { "class": "cb-spark-dot", cx: only[0], cy: only[1], r: 1.5 }));
        return;
      }
      chart.appendChild(svg("polyline", { "class": "cb-spark-line", points: coords.join(" ") }));
    });
    return chart;
  }

  /* The calls rejected in each 10 s period, as bars scaled to the largest (its value
     in the label), beside the failure rate's line. */
  function rejectedBars(circuit, label) {
    var height = 20;
    var chart = chartFrame("cb-spark cb-spark-bars", height, label);
    var most = circuit.points.reduce(function (m, p) { return Math.max(m, p.rejected); }, 0);
    if (!most) { return chart; }
    var span = model.span * 1000, step = WIDTH * model.interval * 1000 / span;
    circuit.points.forEach(function (p) {
      if (!p.rejected) { return; }
      var left = Math.max(0, WIDTH - ((model.now - p.t) / span) * WIDTH);
      var tall = Math.max(1, (height - 2) * p.rejected / most);
      chart.appendChild(svg("rect", {
        "class": "cb-spark-bar", x: left.toFixed(1), y: (height - tall).toFixed(1),
        width: Math.max(1, Math.min(step - 0.5, WIDTH - left)).toFixed(1), height: tall.toFixed(1)
      }));
    });
    return chart;
  }

  function card(circuit, root) {
    var labels = root.dataset;
    var node = el("article", "cb-card");
    node.setAttribute("data-state", circuit.state);
    node.setAttribute("data-circuit", circuit.name);
    var head = el("div", "cb-card-head");
    var name = el("a", "cb-card-name", circuit.name);
    name.href = labels.changeUrl.replace("/0/", "/" + circuit.id + "/");
    name.title = circuit.name;
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
      .replace("%(threshold)s", String(circuit.threshold)).replace("%%", "%");
    add(labels.labelFailure, rateOf(circuit).toFixed(1) + " %" + suffix + " " + opensAt);
    if (circuit.slow_call_rate !== null && circuit.slow_call_rate !== undefined) {
      add(labels.labelSlow, (trip || circuit).slow_call_rate.toFixed(1) + " %" + suffix);
    }
    add(labels.labelCalls, String((trip || circuit).calls) + suffix);
    add(labels.labelRejected, circuit.rejectedTotal.toLocaleString());
    add(labels.labelTrial, window.circuitbreakerCountdown(circuit.retry_after));
    add(labels.labelChanged, window.circuitbreakerTime.tag(circuit.changed_at));
    node.appendChild(facts);
    node.appendChild(el("div", "cb-spark-label", labels.labelHistory));
    node.appendChild(sparkline(circuit, circuit.name + ": " + labels.labelHistory));
    var most = circuit.points.reduce(function (m, p) { return Math.max(m, p.rejected); }, 0);
    var barsLabel = labels.labelRejectedHistory.replace("%(most)s", String(most));
    node.appendChild(el("div", "cb-spark-label", barsLabel));
    node.appendChild(rejectedBars(circuit, circuit.name + ": " + barsLabel));
    return node;
  }

  function matches(circuit, text) {
    return !text || circuit.name.toLowerCase().indexOf(text) !== -1;
  }

  function render(root) {
    var text = document.getElementById("cb-filter").value.trim().toLowerCase();
    var all = Object.keys(model.circuits).map(function (id) { return model.circuits[id]; });
    var shown = all.filter(function (circuit) { return matches(circuit, text); }).sort(compare);
    var fragment = document.createDocumentFragment();
    shown.forEach(function (circuit) { fragment.appendChild(card(circuit, root)); });
    if (!shown.length) {
      fragment.appendChild(el("p", "cb-empty", all.length ? root.dataset.labelNoMatch : root.dataset.labelEmpty));
    }
    while (root.firstChild) { root.removeChild(root.firstChild); }
    root.appendChild(fragment);
    document.getElementById("cb-shown").textContent = String(shown.length);
  }

  function showCounts(counts) {
    var links = document.querySelectorAll(".cb-count[data-state]");
    Array.prototype.forEach.call(links, function (link) {
      var n = counts[link.getAttribute("data-state")] || 0;
      link.querySelector(".cb-count-n").textContent = String(n);
      link.hidden = n === 0;
    });
  }

  function apply(data, first) {
    model.now = Date.parse(data.generated_at);
    model.cursor = data.cursor;
    if (first) {
      model.states = data.states;
      model.interval = data.interval;
      model.span = data.span;
      data.circuits.forEach(function (entry) { addPoints(merge(entry), data.origin, entry.points); });
    } else {
      data.changed.forEach(merge);
      Object.keys(data.samples).forEach(function (id) {
        if (model.circuits[id]) { addPoints(model.circuits[id], data.origin, data.samples[id]); }
      });
    }
    showCounts(data.counts);
    var updated = document.getElementById("cb-updated-at");
    while (updated.firstChild) { updated.removeChild(updated.firstChild); }
    updated.appendChild(window.circuitbreakerTime.tag(data.generated_at));
  }

  function poll(root) {
    var error = document.getElementById("cb-error");
    var url = root.dataset.feedUrl;
    url += (url.indexOf("?") === -1 ? "?" : "&") + "cursor=" + encodeURIComponent(model.cursor);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) { error.hidden = true; apply(data, false); render(root); })
      .catch(function (exc) { error.hidden = false; error.textContent = String(exc.message || exc); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("cb-dashboard");
    if (!root) { return; }
    apply(JSON.parse(document.getElementById("cb-initial").textContent), true);
    render(root);
    document.getElementById("cb-filter").addEventListener("input", function () { render(root); });
    var every = 1000 * (parseFloat(root.dataset.refreshSeconds) || 5);
    window.setInterval(function () { poll(root); }, every);
  });
})();

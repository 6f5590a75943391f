// The overview's live part: polls state.json and updates the numbers and each queue's
// chart in place. Every value is written with textContent (never as HTML), so a queue
// name, key or value is always shown as text.
(function () {
  "use strict";
  var script = document.currentScript;
  var url = script.getAttribute("data-state");
  var PERIOD_MS = 2000;
  var POINTS = 150; // five minutes at one poll every two seconds
  var FIELDS = ["size", "added", "fetched", "dropped_size", "dropped_addmode"];
  var rows = new Map();
  var history = new Map();

  document.querySelectorAll("#queues tbody tr[data-queue]").forEach(function (tr) {
    rows.set(tr.dataset.queue, tr);
    history.set(tr.dataset.queue, []);
  });

  function draw(tr, points, limit) {
    var line = tr.querySelector(".chart polyline");
    if (!line) return;
    var top = Math.max(1, limit || 0, Math.max.apply(null, points));
    var step = 150 / (POINTS - 1);
    var start = POINTS - points.length;
    var coords = points.map(function (v, i) {
      return ((start + i) * step).toFixed(1) + "," + (29 - (v / top) * 28).toFixed(1);
    });
    line.setAttribute("points", coords.join(" "));
  }

  function show(state) {
    document.getElementById("uptime").textContent = state.up_time;
    state.queues.forEach(function (q) {
      var tr = rows.get(q.name);
      if (!tr) return;
      FIELDS.forEach(function (f) {
        var cell = tr.querySelector("." + f);
        if (cell) cell.textContent = q[f] === null ? "–" : String(q[f]);
      });
      var age = tr.querySelector(".oldest_age");
      if (age) age.textContent = q.oldest_age === null ? "–" : q.oldest_age + " s";
      var points = history.get(q.name);
      points.push(q.size);
      if (points.length > POINTS) points.shift();
      draw(tr, points, q.limit);
    });
    document.getElementById("updated").textContent =
      "updated " + new Date(state.time * 1000).toLocaleTimeString();
  }

  function poll() {
    fetch(url, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(show)
      .catch(function (why) {
        document.getElementById("updated").textContent = "not updated (" + why + ")";
      })
      .finally(function () { setTimeout(poll, PERIOD_MS); });
  }
  if (rows.size) poll();
})();

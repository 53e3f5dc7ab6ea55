/* Reports: the funnel chart, the trend chart and "recompute now".
 * Data comes from json_script elements (no inline script: the CSP forbids it). */
(function () {
  "use strict";

  function readJson(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  var PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df"];

  function funnelChart() {
    var data = readJson("report-chart");
    var canvas = document.getElementById("funnel-chart");
    if (!data || !canvas || typeof Chart === "undefined") return;
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: data.datasets.map(function (ds, i) {
          return { label: ds.label, data: ds.data, backgroundColor: PALETTE[i % PALETTE.length] };
        })
      },
      options: {
        indexAxis: "y",
        maintainAspectRatio: false,
        animation: false,
        scales: { x: { beginAtZero: true } }
      }
    });
  }

  function trendChart() {
    var data = readJson("report-trend");
    var canvas = document.getElementById("trend-chart");
    var select = document.getElementById("trend-kpi");
    if (!data || !canvas || !data.series.length || typeof Chart === "undefined") return;
    function dataset(i) {
      var s = data.series[i];
      return { label: s.label, data: s.values, borderColor: PALETTE[0], backgroundColor: PALETTE[0], spanGaps: false, tension: 0.2 };
    }
    var chart = new Chart(canvas, {
      type: "line",
      data: { labels: data.labels, datasets: [dataset(0)] },
      options: { maintainAspectRatio: false, animation: false, scales: { y: { beginAtZero: true } } }
    });
    if (select) {
      select.addEventListener("change", function () {
        chart.data.datasets = [dataset(Number(select.value))];
        chart.update();
      });
    }
  }

  function recompute() {
    var form = document.getElementById("recompute-form");
    var box = document.getElementById("freshness");
    var progress = document.getElementById("recompute-progress");
    var text = document.getElementById("recompute-text");
    if (!form || !box || !progress) return;
    var POLL_MS = 2000;
    var GIVE_UP_MS = 5 * 60 * 1000;

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button");
      button.disabled = true;
      progress.hidden = false;
      text.textContent = text.dataset.waiting;
      fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { "Accept": "application/json" },
        credentials: "same-origin"
      })
        .then(function (response) { return response.json(); })
        .then(function (answer) {
          if (!answer.queued) throw new Error(answer.error || "not queued");
          poll(new Date(answer.requested_at), Date.now(), button);
        })
        .catch(function (error) {
          text.textContent = (error && error.message) || text.dataset.failed;
          button.disabled = false;
        });
    });

    function poll(requestedAt, started, button) {
      fetch(box.dataset.statusUrl, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (status) {
          var fresh = status.computed_at && new Date(status.computed_at) >= requestedAt;
          if (fresh) {
            text.textContent = text.dataset.done;
            box.dataset.computedAt = status.computed_at;
            window.location.reload();
            return;
          }
          if (Date.now() - started > GIVE_UP_MS) {
            text.textContent = text.dataset.failed;
            button.disabled = false;
            return;
          }
          window.setTimeout(function () { poll(requestedAt, started, button); }, POLL_MS);
        })
        .catch(function () {
          window.setTimeout(function () { poll(requestedAt, started, button); }, POLL_MS);
        });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    funnelChart();
    trendChart();
    recompute();
  });
})();

// The engine's live dashboard: polls dashboard/data.json every POLL_MS and shows it.
//
// Theory of operation: every element with a data-key is a field of the JSON document
// ("runtime.processed"); render() writes its formatted value as text and the raw value in
// data-value (what tests compare). Tables are rebuilt from the document's lists with
// textContent only (agent ids and tenant names are the application's strings, never HTML).
// Trends come from the server's metrics history when the document has one (with two points
// or more); otherwise the page keeps the last KEEP readings it polled. Both are on the
// runtime's clock (the history's "time", the document's "clock"): the x axis is seconds
// before this reading. With a history, each tenant row has a sparkline of its msg/s (its
// "trend", SVG drawn with DOM calls: nothing inline for the CSP to refuse). Each chart says
// what it drew in data-source, data-points and data-last (what tests compare). A token given
// in this page's URL (?token=...) is sent to data.json as "Authorization: Bearer".
"use strict";

(function () {
  const POLL_MS = 500;
  const KEEP = 600;
  const COLUMNS = [
    "time", "processed_per_s", "failed_per_s", "queued", "ready",
    "step_p50", "step_p99", "wait_p50", "wait_p99",
  ];
  const token = new URLSearchParams(window.location.search).get("token");
  const headers = token === null ? {} : { Authorization: "Bearer " + token };
  const polled = Object.fromEntries(COLUMNS.map((c) => [c, []]));
  const status = document.getElementById("status");
  const SVG = "http://www.w3.org/2000/svg";
  const SPARK = { width: 90, height: 18 };
  let charts = null;

  const number = (digits) => (v) =>
    v.toLocaleString("en-US", { maximumFractionDigits: digits });
  const FORMATS = {
    int: number(0),
    rate: (v) => number(v < 10 ? 1 : 0)(v),
    micro: number(1),
    percent: (v) => (100 * v).toFixed(2) + " %",
    weight: number(3),
    bytes: (v) => {
      const units = ["B", "KiB", "MiB", "GiB", "TiB"];
      let i = 0;
      while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
      return (i ? v.toFixed(1) : String(v)) + " " + units[i];
    },
    text: String,
  };

  function compact(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return +(v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return +(v / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return +(v / 1e3).toFixed(1) + "k";
    return String(+v.toFixed(2));
  }

  function field(doc, key) {
    return key.split(".").reduce((o, k) => (o === null || o === undefined ? null : o[k]), doc);
  }

  function show(el, value, format) {
    const known = value !== null && value !== undefined;
    el.dataset.value = known ? String(value) : "";
    el.textContent = known ? FORMATS[format || "int"](value) : "–";
  }

  const AGENT_COLUMNS = [
    ["agent", "agent", "text"], ["tenant", "tenant", "text"], ["state", "state", "text"],
    ["status", "status", "text"], ["processed", "msgs", "int"], ["failed", "failed", "int"],
    ["depth", "depth", "int"],
  ];
  const TENANT_COLUMNS = [
    ["name", "tenant", "text"], ["weight", "weight", "weight"], ["agents", "agents", "int"],
    ["processed_per_s", "msg/s", "rate"], ["processed", "processed", "int"],
    ["failed", "failed", "int"], ["queued", "queued", "int"],
    ["delayed_now", "delayed", "int"], ["rejected", "rejected", "int"],
    ["overruns", "overruns", "int"], ["memory", "memory", "bytes"],
    ["step.p99", "step p99 µs", "micro"], ["wait.p99", "wait p99 µs", "micro"],
  ];
  const TREND_COLUMN = ["trend", "msg/s trend", "spark"];

  function ago(t) {
    const a = Math.abs(t);
    if (a === 0) return "now";
    if (a >= 7200) return +(t / 3600).toFixed(1) + " h";
    if (a >= 120) return +(t / 60).toFixed(1) + " min";
    return +t.toFixed(1) + " s";
  }

  // A sparkline of `values` (null: no reading) in `td`, scaled from 0 to its largest value; a
  // gap breaks the line. data-value lists the values, as the document has them.
  function spark(td, values) {
    td.dataset.value = values ? values.map((v) => (v === null ? "" : String(v))).join(",") : "";
    const known = values ? values.filter((v) => v !== null) : [];
    if (known.length < 2) {
      td.textContent = "–";
      return;
    }
    const top = Math.max(...known);
    const { width, height } = SPARK;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        const line = document.createElementNS(SVG, "polyline");
        line.setAttribute("points", run.join(" "));
        svg.appendChild(line);
      }
      run = [];
    };
    values.forEach((v, i) => {
      if (v === null) return flush();
      const x = (i * width) / (values.length - 1);
      const y = height - 1 - (top > 0 ? (v / top) * (height - 2) : 0);
      run.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    flush();
    const title = document.createElementNS(SVG, "title");
    title.textContent = "msg/s over the last " + values.length + " readings, at most " +
      FORMATS.rate(top);
    svg.appendChild(title);
    td.replaceChildren(svg);
  }

  function table(id, rows, columns, rowKey) {
    const el = document.getElementById(id);
    const head = document.createElement("tr");
    for (const [, title] of columns) {
      const th = document.createElement("th");
      th.textContent = title;
      head.appendChild(th);
    }
    const body = [head];
    for (const row of rows) {
      const tr = document.createElement("tr");
      tr.dataset.row = row[rowKey];
      if (row.status === "ERROR") tr.className = "error";
      for (const [key, , format] of columns) {
        const td = document.createElement("td");
        td.dataset.field = key;
        if (format === "spark") spark(td, field(row, key));
        else show(td, field(row, key), format);
        tr.appendChild(td);
      }
      body.push(tr);
    }
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = columns.length;
      td.className = "muted";
      td.textContent = "none";
      tr.appendChild(td);
      body.push(tr);
    }
    el.replaceChildren(...body);
  }

  function chart(id, series) {
    const el = document.getElementById(id);
    const opts = {
      width: Math.max(el.clientWidth, 200),
      height: 170,
      scales: { x: { time: false } },
      axes: [
        { values: (u, ticks) => ticks.map(ago) },
        { values: (u, ticks) => ticks.map(compact), size: 56 },
      ],
      legend: { live: false },
      series: [{}].concat(series.map(([label, , color]) => ({ label, stroke: color, width: 1.5 }))),
    };
    const plot = new uPlot(opts, [[]].concat(series.map(() => [])), el);
    return { el, plot, columns: series.map(([, column]) => column) };
  }

  function makeCharts() {
    return [
      chart("chart-throughput", [
        ["processed/s", "processed_per_s", "#2563eb"], ["failed/s", "failed_per_s", "#dc2626"],
      ]),
      chart("chart-queue", [["queued", "queued", "#7c3aed"], ["agents ready", "ready", "#059669"]]),
      chart("chart-latency", [
        ["step p50", "step_p50", "#0891b2"], ["step p99", "step_p99", "#0e7490"],
        ["wait p50", "wait_p50", "#d97706"], ["wait p99", "wait_p99", "#b45309"],
      ]),
    ];
  }

  function remember(doc) {
    const step = doc.latency.step || {};
    const wait = doc.latency.wait || {};
    const point = {
      time: doc.clock, processed_per_s: doc.rates.processed_per_s,
      failed_per_s: doc.rates.failed_per_s, queued: doc.runtime.queued, ready: doc.runtime.ready,
      step_p50: step.p50, step_p99: step.p99, wait_p50: wait.p50, wait_p99: wait.p99,
    };
    for (const c of COLUMNS) {
      polled[c].push(point[c] === undefined ? null : point[c]);
      if (polled[c].length > KEEP) polled[c].shift();
    }
  }

  function drawTrends(doc) {
    const fromHistory = doc.history !== null && doc.history.time.length >= 2;
    const source = fromHistory ? doc.history : polled;
    document.getElementById("trend-source").textContent =
      fromHistory ? "the runtime's metrics history" : "polled by this page";
    const x = source.time.map((t) => t - doc.clock);  // seconds before this reading
    charts = charts || makeCharts();
    for (const c of charts) {
      const series = c.columns.map((name) => source[name]);
      c.plot.setData([x].concat(series));
      c.el.dataset.source = fromHistory ? "history" : "polled";
      c.el.dataset.points = String(x.length);
      c.el.dataset.last = JSON.stringify(series.map((s) => (s.length ? s[s.length - 1] : null)));
    }
  }

  function render(doc) {
    for (const el of document.querySelectorAll("[data-key]")) {
      show(el, field(doc, el.dataset.key), el.dataset.format);
    }
    table("top_agents", doc.top_agents, AGENT_COLUMNS, "agent");
    table("problem_agents", doc.problem_agents, AGENT_COLUMNS, "agent");
    table("deepest_agents", doc.deepest_agents, AGENT_COLUMNS, "agent");
    const withTrend = doc.history === null ? [] : [TREND_COLUMN];
    table("tenants", doc.tenants, TENANT_COLUMNS.concat(withTrend), "name");
    remember(doc);
    drawTrends(doc);
    document.body.dataset.seq = String(doc.seq);
    status.className = "status ok";
    status.textContent = "live, " + new Date(doc.time * 1000).toLocaleTimeString();
  }

  async function poll() {
    let again = true;
    try {
      const answer = await fetch("dashboard/data.json", { headers, cache: "no-store" });
      if (answer.status === 401 || answer.status === 403) {
        again = false;  // the token in this page's URL will not change
        status.className = "status error";
        status.textContent = "refused (HTTP " + answer.status + "): open this page with ?token=…";
      } else if (!answer.ok) {
        throw new Error("HTTP " + answer.status);
      } else {
        render(await answer.json());
      }
    } catch (e) {
      status.className = "status error";
      status.textContent = "no data (" + e.message + "), retrying";
    }
    if (again) window.setTimeout(poll, POLL_MS);
  }

  window.addEventListener("resize", () => {
    for (const c of charts || []) {
      c.plot.setSize({ width: Math.max(c.el.clientWidth, 200), height: 170 });
    }
  });
  poll();
})();

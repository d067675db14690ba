// Switchyard dashboard: reads /dashboard/events (server-sent events) and draws the fleet,
// 15 minutes of traffic (uPlot), admission queues, tenants and the recent decisions.
// Everything from the gateway is written with textContent: request ids and model names
// come from clients and the config, never markup.
"use strict";

(function () {
  const HISTORY = 900;
  const PALETTE = ["#2f6fde", "#e0672c", "#1f9d55", "#9b51e0", "#d23b3b", "#00a3a3",
    "#c98a00", "#5b6b82", "#e04f9d", "#6b8e23"];
  const $ = (id) => document.getElementById(id);

  // Traffic history: times (unix s) and, per "model/backend", rps/eps/tps arrays.
  const traffic = { times: [], series: new Map() };
  let group = "backend";
  const charts = { rps: null, tps: null };
  let chartKeys = "";
  const records = new Map(); // request id -> whole decision record
  let lastTick = 0;

  // ---------- formatting ----------
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function num(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    return Number(v).toFixed(digits === undefined ? 1 : digits);
  }
  function ms(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 10000) return (v / 1000).toFixed(1) + " s";
    if (v >= 1000) return (v / 1000).toFixed(2) + " s";
    return Math.round(v) + " ms";
  }
  function pct(v) {
    if (v === null || v === undefined) return "–";
    return (v * 100).toFixed(v > 0 && v < 0.1 ? 1 : 0) + "%";
  }
  function duration(s) {
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
  }
  function clock(msUnix) {
    const d = new Date(msUnix);
    return d.toLocaleTimeString([], { hour12: false });
  }
  function setRows(tbody, rows, emptyText, cols) {
    tbody.replaceChildren(...rows);
    if (!rows.length) {
      const tr = el("tr");
      const td = el("td", emptyText, "empty");
      td.colSpan = cols;
      tr.append(td);
      tbody.append(tr);
    }
  }

  // ---------- fleet ----------
  // Rows are kept per backend and updated in place, so hovering or selecting text survives
  // the once-a-second refresh.
  const fleetRows = new Map();
  const FIELDS = ["in_flight", "engine", "kv_usage", "gpu", "temp", "ttft", "latency", "rps", "tps", "errors"];
  function fleetRow(key) {
    let row = fleetRows.get(key);
    if (row) return row;
    const tr = el("tr");
    tr.dataset.backend = key;
    const name = el("td");
    const title = el("div", "", "name");
    const url = el("div", "", "sub");
    name.append(title, url);
    const state = el("td");
    const badge = el("span", "", "badge");
    const cooling = el("span", "", "sub");
    state.append(badge, cooling);
    const cells = {};
    for (const f of FIELDS) {
      cells[f] = el("td", "", f === "kv_usage" ? "" : "num");
      cells[f].dataset.field = f;
    }
    const bar = el("span", null, "bar");
    const fill = el("span");
    bar.append(fill);
    const kvText = el("span");
    cells.kv_usage.append(bar, kvText);
    const breakerCell = el("td");
    const breaker = el("span", "", "badge");
    breakerCell.append(breaker);
    tr.append(name, state, ...FIELDS.map((f) => cells[f]), breakerCell);
    row = { tr, title, url, badge, cooling, cells, bar, fill, kvText, breaker };
    fleetRows.set(key, row);
    return row;
  }
  function fleet(frame) {
    const multiModel = new Set(frame.backends.map((b) => b.model)).size > 1;
    const seen = new Set();
    const trs = frame.backends.map((b) => {
      const key = b.model + "/" + b.name;
      seen.add(key);
      const r = fleetRow(key);
      r.title.textContent = multiModel ? `${b.model} / ${b.name}` : b.name;
      r.url.textContent = b.url;
      r.badge.textContent = b.state;
      r.badge.className = "badge " + b.state;
      r.cooling.textContent = b.state === "cooling" ? ` ${num(b.cooling_left_s)} s` : "";
      const load = b.load || {};
      const gpu = b.gpu || {};
      const c = r.cells;
      c.in_flight.textContent = b.in_flight;
      c.engine.textContent = load.running === undefined ? "–" : `${load.running} / ${load.waiting}`;
      const kv = load.kv_usage;
      r.bar.hidden = kv === undefined || kv === null;
      r.bar.className = "bar" + (kv > 0.9 ? " hot" : "");
      r.fill.style.width = Math.min(100, (kv || 0) * 100).toFixed(0) + "%";
      r.kvText.textContent = kv === undefined || kv === null ? "–" : pct(kv);
      c.gpu.textContent = gpu.utilization === undefined ? "–" : pct(gpu.utilization);
      c.temp.textContent = gpu.temperature_c === undefined ? "–" : `${Math.round(gpu.temperature_c)} °C`;
      c.ttft.textContent = `${ms(b.ttft_p50_ms)} / ${ms(b.ttft_p95_ms)}`;
      c.latency.textContent = `${ms(b.latency_p50_ms)} / ${ms(b.latency_p95_ms)}`;
      c.rps.textContent = num(b.rps, 2);
      c.tps.textContent = num(b.tps, 0);
      c.errors.textContent = pct(b.error_rate);
      r.breaker.textContent = b.breaker;
      r.breaker.className = "badge " + b.breaker;
      return r.tr;
    });
    for (const k of [...fleetRows.keys()]) if (!seen.has(k)) fleetRows.delete(k);
    setRows($("fleet-rows"), trs, "no backends", 13);

    let rps = 0, tps = 0, inflight = 0, errors = 0;
    for (const b of frame.backends) {
      rps += b.rps || 0;
      tps += b.tps || 0;
      inflight += b.in_flight || 0;
      errors += (b.rps || 0) * (b.error_rate || 0);
    }
    $("total-rps").textContent = num(rps, 2);
    $("total-tps").textContent = num(tps, 0);
    $("total-inflight").textContent = inflight;
    $("total-errors").textContent = rps > 0 ? pct(errors / rps) : "–";
    $("generation").textContent = "generation " + frame.generation;
    $("uptime").textContent = duration(frame.uptime_s);
  }

  // ---------- traffic ----------
  function keysOf() {
    const keys = [];
    if (group === "backend") {
      for (const [k, s] of traffic.series) keys.push({ key: k, label: s.label, parts: [k] });
    } else {
      const byModel = new Map();
      for (const [k, s] of traffic.series) {
        if (!byModel.has(s.model)) byModel.set(s.model, []);
        byModel.get(s.model).push(k);
      }
      for (const [m, parts] of byModel) keys.push({ key: m, label: m, parts });
    }
    return keys;
  }
  function column(parts, field) {
    const n = traffic.times.length;
    const out = new Array(n).fill(null);
    for (const k of parts) {
      const arr = traffic.series.get(k)[field];
      for (let i = 0; i < n; i++) {
        const v = arr[i];
        if (v !== null && v !== undefined) out[i] = (out[i] || 0) + v;
      }
    }
    return out;
  }
  function makeChart(target, keys, unit) {
    const width = Math.max(300, $(target).clientWidth);
    const opts = {
      width, height: 230,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [{
        stroke: "#6a7383", grid: { stroke: "#eef0f3" },
        values: (u, splits) => splits.map((v) => new Date(v * 1000).toLocaleTimeString([], { hour12: false })),
      },
        { stroke: "#6a7383", grid: { stroke: "#eef0f3" }, size: 50 }],
      series: [{}].concat(keys.map((k, i) => ({
        label: k.label, stroke: PALETTE[i % PALETTE.length], width: 1.6,
        points: { show: false }, value: (u, v) => (v === null ? "–" : v.toFixed(2) + " " + unit),
      }))),
      legend: { live: true },
    };
    $(target).replaceChildren();
    return new uPlot(opts, [[]].concat(keys.map(() => [])), $(target));
  }
  function draw() {
    if (typeof uPlot === "undefined") return;
    const keys = keysOf();
    const sig = group + "|" + keys.map((k) => k.key).join(",");
    if (sig !== chartKeys || !charts.rps) {
      charts.rps = makeChart("chart-rps", keys, "req/s");
      charts.tps = makeChart("chart-tps", keys, "tok/s");
      chartKeys = sig;
    }
    const t = traffic.times;
    charts.rps.setData([t].concat(keys.map((k) => column(k.parts, "rps"))));
    charts.tps.setData([t].concat(keys.map((k) => column(k.parts, "tps"))));
  }
  function history(h) {
    traffic.times = h.times.slice();
    traffic.series = new Map();
    for (const [k, s] of Object.entries(h.series)) {
      traffic.series.set(k, { model: s.model, label: k, rps: s.rps.slice(), eps: s.eps.slice(), tps: s.tps.slice() });
    }
    draw();
  }
  function point(p) {
    if (traffic.times.length && traffic.times[traffic.times.length - 1] >= p.t) return;
    const n = traffic.times.length;
    traffic.times.push(p.t);
    for (const [k, v] of Object.entries(p.series)) {
      if (!traffic.series.has(k)) {
        const pad = () => new Array(n).fill(null);
        traffic.series.set(k, { model: k.slice(0, k.lastIndexOf("/")), label: k, rps: pad(), eps: pad(), tps: pad() });
      }
      const s = traffic.series.get(k);
      s.rps.push(v[0]); s.eps.push(v[1]); s.tps.push(v[2]);
    }
    for (const [k, s] of traffic.series) {
      if (!(k in p.series)) traffic.series.delete(k);
      else if (s.rps.length > HISTORY) { s.rps.shift(); s.eps.shift(); s.tps.shift(); }
    }
    if (traffic.times.length > HISTORY) traffic.times.shift();
    draw();
  }

  // ---------- queues and tenants (shown once admission is configured) ----------
  function queues(q) {
    $("queues").hidden = !q;
    if (!q) return;
    const levels = ["critical", "high", "normal", "low", "batch"];
    const rows = Object.entries(q).map(([model, byLevel]) => {
      const tr = el("tr");
      tr.append(el("td", model, "name"), ...levels.map((l) => el("td", byLevel[l] || 0, "num")));
      return tr;
    });
    setRows($("queue-rows"), rows, "no admission queues", 6);
  }
  function tenants(list) {
    $("tenants").hidden = !list || !list.length;
    if (!list || !list.length) return;
    const rows = list.map((t) => {
      const tr = el("tr");
      tr.append(el("td", t.tenant, "name"), el("td", t.requests || 0, "num"),
        el("td", t.prompt_tokens || 0, "num"), el("td", t.completion_tokens || 0, "num"),
        el("td", "$" + (t.spend || 0).toFixed(4), "num"), el("td", t.throttled || 0, "num"));
      return tr;
    });
    setRows($("tenant-rows"), rows, "", 6);
  }

  // ---------- decisions ----------
  const decisionRows = new Map();
  function decisions(list) {
    for (const r of list) records.set(r.id, r);
    while (records.size > 300) records.delete(records.keys().next().value);
    const shown = new Set(list.map((r) => r.id));
    for (const id of [...decisionRows.keys()]) if (!shown.has(id)) decisionRows.delete(id);
    const rows = list.slice().reverse().map((r) => {
      if (decisionRows.has(r.id)) return decisionRows.get(r.id);
      const tr = el("tr");
      decisionRows.set(r.id, tr);
      tr.dataset.id = r.id;
      tr.tabIndex = 0;
      const ok = r.status < 400;
      const tokens = r.prompt_tokens === null || r.prompt_tokens === undefined
        ? "–" : `${r.prompt_tokens} → ${r.completion_tokens}`;
      tr.append(el("td", clock(r.at_ms)), el("td", r.id, "sub"),
        el("td", r.route && r.route !== r.model ? `${r.model} ⇒ ${r.route}` : r.model),
        el("td", r.backend || "–", "name"), el("td", r.status, "num " + (ok ? "status-ok" : "status-bad")),
        el("td", r.attempts.length, "num"), el("td", ms(r.ttft_ms), "num"),
        el("td", ms(r.duration_ms), "num"), el("td", tokens, "num"), el("td", r.reason || "", "why"));
      return tr;
    });
    setRows($("decision-rows"), rows, "no requests yet", 10);
  }
  function open(id) {
    const r = records.get(id);
    if (!r) return;
    $("record-title").textContent = `${r.id} · ${r.model} → ${r.backend || "no backend"} · ${r.status}`;
    $("record-body").textContent = JSON.stringify(r, null, 2);
    const d = $("record");
    if (!d.open) d.showModal();
  }
  $("decision-rows").addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-id]");
    if (tr) open(tr.dataset.id);
  });
  $("decision-rows").addEventListener("keydown", (e) => {
    const tr = e.target.closest("tr[data-id]");
    if (tr && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); open(tr.dataset.id); }
  });

  // ---------- controls ----------
  for (const b of document.querySelectorAll(".toggle button")) {
    b.addEventListener("click", () => {
      group = b.dataset.group;
      for (const o of document.querySelectorAll(".toggle button")) o.setAttribute("aria-pressed", String(o === b));
      draw();
    });
  }
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { chartKeys = ""; draw(); }, 150);
  });

  // ---------- the feed ----------
  function status(state, text) {
    const c = $("conn");
    c.dataset.state = state;
    c.textContent = text;
  }
  function connect() {
    const es = new EventSource("/dashboard/events");
    es.addEventListener("history", (e) => history(JSON.parse(e.data)));
    es.addEventListener("tick", (e) => {
      const f = JSON.parse(e.data);
      lastTick = Date.now();
      status("live", f.draining ? "draining" : "live");
      fleet(f);
      point(f.point);
      queues(f.queues);
      tenants(f.tenants);
      decisions(f.decisions);
    });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        status("closed", "disconnected: reload to sign in again");
      } else {
        status("lost", "reconnecting");
      }
    };
  }
  setInterval(() => {
    if (lastTick && Date.now() - lastTick > 3500 && $("conn").dataset.state === "live") status("lost", "no data");
  }, 1000);
  connect();
})();

// weir dashboard: polls api/status (relative: the job's, or at the daemon's root its overview)
// every second and redraws. No dependencies, works offline.
"use strict";
(function () {
  const history = []; // [{t, perShard: [records/s]}]
  const HISTORY = 60;
  const token = (location.hash.match(/token=([^&]+)/) || [])[1];
  const $ = (id) => document.getElementById(id);
  const fmt = (x) => (x == null ? "–" : Math.round(x).toLocaleString("en-US"));
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  const colors = ["#4c7be0", "#e08a4c", "#4cae6b", "#a35ccf", "#c9a227", "#d9534f", "#3aa6b9", "#7a7a7a"];

  function bar(ms, cls) {
    const w = Math.max(0, Math.min(100, ms / 10));
    return `<span class="bar ${cls}" style="width:${w}px"></span> ${fmt(ms)}`;
  }

  function drawGraph(graph) {
    const svg = $("graph");
    const segs = graph.segments || [];
    const w = 190, h = 54, gap = 50;
    let out = '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z" fill="#555"/></marker></defs>';
    segs.forEach((s, i) => {
      const x = 5 + i * (w + gap);
      const ops = s.operators.length ? s.operators.join(" → ") : s.name;
      out += `<g class="segment" data-segment="${esc(s.name)}"><rect x="${x}" y="20" width="${w}" height="${h}" rx="6" fill="#eef3fd" stroke="#4c7be0"/>` +
        `<text x="${x + 8}" y="38" font-weight="600">${esc(s.name)}</text><text x="${x + 8}" y="58">${esc(ops.length > 30 ? ops.slice(0, 29) + "…" : ops)}</text></g>`;
    });
    (graph.edges || []).forEach((e) => {
      if (e.from_segment == null || e.to_segment == null) return;
      const x1 = 5 + e.from_segment * (w + gap) + w, x2 = 5 + e.to_segment * (w + gap);
      out += `<line x1="${x1}" y1="47" x2="${x2}" y2="47" stroke="#555" marker-end="url(#arrow)"/><text x="${x1 + 4}" y="40">${esc(e.kind)}</text>`;
    });
    svg.setAttribute("viewBox", `0 0 ${Math.max(400, segs.length * (w + gap))} 100`);
    svg.innerHTML = out;
  }

  function drawChart() {
    const svg = $("chart");
    const W = 600, H = 130;
    const shards = history.length ? history[history.length - 1].perShard.length : 0;
    const max = Math.max(1, ...history.flatMap((p) => p.perShard));
    let out = `<text x="4" y="12">${fmt(max)}</text><line x1="0" y1="${H}" x2="${W}" y2="${H}" stroke="#ccc"/>`;
    for (let s = 0; s < shards; s++) {
      const pts = history.map((p, i) => `${(i * W) / (HISTORY - 1)},${H - (p.perShard[s] / max) * (H - 16)}`).join(" ");
      out += `<polyline fill="none" stroke="${colors[s % colors.length]}" stroke-width="2" points="${pts}"/>` +
        `<text x="${W - 60}" y="${14 + s * 12}" fill="${colors[s % colors.length]}">shard ${s}</text>`;
    }
    svg.setAttribute("viewBox", `0 0 ${W} ${H + 2}`);
    svg.innerHTML = out;
  }

  const bytes = (b) => {
    if (b == null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(1) : String(b)) + " " + units[i];
  };
  const ms1 = (x) => (x == null ? "–" : Number(x).toFixed(1));

  function renderCheckpoints(c) {
    const t = c.totals;
    $("checkpoints-completed").textContent = t.completed;
    $("checkpoints-failed").textContent = t.failed;
    $("checkpoints-aborted").textContent = t.aborted;
    $("checkpoints-in-progress").textContent = t.in_progress;
    $("checkpoint-last").textContent = t.last_duration_ms == null ? "–" :
      `${t.last_duration_ms} ms, ${bytes(t.last_bytes)}, alignment ${ms1(t.last_alignment_ms)} ms, snapshot ${ms1(t.last_snapshot_ms)} ms`;
    $("checkpoints").tBodies[0].innerHTML = c.history.slice().reverse().map((e) =>
      `<tr data-epoch="${e.epoch}"><td>${e.epoch}</td><td>${e.savepoint ? "savepoint" : "checkpoint"}</td>` +
      `<td class="state-${esc(e.status)}" title="${esc(e.detail || "")}">${esc(e.status.replace("_", " "))}</td>` +
      `<td>${new Date(e.triggered_ms).toISOString().slice(11, 23)}</td><td>${e.duration_ms == null ? "–" : e.duration_ms}</td>` +
      `<td>${e.status === "completed" ? bytes(e.bytes) : "–"}</td><td>${ms1(e.alignment_ms)}</td><td>${ms1(e.snapshot_ms)}</td><td>${e.acknowledged}</td></tr>`).join("");
  }

  function renderDaemon(st) {
    $("daemon-view").hidden = false;
    $("job-view").hidden = true;
    $("job-name").textContent = "daemon";
    const state = $("job-state");
    state.textContent = `${st.running} running`;
    state.className = "state-running";
    $("shard-count").textContent = `${st.cores_in_use} of ${st.cores} cores in use`;
    $("uptime").textContent = (st.uptime_ms / 1000).toFixed(0) + " s";
    $("jobs").tBodies[0].innerHTML = st.jobs.slice().reverse().map((j) =>
      `<tr data-job="${esc(j.id)}"><td><a href="jobs/${encodeURIComponent(j.id)}/${location.hash}">${esc(j.id)}</a></td><td>${esc(j.name)}</td>` +
      `<td class="state-${esc(j.state)}" title="${esc(j.error || "")}">${esc(j.state)}</td><td>${j.shards}</td><td>${j.cpus.length ? j.cpus.join(",") : "–"}</td>` +
      `<td>${(j.uptime_ms / 1000).toFixed(0)} s</td><td>${j.checkpoints_completed}</td></tr>`).join("");
  }

  function render(st) {
    if (st.daemon) return renderDaemon(st);
    $("job-name").textContent = st.job;
    const state = $("job-state");
    state.textContent = st.state;
    state.className = "state-" + st.state;
    $("shard-count").textContent = st.shards;
    $("throughput").textContent = fmt(st.records_per_second);
    $("uptime").textContent = (st.uptime_ms / 1000).toFixed(0) + " s";
    $("late").textContent = fmt(st.late_records_dropped);
    $("bad").textContent = fmt(st.bad_records);
    const b = st.bottleneck;
    $("bottleneck").innerHTML = b ? `<span class="bottleneck">${esc(b.ring)}</span> full ${fmt(b.full_ms_per_second)} ms/s → reader <b>${esc(b.operator || "?")}</b> on shard ${b.shard}` : "none: no ring was full in the last second";
    $("shards").tBodies[0].innerHTML = st.shard_status.map((s) =>
      `<tr data-shard="${s.shard}"><td>shard ${s.shard}</td><td class="records">${fmt(s.records_per_second)}</td><td>${bar(s.busy_ms_per_second, "")}</td>` +
      `<td>${bar(s.backpressured_ms_per_second, "bp")}</td><td>${fmt(s.idle_ms_per_second)}</td><td>${s.watermark == null ? "–" : new Date(s.watermark).toISOString()}</td>` +
      `<td>${fmt(s.watermark_lag_ms)}</td><td>${s.watermark_held_back_by_input == null ? "–" : esc(s.watermark_operator) + " input " + s.watermark_held_back_by_input}</td></tr>`).join("");
    const opLatency = st.operator_latency || [];
    $("operator-latency").tBodies[0].innerHTML = opLatency.length === 0 ? '<tr><td colspan="6">no samples yet</td></tr>' : opLatency.map((l) =>
      `<tr data-operator-latency="${esc(l.operator)}" data-latency-shard="${l.shard}"><td>${esc(l.operator)}</td><td>${l.shard}</td>` +
      `<td class="p50">${fmt(l.p50_us)}</td><td class="p99">${fmt(l.p99_us)}</td><td class="p999">${fmt(l.p999_us)}</td><td>${fmt(l.max_us)}</td></tr>`).join("");
    $("latency").tBodies[0].innerHTML = st.latency.map((l) =>
      `<tr><td>${esc(l.sink)}</td><td>${l.shard}</td><td>${fmt(l.p50_us)}</td><td>${fmt(l.p99_us)}</td><td>${fmt(l.p999_us)}</td><td>${fmt(l.max_us)}</td></tr>`).join("");
    $("rings").tBodies[0].innerHTML = st.rings.map((r) =>
      `<tr><td>${esc(r.name)} ${r.from_shard}→${r.to_shard}</td><td>${esc(r.reader || "–")}</td><td>${fmt(r.records_sent)}</td><td>${bar(r.full_ms_per_second, "bp")}</td><td>${fmt(r.full_ms_total)}</td></tr>`).join("");
    if (st.checkpoints) renderCheckpoints(st.checkpoints);
    const stores = st.stores || [];
    $("stores").tBodies[0].innerHTML = stores.length === 0 ? '<tr><td colspan="8">none: no keyed operator on the LSM backend</td></tr>' : stores.map((s) =>
      `<tr><td>${esc(s.operator)}</td><td>${s.shard}</td><td>${bytes(s.memtable_bytes)}</td><td>${s.segments}</td><td>${bytes(s.segment_bytes)}</td>` +
      `<td>${bytes(s.compaction_debt_bytes)}</td><td>${bytes(s.wal_bytes)}</td><td>${bytes(s.cache_bytes)}</td></tr>`).join("");
    drawGraph(st.graph);
    history.push({ t: Date.now(), perShard: st.shard_status.map((s) => s.records_per_second) });
    if (history.length > HISTORY) history.shift();
    drawChart();
  }

  function poll() {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    fetch("api/status", { headers, cache: "no-store" })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status))))
      .then((st) => { $("error").textContent = ""; render(st); })
      .catch((e) => { $("error").textContent = "status unavailable: " + e.message; });
  }
  poll();
  setInterval(poll, 1000);
})();

// inferplane console: polls api/snapshot and draws the page (plain DOM and SVG, no dependencies).
"use strict";

(function () {
  const PALETTE = ["#3b6fe0", "#1f9d63", "#d98a00", "#b54bd1", "#d64545", "#1aa3b8", "#7a8599", "#8c6d1f"];
  const SCORER_COLORS = ["#3b6fe0", "#1f9d63", "#d98a00", "#b54bd1", "#1aa3b8", "#d64545"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  let history = [];          // samples, oldest first
  let lastT = 0;             // time of the newest sample held
  let historyS = 300;
  let pollMs = 1000;
  let snapshotTime = 0;
  const endpointColors = new Map();

  // ---- small helpers -------------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "style") node.setAttribute("style", value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function byId(id) { return document.getElementById(id); }
  function setText(id, text) { const node = byId(id); if (node.textContent !== text) node.textContent = text; }
  function isNum(v) { return typeof v === "number" && isFinite(v); }
  function num(v, digits) {
    if (!isNum(v)) return "–";
    const d = digits === undefined ? (Math.abs(v) >= 100 || Number.isInteger(v) ? 0 : 1) : digits;
    return v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  }
  function pct(v) { return isNum(v) ? `${Math.round(v * 100)}%` : "–"; }
  function clock(t) { return new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false }); }
  function ago(t) {
    if (!isNum(t)) return "–";
    const s = Math.max(0, Date.now() / 1000 - t);
    if (s < 60) return `${Math.round(s)}s ago`;
    if (s < 3600) return `${Math.round(s / 60)}m ago`;
    return `${Math.round(s / 3600)}h ago`;
  }
  function level(v, warn, bad) { return !isNum(v) ? "" : v >= bad ? "bad" : v >= warn ? "warn" : "ok"; }
  function colorOf(address) {
    if (!endpointColors.has(address)) endpointColors.set(address, PALETTE[endpointColors.size % PALETTE.length]);
    return endpointColors.get(address);
  }
  function bar(fraction, cls, text) {
    const width = isNum(fraction) ? Math.max(0, Math.min(1, fraction)) * 100 : 0;
    return el("div", { class: "bar" },
      el("div", { class: "track" }, el("div", { class: `fill ${cls || ""}`, style: `width:${width}%` })),
      el("span", { class: "text", text: text }));
  }
  function replaceRows(tbody, rows, columns, emptyText) {
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: columns, text: emptyText }))]));
  }

  // ---- header, tiles -------------------------------------------------------------------------

  function renderSources(sources) {
    const pills = Object.entries(sources || {}).map(([name, s]) => {
      const cls = s.url ? (s.ok ? "" : "down") : "off";
      return el("span", { class: `pill ${cls}`, title: s.error || s.url || "", "data-source": name },
        el("span", { class: "dot" }), name);
    });
    byId("sources").replaceChildren(...pills);
    const down = Object.entries(sources || {}).filter(([, s]) => s.url && !s.ok);
    const banner = byId("banner");
    banner.hidden = down.length === 0;
    banner.textContent = down.map(([name, s]) => `${name}: ${s.error}`).join(" · ");
  }

  function renderTiles(snap) {
    const state = snap.state || {};
    const endpoints = state.endpoints || [];
    const ready = endpoints.filter((e) => e.ready).length;
    setText("stat-ready", state.endpoints ? `${ready} / ${endpoints.length}` : "–");
    const gw = snap.gateway || {};
    setText("stat-rps", num(gw.rps, 1));
    setText("stat-rps-all", isNum(gw.gateway_rps) ? `${num(gw.gateway_rps, 1)} / s on all routes` : "");
    setText("stat-decisions", isNum(state.decisions_total) ? num(state.decisions_total, 0) : "–");
    setText("stat-decisions-rate", isNum(gw.decisions_ps) ? `${num(gw.decisions_ps, 1)} / s` : "");
    const sum = (key) => endpoints.reduce((acc, e) => acc + (isNum(e[key]) ? e[key] : 0), 0);
    setText("stat-load", state.endpoints ? `${num(sum("running"), 0)} · ${num(sum("waiting"), 0)}` : "–");
    setText("stat-inflight", state.endpoints ? num(sum("in_flight"), 0) : "–");
    const flow = state.flow_control || {};
    setText("stat-queued", state.flow_control ? (flow.enabled ? num(flow.queued, 0) : "off") : "–");
    setText("stat-saturation", pct(state.saturation));
    const satBar = byId("stat-saturation-bar");
    satBar.style.width = `${Math.min(1, state.saturation || 0) * 100}%`;
    satBar.style.background = `var(--${level(state.saturation, 0.7, 1) || "ok"})`;
    const active = (snap.batches || []).filter((b) => ["validating", "in_progress", "finalizing"].includes(b.status));
    setText("stat-batches", snap.sources && snap.sources.batch && snap.sources.batch.url ? num(active.length, 0) : "–");
    setText("pool-name", state.pool || "–");
  }

  // ---- endpoints -----------------------------------------------------------------------------

  function scorerColor(scorers, name) {
    const i = scorers.findIndex((s) => s.name === name);
    return SCORER_COLORS[(i < 0 ? 0 : i) % SCORER_COLORS.length];
  }

  function scoreStack(scorers, score, maxTotal) {
    const stack = el("div", { class: "stack" });
    for (const s of scorers) {
      const value = (score.scores || {})[s.name];
      if (!isNum(value)) continue;
      const width = maxTotal > 0 ? (value * s.weight / maxTotal) * 100 : 0;
      stack.append(el("div", { style: `width:${width}%;background:${scorerColor(scorers, s.name)}`,
        title: `${s.name}: ${num(value, 2)} × ${s.weight}` }));
    }
    return stack;
  }

  function renderEndpoints(state) {
    const tbody = byId("endpoints").querySelector("tbody");
    const profile = state.profile || { scorers: [] };
    const scorers = profile.scorers || [];
    const maxTotal = scorers.reduce((acc, s) => acc + s.weight, 0);
    byId("profile").textContent = scorers.length
      ? `scorers: ${scorers.map((s) => `${s.name} ×${s.weight}`).join(", ")} · picker: ${profile.picker}` : "";
    const rows = (state.endpoints || []).map((e) => {
      const status = !e.ready ? el("span", { class: "badge bad", text: "not ready" })
        : e.stale ? el("span", { class: "badge warn", text: "stale" })
          : el("span", { class: "badge ok", text: "ready" });
      const score = e.last_score;
      return el("tr", { "data-address": e.address },
        el("td", { class: "mono" }, el("span", { class: "swatch", style: `background:${colorOf(e.address)}` }), e.address),
        el("td", { title: e.last_error || "" }, status),
        el("td", { class: "num", "data-field": "running", text: num(e.running, 0) }),
        el("td", { class: "num", "data-field": "waiting", text: num(e.waiting, 0) }),
        el("td", { "data-field": "kv" }, bar(e.kv_cache_usage, level(e.kv_cache_usage, 0.7, 0.9), pct(e.kv_cache_usage))),
        el("td", { class: "num", "data-field": "in_flight", text: num(e.in_flight, 0) }),
        el("td", { "data-field": "saturation" }, bar(e.saturation, level(e.saturation, 0.7, 1), pct(e.saturation))),
        el("td", { "data-field": "score" }, score
          ? el("div", { class: "scorecell", title: `scored ${ago(score.time)}` }, scoreStack(scorers, score, maxTotal),
            el("span", { text: num(score.total, 2) }))
          : el("span", { class: "muted", text: "not scored yet" })),
        el("td", { class: "num muted", text: isNum(e.metrics_age_s) ? `${Math.round(e.metrics_age_s * 1000)} ms` : "–" }));
    });
    replaceRows(tbody, rows, 9, "no endpoints (is the picker reachable?)");
    const legend = scorers.map((s) => el("span", {}, el("span", { class: "swatch", style: `background:${scorerColor(scorers, s.name)}` }),
      `${s.name} ×${s.weight}`));
    byId("scorer-legend").replaceChildren(...legend);
  }

  // ---- charts --------------------------------------------------------------------------------

  // A round tick step giving at most four intervals up to `top`.
  function niceStep(top) {
    if (!(top > 0)) return 0.25;
    const rough = top / 4;
    const p = Math.pow(10, Math.floor(Math.log10(rough)));
    for (const m of [1, 2, 2.5, 5, 10]) if (rough <= m * p) return m * p;
    return 10 * p;
  }

  function lineChart(container, series, opts) {
    const width = Math.max(240, container.clientWidth || 480);
    const height = Math.max(120, container.clientHeight || 190);
    const pad = { left: 40, right: 12, top: 22, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": opts.label });
    const tMax = snapshotTime || Date.now() / 1000;
    const tMin = tMax - historyS;
    let yMax = opts.yMax;
    let step = yMax === undefined ? 0 : yMax / 4;
    if (yMax === undefined) {
      let top = opts.yMin || 0;
      for (const s of series) for (const [, v] of s.points) if (isNum(v) && v > top) top = v;
      step = niceStep(top);
      yMax = Math.max(step, Math.ceil(top / step) * step);
    }
    const x = (t) => pad.left + ((t - tMin) / (tMax - tMin)) * plotW;
    const y = (v) => pad.top + plotH - (Math.min(v, yMax) / yMax) * plotH;
    for (let i = 0; i * step <= yMax + 1e-9; i++) {
      const v = i * step;
      root.append(svg("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v) }));
      root.append(svg("text", { class: "tick", x: pad.left - 6, y: y(v) + 3, "text-anchor": "end" }, opts.format(v)));
    }
    const minutes = historyS / 60;
    const every = minutes > 6 ? 120 : 60;
    for (let s = 0; s <= historyS; s += every) {
      const t = tMax - s;
      root.append(svg("text", { class: "tick", x: x(t), y: height - 6, "text-anchor": s === 0 ? "end" : "middle" },
        s === 0 ? "now" : `−${Math.round(s / 60)}m`));
    }
    let drawn = 0;
    series.forEach((s) => {
      const pts = s.points.filter(([t, v]) => isNum(v) && t >= tMin);
      if (pts.length < 2) return;
      drawn++;
      const d = pts.map(([t, v], i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
      if (series.length === 1 || s.fill) {
        root.append(svg("path", { class: "area", fill: s.color,
          d: `${d}L${x(pts[pts.length - 1][0]).toFixed(1)},${y(0)}L${x(pts[0][0]).toFixed(1)},${y(0)}Z` }));
      }
      root.append(svg("path", { class: "series", stroke: s.color, d, "stroke-dasharray": s.dash || "none" }));
    });
    if (!drawn) {
      root.append(svg("text", { class: "nodata", x: pad.left + plotW / 2, y: pad.top + plotH / 2, "text-anchor": "middle" },
        "collecting samples…"));
    }
    let lx = pad.left;
    for (const s of series) {
      const latest = [...s.points].reverse().find(([, v]) => isNum(v));
      const label = `${s.name}${latest ? ` ${(s.format || opts.format)(latest[1])}` : ""}`;
      root.append(svg("rect", { x: lx, y: 6, width: 10, height: 10, rx: 2, fill: s.color }));
      root.append(svg("text", { class: "legend-text", x: lx + 14, y: 15 }, label));
      lx += 26 + label.length * 6.2;
    }
    container.replaceChildren(root);
  }

  function renderCharts() {
    const addresses = [];
    for (const sample of history) for (const a of Object.keys(sample.endpoints || {})) if (!addresses.includes(a)) addresses.push(a);
    addresses.sort();
    const per = (field) => addresses.map((a) => ({
      name: a, color: colorOf(a),
      points: history.map((s) => {
        const e = (s.endpoints || {})[a];
        if (!e) return [s.t, null];
        if (field === "load") return [s.t, isNum(e.running) || isNum(e.waiting) ? (e.running || 0) + (e.waiting || 0) : null];
        return [s.t, e[field]];
      }),
    }));
    const count = (v) => num(v, Number.isInteger(v) ? 0 : v < 10 ? (Number.isInteger(v * 10) ? 1 : 2) : 0);
    lineChart(byId("chart-load"), per("load"), { label: "load per endpoint", format: count, yMin: 1 });
    lineChart(byId("chart-kv"), per("kv"), { label: "KV-cache use", yMax: 1, format: (v) => pct(v) });
    const rate = (v) => num(v, 1);
    lineChart(byId("chart-traffic"), [
      { name: "inference req/s", color: "#3b6fe0", points: history.map((s) => [s.t, s.rps]), format: rate },
      { name: "routed/s", color: "#1f9d63", points: history.map((s) => [s.t, s.decisions_ps]), dash: "4 3", format: rate },
      { name: "errors/s", color: "#d64545", points: history.map((s) => [s.t, s.errors_ps]), format: rate },
    ], { label: "traffic", format: count, yMin: 1 });
    lineChart(byId("chart-saturation"), [
      { name: "saturation", color: "#d98a00", points: history.map((s) => [s.t, s.saturation]), fill: true, format: pct },
      { name: "queued", color: "#b54bd1", points: history.map((s) => [s.t, s.queued]), format: count },
    ], { label: "saturation and queue", format: count, yMin: 1 });
  }

  // ---- queues, rewrites, objectives ----------------------------------------------------------

  function renderQueues(flow) {
    const box = byId("queues");
    if (!flow) { box.replaceChildren(el("div", { class: "note", text: "picker unreachable" })); return; }
    if (!flow.enabled) {
      box.replaceChildren(el("div", { class: "note",
        text: "Flow control is off (picker.flow_control.enabled): sheddable requests get 429 while the pool is saturated; others go straight to an endpoint." }));
      return;
    }
    const bands = flow.bands || [];
    if (!bands.length) {
      box.replaceChildren(el("div", { class: "note", text: "No request has waited yet: every band is empty." }));
      return;
    }
    // bars compare tenants across every band: the longest queue fills its track
    const longest = Math.max(1, ...bands.flatMap((band) => band.flows.map((f) => f.requests)));
    box.replaceChildren(...bands.map((band) => {
      return el("div", { class: "band", "data-priority": band.priority },
        el("div", { class: "band-head" },
          el("strong", { text: `priority ${band.priority}${band.priority < 0 ? " (sheddable)" : ""}` }),
          el("span", { class: "muted", text: `${band.requests} queued${band.max_requests ? ` of ${band.max_requests}` : ""}` })),
        ...(band.flows.length
          ? band.flows.map((f) => el("div", { class: "flow" }, el("span", { class: "mono", text: f.fairness_id }),
            bar(f.requests / longest, f.requests ? "warn" : "", num(f.requests, 0))))
          : [el("div", { class: "note", text: "empty: every request of this band has been dispatched" })]));
    }));
  }

  function renderRewrites(rewrites) {
    const box = byId("rewrites");
    const rules = [];
    for (const rw of rewrites || []) {
      for (const rule of rw.rules) rules.push({ rw, rule });
    }
    if (!rules.length) {
      box.replaceChildren(el("div", { class: "note", text: "No model rewrites: requests go to the model they name." }));
      return;
    }
    box.replaceChildren(...rules.map(({ rw, rule }) => {
      const weights = rule.targets.map((t) => (t.weight === null || t.weight === undefined ? 1 : t.weight));
      const total = weights.reduce((a, b) => a + b, 0) || 1;
      const models = rule.models.length ? rule.models.join(", ") : "every other model";
      return el("div", { class: "rule" },
        el("div", { class: "rule-head" }, el("strong", { text: models }), " → ",
          el("span", { class: "muted", text: `${rw.name || "rewrite"} (${rw.source})` })),
        el("div", { class: "split" }, ...rule.targets.map((t, i) => {
          const share = weights[i] / total;
          return el("div", { style: `width:${share * 100}%;background:${PALETTE[i % PALETTE.length]}`,
            title: `${t.model}: weight ${t.weight ?? "equal"}`, text: `${t.model} ${Math.round(share * 100)}%` });
        })));
    }));
  }

  function renderObjectives(objectives) {
    const chips = (objectives || []).map((o) => el("span", { class: `chip ${o.priority < 0 ? "sheddable" : ""}`,
      text: `${o.name} · priority ${o.priority}${o.priority < 0 ? " · sheddable" : ""}` }));
    byId("objectives").replaceChildren(...(chips.length ? chips : [el("span", { class: "note", text: "none configured" })]));
  }

  // ---- decisions, batches --------------------------------------------------------------------

  function renderDecisions(decisions, scorers) {
    const tbody = byId("decisions").querySelector("tbody");
    const maxTotal = scorers.reduce((acc, s) => acc + s.weight, 0);
    const rows = decisions.map((d) => {
      const picked = d.picked[0];
      const model = d.model === d.target_model || !d.target_model ? d.model : `${d.model} → ${d.target_model}`;
      const candidates = d.outcome === "picked"
        ? el("div", { class: "cands" }, ...d.candidates.slice().sort((a, b) => b.total - a.total).map((c) =>
          el("div", { class: `cand ${c.address === picked ? "picked" : ""}` },
            el("span", { class: "addr", text: c.address, title: c.address }),
            scoreStack(scorers, c, maxTotal),
            el("span", { class: "total", text: num(c.total, 2) }))))
        : el("span", { class: "muted", text: `${d.candidates.length} candidate(s)` });
      return el("tr", { "data-request": d.request_id },
        el("td", { class: "muted", text: clock(d.time) }),
        el("td", { class: "mono", title: d.request_id, text: d.request_id.length > 12 ? `${d.request_id.slice(0, 8)}…` : d.request_id }),
        el("td", { text: model || "–" }),
        el("td", { text: `${d.objective || "default"} (${d.priority})` }),
        el("td", { class: "mono", text: d.fairness_id || "default" }),
        el("td", {}, d.outcome === "picked"
          ? el("span", { class: "mono" }, el("span", { class: "swatch", style: `background:${colorOf(picked)}` }), picked)
          : el("span", { class: "badge bad", text: "rejected" })),
        el("td", {}, candidates),
        el("td", { class: "why", text: d.reason }));
    });
    replaceRows(tbody, rows, 8, "no request routed yet");
  }

  const BATCH_CLASS = { completed: "ok", in_progress: "info", validating: "info", finalizing: "info",
    failed: "bad", expired: "bad", cancelled: "warn", cancelling: "warn" };

  function renderBatches(batches, source) {
    const tbody = byId("batches").querySelector("tbody");
    const rows = batches.map((b) => {
      const total = b.total || 0;
      const track = el("div", { class: "track" },
        el("div", { class: "fill ok", style: `width:${total ? (b.completed / total) * 100 : 0}%` }),
        el("div", { class: "fill bad", style: `width:${total ? (b.failed / total) * 100 : 0}%` }));
      return el("tr", { "data-batch": b.id },
        el("td", { class: "mono", text: b.id }),
        el("td", {}, el("span", { class: `badge ${BATCH_CLASS[b.status] || ""}`, text: b.status.replace("_", " ") })),
        el("td", {}, el("div", { class: "bar" }, track,
          el("span", { class: "text", text: total ? pct((b.completed + b.failed) / total) : "–" }))),
        el("td", { class: "num", text: num(b.completed, 0) }),
        el("td", { class: "num", text: num(b.failed, 0) }),
        el("td", { class: "num", text: num(total, 0) }),
        el("td", { class: "muted", text: ago(b.created_at) }));
    });
    const empty = source && source.url ? "no batch jobs yet" : "no Batch API configured";
    replaceRows(tbody, rows, 7, empty);
  }

  // ---- polling -------------------------------------------------------------------------------

  function render(snap) {
    snapshotTime = snap.time || Date.now() / 1000;
    historyS = snap.history_s || historyS;
    const state = snap.state || {};
    renderSources(snap.sources);
    renderTiles(snap);
    renderEndpoints(state);
    renderCharts();
    renderQueues(state.flow_control);
    renderRewrites(state.rewrites);
    renderObjectives(state.objectives);
    renderDecisions(snap.decisions || [], (state.profile || {}).scorers || []);
    renderBatches(snap.batches || [], (snap.sources || {}).batch);
    setText("updated", `updated ${clock(snapshotTime)}`);
  }

  async function refresh() {
    try {
      const response = await fetch(`api/snapshot?since=${lastT}`, { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const snap = await response.json();
      pollMs = Math.max(250, (snap.poll_interval_s || 1) * 1000);
      for (const sample of snap.history || []) {
        if (sample.t > lastT) { history.push(sample); lastT = sample.t; }
      }
      const cutoff = (snap.time || Date.now() / 1000) - (snap.history_s || historyS);
      while (history.length && history[0].t < cutoff) history.shift();
      render(snap);
    } catch (error) {
      const banner = byId("banner");
      banner.hidden = false;
      banner.textContent = `console server unreachable (${error.message}); retrying…`;
      setText("updated", "disconnected");
    } finally {
      setTimeout(refresh, pollMs);
    }
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(renderCharts, 150); });
  refresh();
})();

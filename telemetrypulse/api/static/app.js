// TelemetryPulse dashboard: plain JS and SVG, no external library, so it works offline.
// Polls the read endpoints every few seconds; alerts arrive live over SSE (/alerts/stream).
// An API key, when the server wants one (reads protected, or acknowledging), is typed once and kept in
// sessionStorage only: it is gone when the tab closes, and never written to localStorage or a cookie.
"use strict";

const REFRESH_MS = 5000;
const LISTS_REFRESH_MS = 30000;
const MAX_ALERTS = 200;
const SENSORS = ["co2", "temperature", "humidity", "occupancy"];
const WINDOWS = ["5m", "15m", "1h", "1d"];
// Trend ranges, each with the window size that fits it: 12 to 168 points, never more than the chart is wide.
const RANGES = [
  { value: "1h", label: "1 h", ms: 3600e3, window: "5m" },
  { value: "24h", label: "24 h", ms: 86400e3, window: "15m" },
  { value: "7d", label: "7 d", ms: 7 * 86400e3, window: "1h" },
  { value: "30d", label: "30 d", ms: 30 * 86400e3, window: "1d" },
];
const DECIMALS = { co2: 0, temperature: 1, humidity: 1, occupancy: 0 };
// SPEC §5 thresholds; the heatmap response carries them too, trends do not.
const THRESHOLDS = {
  co2: { open_above: 1000, resolve_at_or_below: 950 },
  temperature: { open_above: 30, resolve_at_or_below: 29 },
  humidity: { open_above: 80, resolve_at_or_below: 77 },
};
const SVG_NS = "http://www.w3.org/2000/svg";

const KEY_STORAGE = "telemetrypulse.apiKey";
const NAME_STORAGE = "telemetrypulse.operator";

const $ = (id) => document.getElementById(id);
const state = {
  sites: [],
  devices: [],
  alerts: new Map(),
  maxSeq: 0,
  selectedCell: null,
  device: null,
  alert: null,
  rule: null,
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  who: sessionStorage.getItem(NAME_STORAGE) || "",
  keyWaiters: [],
};

// ---------- helpers ----------
class ApiError extends Error {
  constructor(status, detail) {
    super(`${status} ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

function authHeaders(extra = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (state.key) headers["X-API-Key"] = state.key;
  return headers;
}

async function api(path, options = {}) {
  const usedKey = state.key;
  const init = { method: options.method || "GET", headers: authHeaders() };
  if (options.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    // A refusal of a request sent before a key was typed is not a reason to ask again.
    if ((response.status === 401 || response.status === 403) && usedKey === state.key) askForKey(detail);
    throw new ApiError(response.status, detail);
  }
  return response.status === 204 ? null : response.json();
}

// ---------- the API key (sessionStorage only) ----------
function renderKeyState() {
  const node = $("key-state");
  node.textContent = state.key ? `key set${state.who ? ` · ${state.who}` : ""}` : "no key";
  node.classList.toggle("set", Boolean(state.key));
  $("key-forget").hidden = !state.key;
  $("key-fields").hidden = Boolean(state.key) && Boolean(state.who);
  $("key-name").value = state.who;
}

function askForKey(reason) {
  const prompt = $("key-prompt");
  prompt.textContent = `${reason} — type an API key (and your name) at the top right; it is kept for this tab only.`;
  prompt.hidden = false;
  $("key-fields").hidden = false;
  $("key-form").classList.add("wanted");
}

function whenKeySet() {
  return new Promise((resolve) => state.keyWaiters.push(resolve));
}

function useKey(event) {
  event.preventDefault();
  const key = $("key-input").value.trim();
  const who = $("key-name").value.trim();
  if (key) {
    state.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
  }
  state.who = who;
  if (who) sessionStorage.setItem(NAME_STORAGE, who); else sessionStorage.removeItem(NAME_STORAGE);
  $("key-input").value = "";
  $("key-prompt").hidden = true;
  $("key-form").classList.remove("wanted");
  renderKeyState();
  for (const resolve of state.keyWaiters.splice(0)) resolve();
  refreshLists().then(loadAlerts).then(refreshAll).catch(() => {});
}

function forgetKey() {
  state.key = "";
  sessionStorage.removeItem(KEY_STORAGE);
  renderKeyState();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function fmt(value, sensor) {
  if (value === null || value === undefined) return "–";
  return Number(value).toFixed(DECIMALS[sensor] ?? 1);
}

function hhmm(iso) {
  return iso ? iso.slice(11, 16) : "";
}

function mmdd(iso) {
  return iso ? iso.slice(5, 10) : "";
}

function shortTime(iso) {
  return iso ? `${iso.slice(5, 10)} ${iso.slice(11, 19)}Z` : "";
}

function fillSelect(select, values, labels) {
  const previous = select.value;
  select.replaceChildren(...values.map((v, i) => el("option", { value: v, text: labels ? labels[i] : v })));
  if (values.includes(previous)) select.value = previous;
}

function mix(a, b, t) {
  const pa = a.match(/\w\w/g).map((h) => parseInt(h, 16));
  const pb = b.match(/\w\w/g).map((h) => parseInt(h, 16));
  const c = pa.map((x, i) => Math.round(x + (pb[i] - x) * Math.min(1, Math.max(0, t))));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// Colour against the thresholds: green up to the resolve level, amber up to the open threshold,
// red above it (darker the further above). Occupancy has no thresholds: blue by share of the maximum.
function cellColour(value, sensor, thresholds, maxValue) {
  if (!thresholds) return mix("1e3a5f", "29b6f6", maxValue > 0 ? value / maxValue : 0);
  const { open_above: high, resolve_at_or_below: low } = thresholds;
  if (value > high) return mix("e53935", "7f0000", (value - high) / (high * 0.5));
  if (value > low) return mix("f9a825", "ef6c00", (value - low) / (high - low));
  return mix("1b5e20", "7cb342", value / low);
}

function setUpdated() {
  $("updated").textContent = `updated ${new Date().toISOString().slice(11, 19)}Z`;
}

// ---------- heatmap ----------
async function refreshHeatmap() {
  const sensor = $("hm-sensor").value;
  const params = new URLSearchParams({ sensor_type: sensor, window: $("hm-window").value, metric: $("hm-metric").value });
  try {
    renderHeatmap(await api(`/heatmap?${params}`));
  } catch (error) {
    $("hm-meta").textContent = `heatmap unavailable: ${error.message}`;
  }
}

function renderHeatmap(data) {
  const box = $("heatmap");
  $("hm-meta").textContent = data.window_start
    ? `window ${shortTime(data.window_start)} – ${hhmm(data.window_end)}Z · ${data.unit}`
    : "no data yet";
  if (!data.sites.length) {
    box.replaceChildren(el("p", { class: "empty", text: "No data for this sensor yet." }));
    renderLegend(data);
    return;
  }
  let maxValue = 0;
  for (const row of data.cells) for (const cell of row) if (cell) maxValue = Math.max(maxValue, cell.value);
  const head = el("tr", {}, el("th"), ...data.zones.map((z) => el("th", { text: z })));
  const rows = data.sites.map((site, i) => {
    const cells = data.zones.map((zone, j) => {
      const cell = data.cells[i][j];
      if (!cell) return el("td", { class: "cell none", "data-site": site, "data-zone": zone, text: "·" });
      const td = el(
        "td",
        {
          class: "cell",
          "data-testid": "heatmap-cell",
          "data-site": site,
          "data-zone": zone,
          "data-level": cell.level || "",
          title: `${site} / ${zone}\navg ${fmt(cell.avg_value, data.sensor_type)} · min ${fmt(cell.min_value, data.sensor_type)} · max ${fmt(cell.max_value, data.sensor_type)}\n${cell.count_events} events from ${cell.device_count} devices`,
          onclick: () => selectZone(site, zone, data.sensor_type),
        },
        el("span", { class: "v", text: fmt(cell.value, data.sensor_type) }),
        el("span", { class: "n", text: `${cell.count_events} ev` }),
      );
      td.style.background = cellColour(cell.value, data.sensor_type, data.thresholds, maxValue);
      if (state.selectedCell === `${site}/${zone}`) td.classList.add("selected");
      return td;
    });
    return el("tr", {}, el("th", { class: "row", text: site }), ...cells);
  });
  box.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
  renderLegend(data);
}

function renderLegend(data) {
  const legend = $("hm-legend");
  if (!data.thresholds) {
    legend.replaceChildren(el("span", { text: `shade: share of the highest value (${data.unit})` }));
    return;
  }
  const t = data.thresholds;
  const item = (colour, text) => {
    const swatch = el("i");
    swatch.style.background = colour;
    return el("span", {}, swatch, text);
  };
  legend.replaceChildren(
    item("#2e7d32", `≤ ${t.resolve_at_or_below} ok`),
    item("#f9a825", `≤ ${t.open_above} warn`),
    item("#e53935", `> ${t.open_above} alert`),
  );
}

function selectZone(site, zone, sensor) {
  state.selectedCell = `${site}/${zone}`;
  $("tr-scope").value = "zone";
  $("tr-site").value = site;
  updateZoneOptions();
  $("tr-zone").value = zone;
  $("tr-sensor").value = sensor;
  updateScopeVisibility();
  refreshTrends();
  refreshHeatmap();
}

// ---------- trends ----------
function trendRange() {
  return RANGES.find((r) => r.value === $("tr-range").value) || RANGES[0];
}

// The chosen range, ending now, in the window size that fits it.
function trendQuery() {
  const scope = $("tr-scope").value;
  const range = trendRange();
  const end = new Date();
  const params = new URLSearchParams({
    sensor_type: $("tr-sensor").value,
    window: range.window,
    start: new Date(end.getTime() - range.ms).toISOString(),
    end: end.toISOString(),
  });
  if (scope === "zone" || scope === "site") {
    if (!$("tr-site").value) return null;
    params.set("site_id", $("tr-site").value);
  }
  if (scope === "zone") {
    if (!$("tr-zone").value) return null;
    params.set("zone_id", $("tr-zone").value);
  }
  if (scope === "device") {
    if (!$("tr-device").value) return null;
    params.set("device_id", $("tr-device").value);
  }
  return params;
}

async function refreshTrends() {
  const params = trendQuery();
  updateDownloads(params);
  if (!params) {
    drawTrend($("trend-chart"), null, $("tr-sensor").value);
    return;
  }
  try {
    const data = await api(`/trends?${params}`);
    const series = data.series[0] || null;
    const points = series ? series.points.length : 0;
    $("tr-meta").textContent = `${points} × ${data.window} window${points === 1 ? "" : "s"} · ${shortTime(data.start)} → ${shortTime(data.end)}`;
    const span = [Date.parse(data.start), Date.parse(data.end)];
    drawTrend($("trend-chart"), series, $("tr-sensor").value, trendRange().ms > 86400e3 ? mmdd : hhmm, span);
  } catch (error) {
    $("tr-meta").textContent = `trends unavailable: ${error.message}`;
  }
}

// The CSV links follow what the chart shows: its trend, and (device scope) the device's raw readings of the range.
function updateDownloads(params) {
  const trends = $("tr-csv");
  const readings = $("tr-readings-csv");
  trends.hidden = !params;
  readings.hidden = !params || $("tr-scope").value !== "device";
  if (!params) return;
  const csv = new URLSearchParams(params);
  csv.set("format", "csv");
  trends.href = `/trends?${csv}`;
  trends.setAttribute("download", `trends-${csv.get("window")}-${csv.get("sensor_type")}.csv`);
  const device = $("tr-device").value;
  const raw = new URLSearchParams({ sensor_type: csv.get("sensor_type"), start: csv.get("start"), end: csv.get("end"), format: "csv" });
  readings.href = `/devices/${encodeURIComponent(device)}/readings?${raw}`;
  readings.setAttribute("download", `readings-${device}-${csv.get("sensor_type")}.csv`);
}

// A plain link downloads when reads are open; with a key the file is fetched with it (a link cannot send a
// header) and handed to the browser as a blob.
async function downloadWithKey(event) {
  if (!state.key) return;
  event.preventDefault();
  const link = event.currentTarget;
  try {
    const response = await fetch(link.href, { headers: authHeaders({ Accept: "text/csv" }) });
    if (!response.ok) throw new ApiError(response.status, response.statusText);
    const url = URL.createObjectURL(await response.blob());
    const save = el("a", { href: url, download: link.getAttribute("download") });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    $("tr-meta").textContent = `download failed: ${error.message}`;
  }
}

// `span`: [start, end] in ms to lay the x axis over (the chosen range), else the points' own extent.
function drawTrend(chart, series, sensor, tickLabel = hhmm, span = null) {
  chart.replaceChildren();
  const W = 900, H = 260, L = 52, R = 12, T = 12, B = 26;
  if (!series || !series.points.length) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" });
    t.textContent = "No windows in this range yet.";
    chart.append(t);
    return;
  }
  const pts = series.points;
  const xs = pts.map((p) => Date.parse(p.window_start));
  const thresholds = THRESHOLDS[sensor];
  let lo = Math.min(...pts.map((p) => p.min_value));
  let hi = Math.max(...pts.map((p) => p.max_value));
  if (thresholds && hi > thresholds.resolve_at_or_below * 0.8) hi = Math.max(hi, thresholds.open_above * 1.05);
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.05;
  lo -= pad; hi += pad;
  const x0 = span ? span[0] : xs[0];
  const x1 = span ? span[1] : xs.length > 1 ? xs[xs.length - 1] : xs[0] + 1;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - lo) / (hi - lo)) * (H - T - B);

  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: sy(v), y2: sy(v) }));
    const label = svg("text", { x: L - 6, y: sy(v) + 4, "text-anchor": "end" });
    label.textContent = fmt(v, sensor);
    chart.append(label);
  }
  const ticks = span ? 6 : Math.min(6, xs.length);
  for (let i = 0; i < ticks; i++) {
    const idx = Math.round((i * (xs.length - 1)) / Math.max(1, ticks - 1));
    const at = span ? x0 + ((x1 - x0) * i) / (ticks - 1) : xs[idx];
    const anchor = ticks > 1 && i === 0 ? "start" : ticks > 1 && i === ticks - 1 ? "end" : "middle";
    const label = svg("text", { x: sx(at), y: H - 8, "text-anchor": anchor });
    label.textContent = tickLabel(new Date(at).toISOString());
    chart.append(label);
  }
  chart.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));

  const upper = pts.map((p, i) => `${sx(xs[i])},${sy(p.max_value)}`);
  const lower = pts.map((p, i) => `${sx(xs[i])},${sy(p.min_value)}`).reverse();
  chart.append(svg("polygon", { class: "band", points: upper.concat(lower).join(" ") }));
  const line = pts.map((p, i) => `${i ? "L" : "M"}${sx(xs[i])},${sy(p.avg_value)}`).join(" ");
  chart.append(svg("path", { class: "avg", d: line }));
  if (pts.length === 1) chart.append(svg("circle", { class: "dot", cx: sx(xs[0]), cy: sy(pts[0].avg_value), r: 3 }));
  if (thresholds) {
    for (const [cls, v] of [["thr", thresholds.open_above], ["thr-resolve", thresholds.resolve_at_or_below]]) {
      if (v > lo && v < hi) chart.append(svg("line", { class: cls, x1: L, x2: W - R, y1: sy(v), y2: sy(v) }));
    }
  }
}

function updateZoneOptions() {
  const site = state.sites.find((s) => s.site_id === $("tr-site").value);
  fillSelect($("tr-zone"), site ? site.zones : []);
}

function updateScopeVisibility() {
  const scope = $("tr-scope").value;
  document.querySelector(".for-site").hidden = !(scope === "zone" || scope === "site");
  document.querySelector(".for-zone").hidden = scope !== "zone";
  document.querySelector(".for-device").hidden = scope !== "device";
}

// ---------- alerts ----------
// What opened it: `> 1000` (above), `< 2` (below), or a sensor silent for more than N seconds (stale).
function condition(alert) {
  if (alert.rule === "stale") return `silent > ${alert.threshold} s · last ${fmt(alert.value, alert.sensor_type)}`;
  const sign = alert.alert_type.endsWith("_LOW") ? "<" : ">";
  const rule = alert.rule_id ? ` · ${alert.rule_id}` : "";
  return `${fmt(alert.value, alert.sensor_type)} → peak ${fmt(alert.peak_value, alert.sensor_type)} (${sign} ${alert.threshold}${rule})`;
}

function alertItem(alert, fresh) {
  const what = el("span", { class: "what", text: `${alert.alert_type} · ${alert.device_id}` },
    el("span", { class: `sev sev-${alert.severity}`, "data-testid": "severity", text: alert.severity }));
  const values = condition(alert);
  const when = alert.resolved_at ? `opened ${shortTime(alert.opened_at)}\nresolved ${shortTime(alert.resolved_at)}` : `opened ${shortTime(alert.opened_at)}`;
  const ack = alert.acknowledged
    ? el("span", { class: "ack acked-by", text: `✓ acknowledged by ${alert.acknowledged_by} ${shortTime(alert.acknowledged_at)}` })
    : el("span", { class: "ack" }, el("button", {
      type: "button",
      class: "ack-button",
      "data-testid": "ack-button",
      text: "acknowledge",
      onclick: (event) => { event.stopPropagation(); acknowledge(alert.alert_id); },
    }));
  const classes = [alert.status, fresh ? "fresh" : "", alert.acknowledged ? "acked" : "", state.alert === alert.alert_id ? "selected" : ""];
  return el(
    "li",
    {
      class: classes.filter(Boolean).join(" "),
      "data-alert-id": alert.alert_id,
      "data-status": alert.status,
      "data-device": alert.device_id,
      "data-acknowledged": String(Boolean(alert.acknowledged)),
      "data-severity": alert.severity,
      onclick: () => { selectDevice(alert.device_id); selectAlert(alert.alert_id); },
    },
    el("span", { class: "badge", text: alert.status }),
    what,
    el("span", { class: "when", text: when }),
    el("span"),
    el("span", { class: "where", text: `${alert.site_id} / ${alert.zone_id} · ${values}` }),
    ack,
  );
}

function renderAlerts(freshId) {
  const openOnly = $("al-open-only").checked;
  const unackedOnly = $("al-unacked").checked;
  const severity = $("al-severity").value;
  const list = [...state.alerts.values()]
    .filter((a) => (!openOnly || a.status === "open") && (!unackedOnly || !a.acknowledged))
    .filter((a) => !severity || a.severity === severity)
    .sort((a, b) => (a.opened_at < b.opened_at ? 1 : a.opened_at > b.opened_at ? -1 : a.alert_id < b.alert_id ? 1 : -1))
    .slice(0, MAX_ALERTS);
  $("alerts").replaceChildren(...list.map((a) => alertItem(a, a.alert_id === freshId)));
  const all = [...state.alerts.values()];
  const open = all.filter((a) => a.status === "open").length;
  const unacked = all.filter((a) => a.status === "open" && !a.acknowledged).length;
  $("al-meta").textContent = `${open} open · ${unacked} unacknowledged`;
}

// The stream carries the sink's changes; an acknowledgement is the operators' and travels on its own
// (the list reload and our own POSTs), so a newer stream row must not drop a known acknowledgement.
function mergeAlert(alert) {
  const known = state.alerts.get(alert.alert_id);
  if (known && known.acknowledged && !alert.acknowledged) {
    for (const k of ["acknowledged", "acknowledged_by", "acknowledged_at"]) alert[k] = known[k];
  }
  state.alerts.set(alert.alert_id, alert);
}

function upsertAlert(alert) {
  const known = state.alerts.get(alert.alert_id);
  if (known && known.change_seq >= alert.change_seq) return;
  mergeAlert(alert);
  state.maxSeq = Math.max(state.maxSeq, alert.change_seq);
  renderAlerts(alert.alert_id);
  if (state.device === alert.device_id) refreshDevice();
  if (state.alert === alert.alert_id) refreshAlert();
}

async function loadAlerts() {
  const page = await api("/alerts?limit=100");
  for (const alert of page.items) {
    const known = state.alerts.get(alert.alert_id);
    if (known && known.change_seq > alert.change_seq) {
      // The stream is ahead on the sink's fields; the list is as fresh as any on the acknowledgement.
      for (const k of ["acknowledged", "acknowledged_by", "acknowledged_at"]) known[k] = alert[k];
    } else {
      mergeAlert(alert);
    }
    state.maxSeq = Math.max(state.maxSeq, alert.change_seq);
  }
  renderAlerts(null);
}

function setConn(kind, text) {
  const node = $("conn");
  node.className = `conn conn-${kind}`;
  node.textContent = text;
}

// Server-sent events read with fetch: EventSource cannot send the X-API-Key header that protected reads
// need. Reconnects by itself and resumes after the last id it saw (Last-Event-ID), as EventSource does.
async function connectStream() {
  let lastId = state.maxSeq ? String(state.maxSeq) : "";
  for (;;) {
    try {
      const usedKey = state.key;
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch("/alerts/stream", { headers, cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        if (usedKey !== state.key) continue;  // a key was typed meanwhile: try it
        let detail = response.statusText;
        try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
        setConn("down", "key needed");
        askForKey(detail);
        await whenKeySet();
        continue;
      }
      if (!response.ok || !response.body) throw new Error(`stream: ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const message = { event: "message", data: [], id: null };
          for (const line of block.split("\n")) {
            if (!line || line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") message.event = text;
            else if (field === "data") message.data.push(text);
            else if (field === "id") message.id = text;
          }
          if (message.id) lastId = message.id;
          setConn("live", "live");
          if (message.event === "alert") upsertAlert(JSON.parse(message.data.join("\n")));
        }
      }
    } catch (_) { /* dropped: reconnect below */ }
    setConn("wait", "reconnecting…");
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

// ---------- acknowledge, notes, timeline ----------
function needOperator() {
  if (state.key && state.who) return false;
  askForKey(state.key ? "Your name is needed to acknowledge or annotate" : "Acknowledging needs an API key with scope operate");
  return true;
}

async function acknowledge(alertId) {
  if (needOperator()) return;
  try {
    const detail = await api(`/alerts/${alertId}/ack`, { method: "POST", body: { by: state.who } });
    const known = state.alerts.get(alertId) || detail;
    state.alerts.set(alertId, { ...known, acknowledged: detail.acknowledged, acknowledged_by: detail.acknowledged_by, acknowledged_at: detail.acknowledged_at });
    renderAlerts(null);
    if (state.alert === alertId) renderAlertDetail(detail);
    if (state.device === detail.device_id) refreshDevice();
  } catch (error) {
    $("ad-meta").textContent = `acknowledge failed: ${error.message}`;
  }
}

function selectAlert(alertId) {
  state.alert = alertId;
  renderAlerts(null);
  refreshAlert();
}

async function refreshAlert() {
  const alertId = state.alert;
  if (!alertId) return;
  try {
    const detail = await api(`/alerts/${alertId}`);
    if (state.alert === alertId) renderAlertDetail(detail);
  } catch (error) {
    $("alert-detail").replaceChildren(el("p", { class: "empty", text: `alert: ${error.message}` }));
  }
}

function renderAlertDetail(detail) {
  $("ad-meta").textContent = `${detail.alert_type} · ${detail.device_id} · ${detail.status} · severity ${detail.severity}`;
  const ack = detail.acknowledgement
    ? el("p", { class: "acked-by", "data-testid": "ack-state", text: `✓ acknowledged by ${detail.acknowledgement.by} at ${shortTime(detail.acknowledgement.at)}${detail.acknowledgement.note ? ` — ${detail.acknowledgement.note}` : ""}` })
    : el("p", { "data-testid": "ack-state" }, el("button", { type: "button", "data-testid": "detail-ack-button", text: "acknowledge", onclick: () => acknowledge(detail.alert_id) }));
  const notes = detail.notes.length
    ? el("ol", { "data-testid": "notes" }, ...detail.notes.map((n) => el("li", { "data-testid": "note" }, el("span", { class: "t", text: shortTime(n.created_at) }), el("span", { class: "kind", text: n.by }), el("span", { text: n.text }))))
    : el("p", { class: "empty", text: "No notes yet." });
  const input = el("textarea", { "data-testid": "note-input", maxlength: "4000", placeholder: "add a note…" });
  const error = el("p", { class: "error" });
  const submit = el("button", {
    type: "button",
    "data-testid": "note-submit",
    text: "add note",
    onclick: async () => {
      const text = input.value.trim();
      if (!text || needOperator()) return;
      try {
        await api(`/alerts/${detail.alert_id}/notes`, { method: "POST", body: { by: state.who, text } });
        input.value = "";
        refreshAlert();
      } catch (e) {
        error.textContent = `note not saved: ${e.message}`;
      }
    },
  });
  const timeline = el("ol", { "data-testid": "timeline" }, ...detail.timeline.map((e) => el(
    "li",
    { "data-kind": e.kind },
    el("span", { class: "t", text: shortTime(e.at) }),
    el("span", { class: "kind", text: e.kind }),
    el("span", { text: [e.by, e.text].filter(Boolean).join(": ") }),
  )));
  $("alert-detail").replaceChildren(el(
    "div",
    { class: "alert-detail" },
    el("h3", { text: `${detail.alert_type} · ${detail.device_id} · ${detail.site_id} / ${detail.zone_id} · peak ${fmt(detail.peak_value, detail.sensor_type)}` }),
    ack,
    el("div", { class: "cols" },
      el("div", {}, el("h3", { text: "Notes" }), notes, input, submit, error),
      el("div", {}, el("h3", { text: "Timeline" }), timeline)),
  ));
}

// ---------- device drill-down ----------
function selectDevice(deviceId) {
  if (![...$("dev-select").options].some((o) => o.value === deviceId)) {
    $("dev-select").append(el("option", { value: deviceId, text: deviceId }));
  }
  $("dev-select").value = deviceId;
  state.device = deviceId;
  refreshDevice();
}

function sparkline(points) {
  const box = svg("svg", { class: "spark", viewBox: "0 0 160 32", preserveAspectRatio: "none" });
  if (points.length < 2) return box;
  const values = points.map((p) => p.avg_value);
  const lo = Math.min(...values), hi = Math.max(...values);
  const span = hi - lo || 1;
  const d = values.map((v, i) => `${i ? "L" : "M"}${(i / (values.length - 1)) * 158 + 1},${30 - ((v - lo) / span) * 28}`).join(" ");
  box.append(svg("path", { d }));
  return box;
}

async function refreshDevice() {
  const deviceId = state.device;
  if (!deviceId) return;
  const box = $("device-detail");
  try {
    const [detail, trends] = await Promise.all([
      api(`/devices/${encodeURIComponent(deviceId)}`),
      api(`/trends?device_id=${encodeURIComponent(deviceId)}&window=5m`),
    ]);
    if (state.device !== deviceId) return;
    const bySensor = Object.fromEntries(trends.series.map((s) => [s.sensor_type, s.points]));
    const rows = detail.sensors.map((s) => {
      const t = THRESHOLDS[s.sensor_type];
      const level = !t ? "" : s.value > t.open_above ? "lvl-alert" : s.value > t.resolve_at_or_below ? "lvl-warn" : "";
      return el(
        "tr",
        {},
        el("td", { text: s.sensor_type }),
        el("td", { class: level, text: `${fmt(s.value, s.sensor_type)} ${s.unit}` }),
        el("td", { text: shortTime(s.ts_event) }),
        el("td", {}, sparkline(bySensor[s.sensor_type] || [])),
      );
    });
    const alerts = detail.open_alerts.length
      ? el("ul", { class: "alerts" }, ...detail.open_alerts.map((a) => alertItem(a, false)))
      : el("p", { class: "empty", text: "No open alerts." });
    box.replaceChildren(
      el(
        "div",
        { class: "device" },
        el("h3", { text: `${detail.device_id} · ${detail.site_id} / ${detail.zone_id} · last seen ${shortTime(detail.last_seen)}` }),
        el("table", {}, el("tr", {}, ...["sensor", "latest", "at", "last 6 h (5m avg)"].map((h) => el("th", { text: h }))), ...rows),
        el("h3", { text: "Open alerts" }),
        alerts,
      ),
    );
  } catch (error) {
    box.replaceChildren(el("p", { class: "empty", text: `device ${deviceId}: ${error.message}` }));
  }
}

// ---------- stale sensors ----------
async function refreshStale() {
  try {
    const page = await api("/alerts?rule=stale&status=open&limit=200");
    const items = page.items.map((a) => {
      const lastSeen = new Date(Date.parse(a.opened_at) - a.threshold * 1000).toISOString();
      return el("li", { class: "open", "data-device": a.device_id, onclick: () => { selectDevice(a.device_id); selectAlert(a.alert_id); } },
        el("span", { class: "badge", text: "stale" }),
        el("span", { class: "what", text: `${a.device_id} · ${a.sensor_type}` }),
        el("span", { class: "when", text: `last reading ${shortTime(lastSeen)}` }),
        el("span"),
        el("span", { class: "where", text: `${a.site_id} / ${a.zone_id} · last value ${fmt(a.value, a.sensor_type)} · silent > ${a.threshold} s` }));
    });
    $("stale").replaceChildren(...(items.length ? items : [el("li", { class: "empty", text: "Every sensor is reporting." })]));
    $("st-meta").textContent = `${page.items.length} stale`;
  } catch (error) {
    $("st-meta").textContent = `unavailable: ${error.message}`;
  }
}

// ---------- alert rules (admin key) ----------
const RULE_COLUMNS = ["rule_id", "sensor_type", "direction", "open_at", "resolve_at", "scope", "for_s", "severity", "effective_from", "versions"];

function scopeOf(rule) {
  if (rule.device_id) return `device ${rule.device_id}`;
  if (rule.zone_id) return `zone ${rule.site_id}/${rule.zone_id}`;
  if (rule.site_id) return `site ${rule.site_id}`;
  return "everywhere";
}

function ruleCells(rule, count) {
  const values = { ...rule, scope: scopeOf(rule), effective_from: shortTime(rule.effective_from), versions: count };
  return RULE_COLUMNS.map((c) => el("td", { text: String(values[c] ?? "") }));
}

async function loadRules() {
  try {
    const rules = (await api("/rules")).items;
    const head = el("tr", {}, ...RULE_COLUMNS.map((c) => el("th", { text: c.replace("_", " ") })));
    const rows = rules.map((r) => el("tr", {
      class: `rule${r.enabled ? "" : " off"}${state.rule === r.rule_id ? " selected" : ""}`,
      "data-rule-id": r.rule_id,
      onclick: () => selectRule(r.rule_id),
    }, ...ruleCells(r, r.version_count)));
    $("rules").replaceChildren(head, ...rows);
    $("rule-form").hidden = false;
    $("ru-meta").textContent = `${rules.length} rules · a change reaches every worker within seconds`;
    if (state.rule) await selectRule(state.rule);
  } catch (error) {
    $("ru-meta").textContent = `rules unavailable: ${error.message}`;
  }
}

async function selectRule(ruleId) {
  state.rule = ruleId;
  for (const row of document.querySelectorAll("#rules tr.rule")) row.classList.toggle("selected", row.dataset.ruleId === ruleId);
  const detail = await api(`/rules/${encodeURIComponent(ruleId)}`);
  $("rv-title").hidden = false;
  $("rv-title").textContent = `Versions of ${ruleId}`;
  const head = el("tr", {}, ...["version", "revision", "enabled", ...RULE_COLUMNS.slice(1, -1), "by"].map((c) => el("th", { text: c.replace("_", " ") })));
  const rows = detail.versions.map((v) => el("tr", { class: v.enabled ? "" : "off" },
    el("td", { text: String(v.version) }), el("td", { text: String(v.revision) }), el("td", { text: String(v.enabled) }),
    ...ruleCells(v, "").slice(1, -1), el("td", { text: v.created_by || "" })));
  $("rule-versions").replaceChildren(head, ...rows);
  const form = $("rule-form");
  for (const name of ["rule_id", "sensor_type", "direction", "open_at", "resolve_at", "site_id", "zone_id", "device_id", "for_s", "severity"]) {
    form.elements[name].value = detail[name] ?? "";
  }
  form.elements.enabled.checked = true;
  form.elements.effective_from.value = "";
}

function ruleBody(form) {
  const body = {
    sensor_type: form.elements.sensor_type.value,
    direction: form.elements.direction.value,
    open_at: Number(form.elements.open_at.value),
    resolve_at: Number(form.elements.resolve_at.value),
    for_s: Number(form.elements.for_s.value || 0),
    severity: form.elements.severity.value,
    enabled: form.elements.enabled.checked,
  };
  for (const name of ["site_id", "zone_id", "device_id", "effective_from"]) {
    const value = form.elements[name].value.trim();
    if (value) body[name] = value;
  }
  return body;
}

async function saveRule(event) {
  event.preventDefault();
  const form = $("rule-form");
  const ruleId = form.elements.rule_id.value.trim();
  $("rule-error").textContent = "";
  try {
    await api(`/rules/${encodeURIComponent(ruleId)}`, { method: "PUT", body: ruleBody(form) });
    state.rule = ruleId;
    await loadRules();
  } catch (error) {
    $("rule-error").textContent = error.detail || error.message;
  }
}

async function turnRuleOff() {
  const ruleId = $("rule-form").elements.rule_id.value.trim();
  $("rule-error").textContent = "";
  try {
    await api(`/rules/${encodeURIComponent(ruleId)}`, { method: "DELETE" });
    state.rule = ruleId;
    await loadRules();
  } catch (error) {
    $("rule-error").textContent = error.detail || error.message;
  }
}

// ---------- lists, wiring, refresh loop ----------
async function refreshLists() {
  try {
    const [sites, devices] = await Promise.all([api("/sites"), api("/devices?limit=1000")]);
    state.sites = sites.items;
    state.devices = devices.items;
    fillSelect($("tr-site"), state.sites.map((s) => s.site_id));
    updateZoneOptions();
    const ids = state.devices.map((d) => d.device_id);
    fillSelect($("tr-device"), ids);
    fillSelect($("dev-select"), [""].concat(ids), ["—"].concat(ids));
    if (state.device) $("dev-select").value = state.device;
  } catch (error) {
    $("tr-meta").textContent = `lists unavailable: ${error.message}`;
  }
}

async function refreshAll() {
  await Promise.all([refreshHeatmap(), refreshTrends(), refreshDevice(), refreshAlert(), refreshStale()]);
  setUpdated();
}

async function main() {
  fillSelect($("hm-sensor"), SENSORS);
  fillSelect($("tr-sensor"), SENSORS);
  fillSelect($("hm-window"), WINDOWS);
  fillSelect($("tr-range"), RANGES.map((r) => r.value), RANGES.map((r) => `${r.label} (${r.window} windows)`));
  for (const id of ["hm-sensor", "hm-window", "hm-metric"]) $(id).addEventListener("change", refreshHeatmap);
  for (const id of ["tr-zone", "tr-device", "tr-sensor", "tr-range"]) $(id).addEventListener("change", refreshTrends);
  for (const id of ["tr-csv", "tr-readings-csv"]) $(id).addEventListener("click", downloadWithKey);
  $("tr-site").addEventListener("change", () => { updateZoneOptions(); refreshTrends(); });
  $("tr-scope").addEventListener("change", () => { updateScopeVisibility(); refreshTrends(); });
  $("dev-select").addEventListener("change", () => { state.device = $("dev-select").value || null; refreshDevice(); });
  $("al-open-only").addEventListener("change", () => renderAlerts(null));
  $("al-unacked").addEventListener("change", () => renderAlerts(null));
  $("al-severity").addEventListener("change", () => renderAlerts(null));
  fillSelect($("rule-form").elements.sensor_type, SENSORS);
  $("rules-load").addEventListener("click", loadRules);
  $("rule-form").addEventListener("submit", saveRule);
  $("rule-off").addEventListener("click", turnRuleOff);
  $("key-form").addEventListener("submit", useKey);
  $("key-forget").addEventListener("click", forgetKey);
  updateScopeVisibility();
  renderKeyState();

  await refreshLists();
  try { await loadAlerts(); } catch (error) { $("al-meta").textContent = `alerts unavailable: ${error.message}`; }
  connectStream();
  await refreshAll();
  setInterval(refreshAll, REFRESH_MS);
  // The list reload also brings acknowledgements made by other operators.
  setInterval(() => { refreshLists(); loadAlerts().catch(() => {}); }, LISTS_REFRESH_MS);
}

main();

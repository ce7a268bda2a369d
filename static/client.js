// The GUI's client: the REST API for actions, the WebSocket feed for live progress.
"use strict";

const app = document.getElementById("app");
const isAdmin = app.dataset.role === "admin";
const ROOT = app.dataset.root || ""; // the sub-path behind a reverse proxy, if any
const jobs = new Map(); // id -> job
const SPEED_HISTORY = 3600; // the chart's samples: one a second, the last hour
const speedSamples = []; // total bytes/s, one a second, the last hour (the daemon's history first)
const FINAL = new Set(["completed", "failed", "cancelled"]);

// Helpers -------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    // Through the CSSOM: the page's CSP (no inline styles) blocks a `style` attribute.
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// One rule with sizes.py (the CLI): decimal units, one decimal, halves up; tests/fixtures/sizes.json.
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const whole = Math.floor(Number(n) + 0.5);
  if (whole < 1000) return `${whole} B`;
  const units = ["KB", "MB", "GB", "TB"];
  for (let p = 1; p <= units.length; p += 1) {
    const size = 1000n ** BigInt(p); // BigInt: no binary rounding of halves, as in Python
    const tenths = (BigInt(whole) * 10n + size / 2n) / size;
    if (tenths < 10000n || p === units.length) return `${tenths / 10n}.${tenths % 10n} ${units[p - 1]}`;
  }
  return `${whole} B`;
}

function speed(bps) { return bps ? `${bytes(bps)}/s` : "–"; }

function eta(job) {
  if (job.status !== "downloading" || !job.speed_bps || !job.bytes_total) return "–";
  const s = Math.max(0, (job.bytes_total - job.bytes_done) / job.speed_bps);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

// toast(message, kind, key) is in toasts.js.

// Every call goes through here: a person sees a sentence, never raw JSON or a stack trace.
async function api(method, path, body, isForm = false) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    if (isForm) options.body = body;
    else { options.body = JSON.stringify(body); options.headers["Content-Type"] = "application/json"; }
  }
  let response;
  try {
    response = await fetch(ROOT + path, options);
  } catch (err) {
    throw new Error("The daemon cannot be reached. Is it running?");
  }
  if (response.status === 401) { window.location.assign(ROOT + "/gui"); throw new Error("Please log in again."); }
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : `The daemon answered ${response.status}.`;
    const error = new Error(detail);
    error.data = data;
    throw error;
  }
  return data;
}

async function act(promise, success) {
  try {
    const result = await promise;
    if (success) toast(typeof success === "function" ? success(result) : success);
    return result;
  } catch (err) {
    toast(err.message, "danger");
    return null;
  }
}

// Queue -----------------------------------------------------------------------------------

const STATUS_STYLE = { queued: "secondary", downloading: "primary", waiting: "warning", verifying: "info", paused: "warning", completed: "success", failed: "danger", cancelled: "dark" };

function jobName(job) {
  return job.model_name ? `${job.model_name}${job.version_name ? " · " + job.version_name : ""}` : (job.filename || `job ${job.id}`);
}

// "waiting — retry in 12 s (attempt 2 of 5)": the next attempt's time counts down each second.
function waitText(job) {
  const left = Math.max(0, Math.ceil((Date.parse(job.next_attempt_at) - Date.now()) / 1000));
  const of = job.max_attempts ? ` of ${job.max_attempts}` : "";
  return `waiting — retry in ${left} s (attempt ${job.attempts + 1}${of})`;
}

// A job's row; queue.js puts it in its group.
function jobRow(job) {
  const pct = job.bytes_total ? Math.min(100, Math.floor((100 * job.bytes_done) / job.bytes_total)) : (job.status === "completed" ? 100 : 0);
  const bar = el("div", { class: "progress", role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 },
    el("div", { class: `progress-bar${job.status === "downloading" ? " progress-bar-striped progress-bar-animated" : ""} bg-${STATUS_STYLE[job.status] || "secondary"}`, style: `width: ${pct}%` }, `${pct}%`));
  const actions = el("td", { class: "text-end text-nowrap" }, ...jobControls(job)); // controls.js
  const name = el("td", {}, el("div", { class: "fw-semibold" }, jobSelect(job), jobName(job)), el("div", { class: "small text-body-secondary text-truncate text-truncate-path" }, job.filename || ""));
  if (job.status === "waiting" && job.next_attempt_at) name.append(el("div", { class: "small job-wait" }, waitText(job)));
  if (job.verified_by === "size") name.append(el("div", { class: "small text-body-secondary job-verified-by", title: "The Hugging Face Hub publishes a SHA256 only for files kept in LFS/Xet" }, "checked by size only: its source publishes no SHA256"));
  if (job.verified_by === "git-sha1") name.append(el("div", { class: "small text-body-secondary job-verified-by", title: "A file kept in git: the Hub's ETag is its git blob SHA-1, sha1(\"blob <size>\\0\" + bytes)" }, "checked by its git blob SHA-1: its source publishes no SHA256"));
  if (job.error) name.append(el("div", { class: `small job-error ${job.status === "failed" ? "text-danger" : "text-warning-emphasis"}` }, job.error));
  const cells = [
    name,
    el("td", {}, job.model_type),
    el("td", {}, bar),
    el("td", { class: "small text-nowrap" }, `${bytes(job.bytes_done)} / ${bytes(job.bytes_total)}`),
    el("td", { class: "small text-nowrap" }, job.status === "downloading" ? speed(job.speed_bps) : "–"),
    el("td", { class: "small text-nowrap job-eta" }, eta(job)),
    el("td", {}, el("span", { class: `badge text-bg-${STATUS_STYLE[job.status] || "secondary"} job-status` }, job.status)),
    actions,
  ];
  const row = el("tr", { id: `job-${job.id}`, "data-status": job.status }, ...cells);
  jobDraggable(row, job); // controls.js
  return row;
}

function renderJob(job) { queueShow(job, jobRow(job)); }

function upsertJob(job) {
  const before = jobs.get(job.id);
  jobs.set(job.id, job);
  renderJob(job);
  // A new place in the queue (here or in another browser): the group is drawn again in order.
  if (before && before.priority !== job.priority) queueSoon(100);
  document.dispatchEvent(new CustomEvent("job", { detail: job })); // browse.js marks its cards
  if (before && before.status !== job.status) {
    // One toast each for downloads done and failed, counting (×N) and showing the latest.
    // Each file its own toast, named by its model and version as well: two files of one name
    // are two toasts a person can tell apart.
    if (job.status === "completed") { toast(job.model_name ? `Downloaded ${jobName(job)} (${job.filename}).` : `Downloaded ${job.filename || jobName(job)}.`); loadLibrary(); }
    if (job.status === "failed") toast(`${job.filename || jobName(job)} failed: ${job.error || "unknown error"}`, "danger", "job-failed");
  }
}

async function loadJobs() { await queueLoad(); } // queue.js: the groups, their counts and first rows

// Live feed, reconnecting by itself after the daemon restarts.
let socketDelay = 500;
function connect() {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${window.location.host}${ROOT}/ws/downloads`);
  const badge = document.getElementById("connection");
  ws.onopen = () => { socketDelay = 500; badge.replaceChildren(el("span", { class: "badge text-bg-success", id: "live" }, "live")); };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "snapshot") {
      loadJobs().catch(() => {});
      api("GET", "/api/scan").then(showScan).catch(() => {}); // a scan running since the start
      for (const job of msg.jobs) upsertJob(job);
    } else if (msg.type === "job") {
      upsertJob(msg.job);
    } else if (msg.type === "cleared") {
      queueForget(msg.ids); // queue.js: a clear here or in another browser

    } else if (msg.type === "scan") { // the library scan, however it was started
      showScan(msg.scan);
      if (!msg.scan.running) loadLibrary().catch(() => {});
    } else if (msg.type === "update") {
      toast(`New version of ${msg.update.model_name || msg.update.modelId}: ${msg.update.version_name || msg.update.new_version_id}`, "info");
      loadUpdates();
    } else if (msg.type === "summary") { // an update check ended: its one sentence (follows.js listens)
      if (msg.summary.text) toast(`Update check: ${msg.summary.text}.`, "info");
      document.dispatchEvent(new CustomEvent("check-summary", { detail: msg.summary }));
    }
  };
  ws.onclose = (event) => {
    badge.replaceChildren(el("span", { class: "badge text-bg-warning", id: "offline" }, "reconnecting…"));
    if (event.code === 4401) { window.location.assign(ROOT + "/gui"); return; }
    // 4429: too many wrong keys from this address; the reason says for how long.
    const wait = event.code === 4429 ? Number((/(\d+) s/.exec(event.reason) || [0, 60])[1]) * 1000 : 0;
    if (wait) { setTimeout(connect, wait); return; }
    setTimeout(connect, socketDelay);
    socketDelay = Math.min(5000, socketDelay * 2);
  };
}

// Add ---------------------------------------------------------------------------------------

let looked = null;

function lookupQuery(text) {
  const value = text.trim();
  if (/^\d+$/.test(value)) return `modelId=${value}`;
  return `url=${encodeURIComponent(value)}`;
}

function fillFiles() {
  const chosen = document.getElementById("add-version").value;
  const version = looked.versions.find((v, i) => String(v.id) === chosen || `v${i}` === chosen);
  const select = document.getElementById("add-file");
  select.replaceChildren(...version.files.map((f) => el("option", { value: f.id, selected: f.primary ? "selected" : null },
    `${f.name} (${bytes(f.size)}${f.type && f.type !== "Model" ? ", " + f.type : ""}${f.primary ? ", primary" : ""})`)));
  document.getElementById("lookup-image").src = version.image || "data:,";
  document.getElementById("lookup-image").classList.toggle("d-none", !version.image); // no empty frame
  document.getElementById("add-details").textContent = `${version.baseModel || ""}${version.publishedAt ? " · published " + when(version.publishedAt) : ""}`;
}

// A new look-up first takes the previous model off the screen: a failed one must not leave its
// card and a live Download button behind; it says what failed instead.
function clearLookup() {
  looked = null;
  document.getElementById("lookup-result").classList.add("d-none");
  document.getElementById("add-button").disabled = true;
  for (const id of ["lookup-name", "lookup-type", "add-details"]) document.getElementById(id).textContent = "";
  for (const id of ["add-version", "add-file"]) document.getElementById(id).replaceChildren();
  document.getElementById("lookup-image").src = "data:,";
  const error = document.getElementById("lookup-error");
  error.classList.add("d-none");
  error.textContent = "";
}

document.getElementById("lookup-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearLookup();
  const text = document.getElementById("lookup-input").value;
  let result;
  try {
    result = await api("GET", `/api/lookup?${lookupQuery(text)}`);
  } catch (err) {
    const error = document.getElementById("lookup-error");
    error.textContent = `Look-up of ${text.trim()} failed: ${err.message}`;
    error.classList.remove("d-none");
    return;
  }
  looked = result;
  document.getElementById("add-button").disabled = false;
  document.getElementById("lookup-result").classList.remove("d-none");
  document.getElementById("lookup-name").textContent = result.name;
  const hub = result.source === "huggingface";
  document.getElementById("lookup-type").textContent = hub ? `${result.type} · ${result.versions[0].name}` : `${result.type} · ${result.versions.length} version${result.versions.length === 1 ? "" : "s"}`;
  document.getElementById("add-track").disabled = hub; // updates are checked on Civitai only
  if (hub) document.getElementById("add-track").checked = false;
  document.getElementById("add-type").value = result.model_type;
  const select = document.getElementById("add-version");
  select.replaceChildren(...result.versions.map((v, i) => el("option", { value: v.id === null || v.id === undefined ? `v${i}` : v.id, selected: v.id === result.selectedVersionId || hub ? "selected" : null }, v.baseModel ? `${v.name} (${v.baseModel})` : v.name)));
  fillFiles();
});

document.getElementById("add-version").addEventListener("change", fillFiles);

document.getElementById("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!looked) return;
  const common = { model_type: document.getElementById("add-type").value.trim(), priority: Number(document.getElementById("add-priority").value || 5) };
  // A Hugging Face file is queued by its URL; a Civitai file by its version and file ids.
  const body = looked.source === "huggingface" ? { url: looked.url, ...common }
    : { track: document.getElementById("add-track").checked, modelVersionId: Number(document.getElementById("add-version").value), fileId: Number(document.getElementById("add-file").value), ...common };
  // Add stays on its tab for the next model; the toast links to the Queue.
  const job = await act(api("POST", "/api/download", body));
  if (job) {
    upsertJob(job);
    toast(job.duplicate ? `${job.filename} is already downloaded.` : `Queued ${job.filename}.`, "success", undefined, { label: "Show in Queue", run: () => bootstrap.Tab.getOrCreateInstance(document.getElementById("nav-queue")).show() });
  }
});

// A refusal for want of a folder: how to write the line so it is taken.
const NEEDS_TYPE = /model_type is required|give model_type/i;

function showBatch(result, lines) {
  const list = document.getElementById("batch-errors");
  const errors = (result && result.errors) || [];
  list.replaceChildren(...errors.map((e) => {
    const line = lines && lines[e.index];
    const detail = line && NEEDS_TYPE.test(e.detail) ? `no folder for it: write its type first, e.g. “lora ${line}” (or choose a folder for every line).` : e.detail;
    return el("li", { class: "list-group-item list-group-item-danger small batch-error" }, line ? `${line}: ${detail}` : `Entry ${e.index + 1}: ${detail}`);
  }));
  for (const job of (result && result.jobs) || []) upsertJob(job);
  if (result && result.jobs) toast(`Queued ${result.jobs.length}${errors.length ? `; ${errors.length} refused` : ""}.`, errors.length ? "warning" : "success", undefined, result.jobs.length ? { label: "Show in Queue", run: () => bootstrap.Tab.getOrCreateInstance(document.getElementById("nav-queue")).show() } : null);
  // The accepted lines leave the box; the refused ones stay, to be fixed and sent again.
  if (lines && result && (result.jobs || result.errors)) document.getElementById("batch-urls").value = errors.map((e) => lines[e.index]).join("\n");
}

async function batch(body, isForm, lines) {
  try {
    showBatch(await api("POST", "/api/batch", body, isForm), lines);
  } catch (err) {
    if (err.data && err.data.errors) showBatch(err.data, lines);
    toast(err.message, "danger");
  }
}

// One line: `<type> <url, AIR or id>` or just the URL, AIR or id (its folder from Civitai, or
// the one chosen for every line).
function batchEntry(line, type, track) {
  const typed = line.match(/^([A-Za-z0-9][A-Za-z0-9_-]{0,31})\s+(\S+)$/);
  const value = typed ? typed[2] : line;
  const folder = typed ? typed[1] : type;
  return { ...(/^\d+$/.test(value) ? { modelId: Number(value) } : { url: value }), ...(folder ? { model_type: folder } : {}), track };
}

document.getElementById("batch-file-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData();
  form.append("file", document.getElementById("batch-file").files[0]);
  batch(form, true, null);
});

document.getElementById("batch-urls-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const lines = document.getElementById("batch-urls").value.split("\n").map((l) => l.trim()).filter(Boolean);
  // No folder chosen: each line's folder is its model's type on Civitai.
  const type = document.getElementById("batch-type").value;
  const track = document.getElementById("batch-track").checked;
  batch(lines.map((line) => batchEntry(line, type, track)), false, lines);
});

// Library -----------------------------------------------------------------------------------

// loadLibrary (the completed files, their filters and actions) is in static/library.js.

async function loadUpdates() {
  const [updates, tracked] = await Promise.all([api("GET", "/api/updates"), api("GET", "/api/manifest")]);
  document.getElementById("updates-info").textContent = `${updates.last_check ? "Last check " + when(updates.last_check.finished_at) + ". " : ""}${updates.next_check ? "Next " + when(updates.next_check) + "." : "Daily checks are off."}`;
  document.getElementById("updates-list").replaceChildren(...(updates.updates.length ? updates.updates.map((u) =>
    el("li", { class: "list-group-item small update-row" }, el("b", {}, u.model_name || `model ${u.modelId}`), `: ${u.version_name || "a new version"} (was ${u.old_version_name || "an older version"}) · ${when(u.found_at)}`, updateNote(u)))
    : [el("li", { class: "list-group-item small text-body-secondary" }, "No updates found yet.")]));
  renderTracked(tracked); // static/tracked.js
}

document.getElementById("check-updates").addEventListener("click", async () => {
  const button = document.getElementById("check-updates");
  button.disabled = true;
  await act(api("POST", "/api/updates/check"), (r) => `Checked ${r.checked} model(s): ${r.updates.length} update(s)${r.errors.length ? `, ${r.errors.length} problem(s)` : ""}.`);
  button.disabled = false;
  loadUpdates().catch(() => {});
});

// A scan's report (GET /api/scan: lists) or its feed message (counts).
function showScan(report) {
  const count = (v) => (Array.isArray(v) ? v.length : v || 0);
  const progress = document.getElementById("scan-progress");
  const pct = report.bytes_total ? Math.floor((100 * report.bytes_done) / report.bytes_total) : (report.running ? 0 : 100);
  progress.classList.toggle("d-none", !report.started_at);
  progress.firstElementChild.style.width = `${pct}%`;
  const asking = `Asking Civitai about ${report.files} file(s): ${report.asked || 0} answered`;
  document.getElementById("scan-info").textContent = report.running
    ? (report.phase === "asking" ? asking : `Hashing ${report.current || "…"} (${bytes(report.bytes_done)} of ${bytes(report.bytes_total)})`)
    : (report.finished_at ? `${report.files} file(s): ${count(report.matched)} adopted, ${count(report.unknown)} not on Civitai${count(report.errors) ? `, ${count(report.errors)} error(s)` : ""}.` : "");
}

document.getElementById("scan-button").addEventListener("click", async () => {
  let report = await act(api("POST", "/api/scan"));
  while (report && report.running) {
    showScan(report);
    await new Promise((r) => setTimeout(r, 500));
    report = await act(api("GET", "/api/scan"));
  }
  if (report) { showScan(report); toast("Scan finished."); loadLibrary(); loadUpdates(); }
});

// Status ------------------------------------------------------------------------------------

async function loadMetrics() {
  const m = await api("GET", "/api/metrics");
  document.getElementById("m-queued").textContent = m.queue_length;
  document.getElementById("m-active").textContent = m.active;
  document.getElementById("m-bytes").textContent = bytes(m.bytes_downloaded);
  document.getElementById("m-speed").textContent = speed(m.average_speed_bps);
  document.getElementById("m-current").textContent = `${bytes(m.current_speed_bps)}/s`;
  document.getElementById("m-failures").textContent = m.failures;
  document.getElementById("m-check").textContent = m.last_update_check ? `${when(m.last_update_check.finished_at)}: ${m.last_update_check.updates} update(s)` : "never";
}

function drawChart() {
  const canvas = document.getElementById("speed-chart");
  // Drawn at the size it is shown (CSS pixels × the screen's density): a phone's narrow chart
  // is not a squeezed copy of a 900-pixel one, and its label stays readable.
  const shown = canvas.getBoundingClientRect();
  if (!shown.width) return; // its tab is hidden: drawn when shown
  const ratio = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(shown.width * ratio) || canvas.height !== Math.round(shown.height * ratio)) {
    canvas.width = Math.round(shown.width * ratio);
    canvas.height = Math.round(shown.height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const w = shown.width;
  const h = shown.height;
  ctx.clearRect(0, 0, w, h);
  ctx.font = `12px ${getComputedStyle(document.body).fontFamily}`;
  const max = Math.max(1, ...speedSamples);
  ctx.strokeStyle = getComputedStyle(document.body).getPropertyValue("--bs-primary") || "#0d6efd";
  ctx.lineWidth = 2;
  ctx.beginPath();
  // The last hour, right-aligned: the newest sample at the right edge.
  speedSamples.forEach((v, i) => {
    const x = w - ((speedSamples.length - 1 - i) / (SPEED_HISTORY - 1)) * w;
    const y = h - 4 - (v / max) * (h - 20);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = getComputedStyle(document.body).getPropertyValue("--bs-body-color") || "#000";
  ctx.fillText(`peak ${speed(max)}`, 6, 14);
}

// The chart plots the daemon's current rate (the "Speed now" of the status page), once a second.
async function sampleSpeed() {
  const s = await api("GET", "/api/status");
  speedSamples.push(s.current_speed_bps);
  if (speedSamples.length > SPEED_HISTORY) speedSamples.shift();
  drawChart();
}

// The daemon keeps the last hour; a page opened (or reloaded) starts from it.
async function loadSpeedHistory() {
  const history = await api("GET", "/api/status/history");
  speedSamples.splice(0, speedSamples.length, ...history.samples.map(([, bps]) => bps).slice(-SPEED_HISTORY));
  drawChart();
}

setInterval(() => {
  sampleSpeed().catch(() => {});
  for (const job of jobs.values()) if (job.status === "downloading") {
    const cell = document.querySelector(`#job-${job.id} .job-eta`);
    if (cell) cell.textContent = eta(job);
  } else if (job.status === "waiting" && job.next_attempt_at) {
    const line = document.querySelector(`#job-${job.id} .job-wait`);
    if (line) line.textContent = waitText(job);
  }
}, 1000);

// Settings ----------------------------------------------------------------------------------

// [key, label, kind], in the order people change them first (issue 27): where files go, the
// accounts, speed, notifications, then the rest; SETTING_GROUPS puts them under headings. kind
// is "secret", "int", "number", "mbps", "text", "url", "time", "bool", "lines", or choices.
const SETTING_FIELDS = [
  ["download_dir", "Download folder (set in config.json on the machine)", "machine"],
  ["layout", "Folder layout (the app that reads the download folder)", [["default", "default"], ["comfyui", "ComfyUI"], ["a1111", "A1111"], ["forge", "Forge"]]],
  ["civitai_token", "Civitai API token", "secret"],
  ["hf_token", "Hugging Face token (for gated and private repositories)", "secret"],
  ["throttle", "Speed limit, MB/s in total (0 = none)", "mbps"],
  ["workers", "Workers (downloads at once)", "int"],
  ["connections", "Connections for one large file", "int"],
  ["webhook_url", "Webhook URL", "secreturl"],
  ["webhook_secret", "Webhook secret", "secret"],
  ["update_check", "Daily update check (local time)", "time"],
  ["old_versions", "Old file after an update", ["keep", "delete", "archive"]],
  ["manifest_mode", "manifest.json on an update", ["replace", "append"]],
  ["save_metadata", "Save .civitai.info, A1111's .json and a preview beside each model", "bool"],
  ["show_nsfw", "Browse: show NSFW models", "bool"],
  ["auto_scan", "Scan the download folder at start and daily", "bool"],
  ["link_duplicates", "A download already on disk becomes a hard link", "bool"],
  ["retries", "Attempts per download", "int"],
  ["timeout", "Seconds without a byte before a connection is dead", "number"],
  ["allowed_hosts", "Hosts a direct URL may come from, one a line", "lines"],
  ["allowed_origins", "Origins that may call the API with a key (the browser extension's), one a line", "lines"],
  ["log_level", "Log level", ["DEBUG", "INFO", "WARNING", "ERROR"]],
  ["host", "Listen address", "text"],
  ["active_port", "Port (empty: a free one in 8100–8200)", "int"],
];
const SETTING_GROUPS = [
  { title: "Where files go", box: "settings-fields", keys: ["download_dir", "layout"] },
  { title: "Accounts", box: "settings-fields", keys: ["civitai_token", "hf_token"] },
  { title: "Speed", box: "settings-fields", keys: ["throttle", "workers", "connections"] },
  { title: null, box: "settings-notify-fields", keys: ["webhook_url", "webhook_secret"] }, // under Notifications
  { title: "Updates and the rest", box: "settings-rest", keys: null }, // every key not above
];
// The words a sentence about a field starts with ("Workers must be at least 1.").
const SETTING_NAMES = { workers: "Workers", connections: "Connections", throttle: "The speed limit", retries: "Attempts", timeout: "The timeout", active_port: "The port", webhook_url: "The webhook URL", download_dir: "The download folder", update_check: "The update check", allowed_hosts: "Allowed hosts", host: "The listen address" };
const SECRET_ENV = { civitai_token: "CIVITAI_TOKEN", hf_token: "HF_TOKEN" };
// config.json's bounds (settings.py), checked before sending so the sentence comes at once.
const SETTING_BOUNDS = { workers: [1, 32], connections: [1, 16], retries: [1, 100], timeout: [0, 3600, true], throttle: [0, 1e6] };

// The sentences for the values out of bounds, by key; none when every value is fine.
function settingBoundsErrors(changes) {
  const found = {};
  for (const [key, [low, high, above]] of Object.entries(SETTING_BOUNDS)) {
    if (!(key in changes)) continue;
    const name = SETTING_NAMES[key] || key;
    const value = key === "throttle" && typeof changes[key] === "number" ? changes[key] / 1e6 : changes[key];
    const whole = ["workers", "connections", "retries"].includes(key);
    if (typeof value !== "number" || !Number.isFinite(value)) found[key] = `${name} must be a number.`;
    else if (whole && !Number.isInteger(value)) found[key] = `${name} must be a whole number.`;
    else if (above ? value <= low : value < low) found[key] = above ? `${name} must be more than ${low}.` : `${name} must be at least ${low}.`;
    else if (value > high) found[key] = `${name} must be at most ${high}${key === "throttle" ? " MB/s" : ""}.`;
  }
  return found;
}

let settingsView = null;
let notifyRows = []; // {type, url, masked, chat_id, api_base, token: "" (keep) or a new one, hasToken}
let notifyDirty = false;

function pad2(n) { return String(n).padStart(2, "0"); }

function settingInput(key, kind, value, info) {
  const id = `set-${key}`;
  if (kind === "secret") {
    const state = info.source === "environment" ? `set by the ${SECRET_ENV[key] || key.toUpperCase()} environment variable` : (value.set ? "set" : "not set");
    return el("div", {},
      el("div", { class: "small mb-1" }, "Now: ", el("span", { class: `badge text-bg-${value.set ? "success" : "secondary"}`, id: `${id}-state` }, state)),
      el("div", { class: "input-group" },
        el("input", { class: "form-control", type: "password", id, autocomplete: "new-password", placeholder: value.set ? "new value (empty: keep)" : "value", disabled: info.source === "environment" ? "disabled" : null }),
        el("span", { class: "input-group-text" }, el("input", { class: "form-check-input mt-0 me-1", type: "checkbox", id: `${id}-clear`, disabled: value.set && info.source !== "environment" ? null : "disabled" }), el("label", { for: `${id}-clear`, class: "small" }, "clear"))));
  }
  if (kind === "secreturl") {
    // Shown as {set, hint}: the URL may hold a password or a token, so the page never has it.
    const state = value.set ? `set: ${value.hint}` : "not set";
    return el("div", {},
      el("div", { class: "small mb-1" }, "Now: ", el("span", { class: `badge text-bg-${value.set ? "success" : "secondary"} text-wrap`, id: `${id}-state` }, state)),
      el("div", { class: "input-group" },
        el("input", { class: "form-control", type: "url", id, autocomplete: "off", placeholder: value.set ? "new URL (empty: keep)" : "https://…" }),
        el("span", { class: "input-group-text" }, el("input", { class: "form-check-input mt-0 me-1", type: "checkbox", id: `${id}-clear`, disabled: value.set ? null : "disabled" }), el("label", { for: `${id}-clear`, class: "small" }, "clear"))));
  }
  if (kind === "machine") {
    // A filesystem path: the API key may not change it (a folder Python imports from would run
    // a download); a person on the machine edits config.json and restarts the daemon.
    const input = el("input", { class: "form-control", type: "text", id, readonly: "readonly", title: "Edit config.json on the machine, then restart the daemon" });
    input.value = value === null || value === undefined ? "" : String(value);
    return input;
  }
  if (Array.isArray(kind)) {
    // A choice is its value, or [value, label].
    const pairs = kind.map((c) => (Array.isArray(c) ? c : [c, c]));
    return el("select", { class: "form-select", id }, ...pairs.map(([c, label]) => el("option", { value: c, selected: c === value ? "selected" : null }, label)));
  }
  if (kind === "bool") {
    return el("div", { class: "form-check form-switch" }, el("input", { class: "form-check-input", type: "checkbox", id, checked: value ? "checked" : null }));
  }
  if (kind === "time") {
    return el("div", { class: "d-flex gap-2 align-items-center" },
      el("input", { class: "form-check-input mt-0", type: "checkbox", id: `${id}-enabled`, checked: value.enabled ? "checked" : null, "aria-label": "daily check on" }),
      el("label", { class: "small", for: `${id}-enabled` }, "on, at"),
      el("input", { class: "form-control", type: "time", id, value: `${pad2(value.hour)}:${pad2(value.minute)}` }));
  }
  if (kind === "lines") return el("textarea", { class: "form-control", id, rows: 3 }, (value || []).join("\n"));
  if (kind === "mbps") { // bytes/s in config.json, MB/s on screen
    const input = el("input", { class: "form-control", type: "number", id, step: "any", min: "0" });
    input.value = value ? String(Math.round(value / 1e5) / 10) : "0";
    return input;
  }
  const type = kind === "int" || kind === "number" ? "number" : "text";
  const input = el("input", { class: "form-control", type, id, step: kind === "number" ? "any" : null });
  input.value = value === null || value === undefined ? "" : String(value);
  return input;
}

function renderSettings(view) {
  settingsView = view;
  const row = ([key, label, kind]) => {
    const info = view.keys[key];
    const note = [];
    if (info.applies !== "live") note.push(el("span", { class: "badge text-bg-warning ms-2 applies-later", title: info.why || "" }, "applies at next start"));
    if (info.next_start !== null && info.next_start !== undefined) note.push(el("span", { class: "small text-warning-emphasis ms-2" }, `next start: ${JSON.stringify(info.next_start)}`));
    return el("div", { class: "mb-3", id: `set-${key}-row` },
      el("label", { class: "form-label small fw-semibold", for: `set-${key}` }, label, ...note),
      settingInput(key, kind, view.settings[key], info),
      el("div", { class: "invalid-feedback d-block", id: `set-${key}-error` }));
  };
  const placed = new Set(SETTING_GROUPS.flatMap((g) => g.keys || []));
  for (const id of ["settings-fields", "settings-notify-fields", "settings-rest"]) document.getElementById(id).replaceChildren();
  for (const group of SETTING_GROUPS) {
    const fields = SETTING_FIELDS.filter(([key]) => (group.keys ? group.keys.includes(key) : !placed.has(key)) && view.keys[key]);
    const target = document.getElementById(group.box);
    if (group.title) target.append(el("h3", { class: "h6 mt-3" }, group.title));
    target.append(...fields.map(row));
  }
  notifyRows = view.settings.notify.map((t) => ({ type: t.type, url: t.url && typeof t.url === "object" ? "" : t.url || "", masked: t.url && typeof t.url === "object" && t.url.set ? t.url : null, chat_id: t.chat_id === null || t.chat_id === undefined ? "" : String(t.chat_id), api_base: t.api_base, token: "", hasToken: Boolean(t.bot_token && t.bot_token.set) }));
  notifyDirty = false;
  renderNotify();
  const restart = view.restart_needed.length ? ` Waiting for a restart: ${view.restart_needed.join(", ")}.` : "";
  document.getElementById("settings-info").textContent = `Saved into ${view.config_path} and applied at once, except where it says "applies at next start".${restart}${view.problem ? " config.json on disk has a problem: " + view.problem : ""}`;
  clearSettingErrors();
}

function renderNotify() {
  const list = document.getElementById("settings-notify");
  const edited = (row, field) => (event) => { row[field] = event.target.value; notifyDirty = true; };
  list.replaceChildren(...notifyRows.map((row, i) => el("li", { class: "list-group-item d-flex gap-2 align-items-center notify-row" },
    el("span", { class: "badge text-bg-info" }, row.type),
    ...(row.type === "discord"
      ? [el("input", { class: "form-control form-control-sm notify-url", placeholder: row.masked ? `set: ${row.masked.hint} (empty: keep)` : "https://discord.com/api/webhooks/…", value: row.url, oninput: edited(row, "url") })]
      : [el("input", { class: "form-control form-control-sm notify-chat", placeholder: "chat id", value: row.chat_id, oninput: edited(row, "chat_id") }),
        el("input", { class: "form-control form-control-sm notify-token", type: "password", autocomplete: "new-password", placeholder: row.hasToken ? "bot token set (empty: keep)" : "bot token", oninput: edited(row, "token") })]),
    el("button", { class: "btn btn-outline-danger btn-sm notify-remove", type: "button", onclick: () => { notifyRows.splice(i, 1); notifyDirty = true; renderNotify(); } }, "Remove"))));
  if (!notifyRows.length) list.append(el("li", { class: "list-group-item small text-body-secondary" }, "No Discord or Telegram targets."));
}

function settingValue(key, kind) {
  const input = document.getElementById(`set-${key}`);
  if (kind === "secret") {
    if (document.getElementById(`set-${key}-clear`).checked) return null;
    return input.value ? input.value : undefined; // undefined: unchanged
  }
  if (kind === "secreturl") {
    if (document.getElementById(`set-${key}-clear`).checked) return null;
    return input.value.trim() ? input.value.trim() : undefined; // undefined: unchanged
  }
  if (kind === "machine") return undefined; // never sent
  if (kind === "bool") return input.checked;
  if (kind === "lines") return input.value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
  if (kind === "time") {
    const [hour, minute] = input.value.split(":").map(Number);
    return { ...settingsView.settings.update_check, enabled: document.getElementById(`set-${key}-enabled`).checked, hour, minute };
  }
  if (kind === "int" || kind === "number") {
    const text = input.value.trim();
    if (text === "") return key === "active_port" ? null : text; // the daemon names what is wrong
    return Number(text);
  }
  if (kind === "url") return input.value.trim() || null;
  if (kind === "mbps") {
    const text = input.value.trim();
    const mb = Number(text === "" ? "0" : text);
    if (!Number.isFinite(mb)) return text; // the daemon names what is wrong
    const bps = Math.round(mb * 1e6);
    // Unchanged when it shows the saved value rounded (1.23456 MB/s is shown as 1.2).
    return settingsView.settings[key] && Math.round(settingsView.settings[key] / 1e5) / 10 === mb ? settingsView.settings[key] : bps;
  }
  return input.value;
}

function settingsChanges() {
  const changes = {};
  for (const [key, , kind] of SETTING_FIELDS) {
    const value = settingValue(key, kind);
    if (value === undefined) continue;
    if (kind !== "secret" && kind !== "secreturl" && JSON.stringify(value) === JSON.stringify(settingsView.settings[key])) continue;
    changes[key] = value;
  }
  if (notifyDirty) {
    changes.notify = notifyRows.map((row) => {
      // A URL left empty keeps the configured one: sent back as it was shown ({set, hint}).
      if (row.type === "discord") return { type: "discord", url: row.url.trim() || row.masked || "" };
      const chat = row.chat_id.trim();
      const target = { type: "telegram", chat_id: /^-?\d+$/.test(chat) ? Number(chat) : chat, api_base: row.api_base || "https://api.telegram.org" };
      if (row.token) target.bot_token = row.token; // else the daemon keeps this chat's token
      return target;
    });
  }
  return changes;
}

function clearSettingErrors() {
  for (const node of document.querySelectorAll("#tab-settings .invalid-feedback")) node.textContent = "";
  for (const node of document.querySelectorAll("#tab-settings .is-invalid")) node.classList.remove("is-invalid");
  document.getElementById("settings-error").classList.add("d-none");
}

// The daemon's line ("key 'workers' has value 0: Input should be greater than or equal to 1
// (…)") as a sentence about the field: "Workers must be at least 1."
function settingSentence(key, line) {
  const field = SETTING_FIELDS.find(([k]) => k === key);
  const name = SETTING_NAMES[key] || (field ? field[1].split(/[,(]/)[0].trim() : key);
  const why = line.replace(/^.*?key '[^']*' has value .*?: /, "").replace(/ \([^()]*\)$/, "");
  const rules = [
    [/greater than or equal to (\S+)/i, (n) => `must be at least ${n}`],
    [/less than or equal to (\S+)/i, (n) => `must be at most ${n}`],
    [/greater than (\S+)/i, (n) => `must be more than ${n}`],
    [/less than (\S+)/i, (n) => `must be less than ${n}`],
    [/valid integer/i, () => "must be a whole number"],
    [/valid number/i, () => "must be a number"],
    [/valid boolean/i, () => "must be on or off"],
    [/^one of (.*)$/i, (list) => `must be one of ${list.replace(/'/g, "")}`],
  ];
  for (const [pattern, say] of rules) {
    const m = why.match(pattern);
    if (m) return `${name} ${say(m[1])}.`;
  }
  const rest = why.replace(/^Input should be/i, "must be").replace(/^Value error, /i, "");
  return `${name}: ${rest.replace(/\.$/, "")}.`;
}

// Each line of the daemon's answer goes next to the field it names ("key 'workers' has value …").
function showSettingErrors(detail) {
  const keys = SETTING_FIELDS.map(([key]) => key).concat(["notify"]);
  const general = [];
  for (const line of detail.split("\n")) {
    const named = line.match(/key '([a-z_]+)/);
    const key = named ? named[1] : keys.find((k) => line.includes(k));
    const box = key && document.getElementById(`set-${key}-error`);
    if (!box) { general.push(line); continue; }
    const sentence = settingSentence(key, line);
    box.textContent = box.textContent ? `${box.textContent} ${sentence}` : sentence;
    const input = document.getElementById(`set-${key}`);
    if (input) input.classList.add("is-invalid");
  }
  const alert = document.getElementById("settings-error");
  alert.textContent = general.join(" ");
  alert.classList.toggle("d-none", !general.length);
}

async function loadSettings() { renderSettings(await api("GET", "/api/settings")); }

if (isAdmin) {
  document.getElementById("nav-settings").addEventListener("shown.bs.tab", () => loadSettings().catch((e) => toast(e.message, "danger")));
  document.getElementById("notify-add-discord").addEventListener("click", () => { notifyRows.push({ type: "discord", url: "", chat_id: "", token: "" }); notifyDirty = true; renderNotify(); });
  document.getElementById("notify-add-telegram").addEventListener("click", () => { notifyRows.push({ type: "telegram", url: "", chat_id: "", token: "", hasToken: false }); notifyDirty = true; renderNotify(); });
  document.getElementById("settings-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clearSettingErrors();
    const changes = settingsChanges();
    if (!Object.keys(changes).length) { toast("Nothing changed."); return; }
    const wrong = settingBoundsErrors(changes);
    if (Object.keys(wrong).length) {
      for (const [key, sentence] of Object.entries(wrong)) {
        document.getElementById(`set-${key}-error`).textContent = sentence;
        document.getElementById(`set-${key}`).classList.add("is-invalid");
      }
      toast("Not saved: see the fields marked in red.", "danger");
      return;
    }
    const button = document.getElementById("settings-save");
    button.disabled = true;
    try {
      const view = await api("PATCH", "/api/settings", changes);
      renderSettings(view);
      const later = view.restart_needed.length ? ` At next start: ${view.restart_needed.join(", ")}.` : "";
      toast(`Saved.${view.changed.length ? " Applied now: " + view.changed.join(", ") + "." : ""}${later}`);
      // relayout.js: files placed under the old layout are offered a move (never moved silently).
      if (view.changed.includes("layout") || view.changed.includes("folders")) relayoutCheck().catch((e) => toast(e.message, "danger"));
    } catch (err) {
      showSettingErrors(err.message);
      toast("Not saved: see the fields marked in red.", "danger");
    } finally {
      button.disabled = false;
    }
  });
}

// Start ---------------------------------------------------------------------------------------

if (!isAdmin) for (const node of document.querySelectorAll(".admin-only")) node.classList.add("d-none");
document.getElementById("nav-library").addEventListener("shown.bs.tab", () => { loadLibrary().catch((e) => toast(e.message, "danger")); loadUpdates().catch((e) => toast(e.message, "danger")); });
document.getElementById("nav-status").addEventListener("shown.bs.tab", () => { loadMetrics().catch((e) => toast(e.message, "danger")); loadSpeedHistory().catch((e) => toast(e.message, "danger")); });
setInterval(() => { if (document.getElementById("tab-status").classList.contains("active")) loadMetrics().catch(() => {}); }, 3000);
document.addEventListener("DOMContentLoaded", connect); // once queue.js and the others have run

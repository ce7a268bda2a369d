// "Fetch missing models": the open workflow's models, which of them ComfyUI lacks, fetched by the
// daemon into the folders ComfyUI reads. Only the stable extension API: app.registerExtension
// (commands, menuCommands, settings, setup), app.extensionManager.registerSidebarTab, toast and
// command.execute (ComfyUI_frontend, src/types/comfy.ts `ComfyExtension`, src/types/extensionTypes.ts
// `ExtensionManager`). The daemon's key never reaches this page: every call goes to this package's
// routes on ComfyUI's own server (/civitai_daemon/…), which add it.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const TAB_ID = "civitai-daemon-fetch";
const COMMAND = "CivitaiDaemon.FetchMissingModels";
const POLL_SETTING = "CivitaiDaemon.PollMilliseconds";
const DONE = new Set(["completed"]);
const ENDED = new Set(["failed", "cancelled"]);

const state = { rows: [], listed: new Set(), jobs: {}, message: "", busy: false, root: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function call(path, options = {}) {
  const response = await api.fetchApi(`/civitai_daemon${path}`, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || `ComfyUI answered ${response.status} for ${path}.`);
  return data;
}

function postWorkflow(workflow, dryRun) {
  return call(`/workflow${dryRun ? "?dry_run=true" : ""}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(workflow),
  });
}

// Every file name a loader offers: the combo lists of /object_info (server.py `node_info`: each
// input is [options, config], and a loader's options are folder_paths.get_filename_list(folder)).
async function listedInComfy() {
  const response = await api.fetchApi("/object_info");
  const info = await response.json();
  const names = new Set();
  for (const node of Object.values(info)) {
    for (const group of ["required", "optional"]) {
      for (const spec of Object.values((node.input && node.input[group]) || {})) {
        if (Array.isArray(spec) && Array.isArray(spec[0])) spec[0].forEach((n) => names.add(n));
      }
    }
  }
  return names;
}

function stateOf(row) {
  if (state.listed.has(row.name)) return "listed in ComfyUI";
  const job = row.job && state.jobs[row.job];
  if (job) {
    if (DONE.has(job.status)) return "verified, refresh to list";
    if (ENDED.has(job.status)) return `${job.status}: ${job.error || ""}`.trim();
    const pct = job.bytes_total ? ` ${Math.floor((100 * job.bytes_done) / job.bytes_total)}%` : "";
    return `${job.status}${pct}`;
  }
  return { present: "on disk, refresh to list", to_queue: "missing", queued: "queued",
    no_source: "missing, no URL", refused: `refused: ${row.detail || ""}` }[row.status] || row.status;
}

function render() {
  const root = state.root;
  if (!root) return;
  const missing = state.rows.filter((r) => !state.listed.has(r.name));
  const table = el("table", { class: "civitai-daemon-models", style: "width:100%;font-size:0.85em" });
  for (const row of state.rows) {
    const cell = el("td", { "data-state": "" }, stateOf(row));
    const line = el("tr", { "data-model": row.name }, el("td", {}, row.name), el("td", {}, row.folder || row.directory || ""), cell);
    table.append(line);
    if (row.status === "no_source" && !state.listed.has(row.name)) {
      table.append(el("tr", {}, el("td", { colspan: "3" },
        el("button", { onclick: () => searchFor(row) }, `Download into ComfyUI's folders: search Civitai and the Hugging Face Hub for ${row.name}`),
        el("div", { "data-candidates": row.name }))));
    }
  }
  const fetchable = missing.some((r) => ["to_queue", "present"].includes(r.status));
  root.replaceChildren(
    el("div", { class: "civitai-daemon-panel", style: "padding:0.5em;display:flex;flex-direction:column;gap:0.5em" },
      el("div", { style: "display:flex;gap:0.5em" },
        el("button", { onclick: check }, "Check this workflow"),
        el("button", { onclick: fetchMissing, ...(fetchable && !state.busy ? {} : { disabled: "" }) }, "Fetch missing models")),
      el("div", { class: "civitai-daemon-message" }, state.message),
      table));
}

async function check() {
  try {
    const [answer, listed] = await Promise.all([postWorkflow(app.graph.serialize(), true), listedInComfy()]);
    state.rows = answer.models;
    state.listed = listed;
    const missing = state.rows.filter((r) => !listed.has(r.name)).length;
    state.message = `${state.rows.length} model(s), ${missing} missing in ComfyUI.`;
  } catch (err) {
    state.message = err.message;
  }
  render();
}

// One queueing step, then its jobs followed until they end; an error of either is the message.
async function queueAndFollow(queue) {
  state.busy = true;
  try {
    await queue();
    render();
    await follow();
  } catch (err) {
    state.message = err.message;
  }
  state.busy = false;
  render();
}

function fetchMissing() {
  return queueAndFollow(async () => {
    const answer = await postWorkflow(app.graph.serialize(), false);
    state.rows = answer.models;
    state.message = `${answer.summary.new_jobs} new job(s) at the daemon.`;
  });
}

async function follow() {
  const pause = () => new Promise((r) => setTimeout(r, app.extensionManager.setting.get(POLL_SETTING) || 1000));
  for (;;) {
    const ids = state.rows.filter((r) => r.job && r.status === "queued").map((r) => r.job);
    if (ids.length) {
      const answer = await call(`/jobs?ids=${ids.join(",")}`);
      for (const job of answer.jobs) state.jobs[job.id] = job;
    }
    render();
    const open = ids.filter((id) => !DONE.has(state.jobs[id]?.status) && !ENDED.has(state.jobs[id]?.status));
    if (!open.length) break;
    await pause();
  }
  // The loaders list a file only after ComfyUI reads its folders again (the same command as
  // the "Refresh Node Definitions" key, R).
  await app.extensionManager.command.execute("Comfy.RefreshNodeDefinitions");
  state.listed = await listedInComfy();
  const still = state.rows.filter((r) => !state.listed.has(r.name)).length;
  state.message = still ? `${still} model(s) still missing in ComfyUI.` : "Every model is listed in ComfyUI.";
  app.extensionManager.toast.add({ severity: still ? "warn" : "success", summary: "Fetch missing models", detail: state.message, life: 4000 });
}

const SOURCES = { civitai: "Civitai", huggingface: "Hugging Face" };

function sizeOf(bytes) {
  return typeof bytes === "number" ? ` · ${(bytes / 1e6).toFixed(1)} MB` : "";
}

// Each answer as one file to pick: Civitai's models (every file of each version, as the daemon
// found them by the words of the name) and the Hub's files of exactly that name.
function choicesOf(answer) {
  const choices = [];
  for (const item of answer.items) {
    if (item.source === "huggingface") {
      const file = item.path.split("/").pop();
      choices.push({ source: item.source, file, url: item.url, sha256: item.sha256,
        label: `${item.repo} · ${item.path}${sizeOf(item.size)}${item.gated ? " · gated: needs hf_token" : ""}` });
      continue;
    }
    for (const version of item.versions) {
      for (const f of version.files) {
        choices.push({ source: "civitai", file: f.name,
          url: `https://civitai.com/api/download/models/${version.id}?fileId=${f.id}`,
          label: `${item.name} · ${version.name} · ${f.name}${sizeOf(f.size)}` });
      }
    }
  }
  return choices;
}

async function searchFor(row) {
  const box = state.root.querySelector(`[data-candidates="${CSS.escape(row.name)}"]`);
  box.textContent = "Searching Civitai and the Hugging Face Hub…";
  try {
    const answer = await call(`/search?name=${encodeURIComponent(row.name)}`);
    const lines = choicesOf(answer).map((c) => el("div", { "data-candidate": c.file, "data-source": c.source },
      `${SOURCES[c.source]}: ${c.label} `,
      el("button", { onclick: () => choose(row, c) }, "Use this")));
    for (const gap of answer.unavailable) {
      lines.push(el("div", { "data-unavailable": gap.source }, `${SOURCES[gap.source] || gap.source} could not be searched: ${gap.detail}`));
    }
    box.replaceChildren(...(lines.length ? lines : ["Neither Civitai nor the Hugging Face Hub has a match for this file name."]));
  } catch (err) {
    box.textContent = err.message;
  }
}

// The chosen file is queued as the workflow names it, in the workflow's folder (its `directory`
// gives the model type), checked against the SHA256 its source publishes (a Hub file: the one
// the Hub listed, at the commit it was listed at).
function choose(row, choice) {
  const model = { name: row.name, directory: row.directory, url: choice.url };
  if (choice.sha256) Object.assign(model, { hash: choice.sha256, hash_type: "sha256" });
  return queueAndFollow(async () => {
    const answer = await postWorkflow({ nodes: [], models: [model] }, false);
    const queued = answer.models[0];
    if (!queued || (!queued.job && queued.status !== "present")) throw new Error((queued && queued.detail) || `${row.name} was not queued.`);
    Object.assign(row, { status: queued.status, job: queued.job, folder: queued.folder });
  });
}

// Plain CSS with ComfyUI's palette variables (with fallbacks): no reliance on its components' markup.
const STYLE = `
.civitai-daemon-panel button { background: var(--comfy-input-bg, #222); color: var(--input-text, #ddd);
  border: 1px solid var(--border-color, #444); border-radius: 4px; padding: 4px 8px; cursor: pointer; }
.civitai-daemon-panel button:disabled { opacity: 0.5; cursor: default; }
.civitai-daemon-models td { padding: 4px; border-bottom: 1px solid var(--border-color, #444);
  word-break: break-word; vertical-align: top; }`;

app.registerExtension({
  name: "CivitaiDaemon.FetchMissingModels",
  settings: [
    { id: POLL_SETTING, name: "Civitai daemon: poll the download progress every (ms)", type: "number", defaultValue: 1000 },
  ],
  commands: [
    {
      id: COMMAND,
      label: "Fetch missing models",
      icon: "pi pi-download",
      function: async () => {
        state.busy = true; // the tab's own check on opening must not overwrite this run's rows
        try {
          // Every sidebar tab has this command (ComfyUI_frontend, src/stores/workspace/
          // sidebarTabStore.ts `registerSidebarTab`, since 1.3.9); it toggles, so only when closed.
          if (!state.root || !state.root.isConnected) await app.extensionManager.command.execute(`Workspace.ToggleSidebarTab.${TAB_ID}`);
          await check();
          if (state.rows.some((r) => !state.listed.has(r.name) && r.status === "to_queue")) await fetchMissing();
          else app.extensionManager.toast.add({ severity: "info", summary: "Fetch missing models", detail: state.message, life: 4000 });
        } finally {
          state.busy = false;
          render();
        }
      },
    },
  ],
  menuCommands: [{ path: ["Extensions"], commands: [COMMAND] }],
  setup() {
    document.head.append(el("style", {}, STYLE));
    app.extensionManager.registerSidebarTab({
      id: TAB_ID,
      icon: "pi pi-download",
      title: "Fetch missing models",
      label: "Fetch missing models",
      tooltip: "Fetch missing models",
      type: "custom",
      render: (root) => {
        state.root = root;
        render();
        if (!state.busy) check();
      },
    });
  },
});

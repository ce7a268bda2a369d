// The popup (also opened in a tab as the chooser, with ?url=): the page's model and a button that
// sends it, a version chooser when the page names only the model, and the daemon's queue.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
let pageUrl = params.get("url");
let tabId;
let model = null;

function say(text, error = false) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "";
}

function label(version) {
  return `${version.name || version.id}${version.baseModel ? ` (${version.baseModel})` : ""}`;
}

async function showPage() {
  if (!pageUrl) {
    const [tab] = await ext.tabs.query({ active: true, currentWindow: true });
    pageUrl = tab && tab.url;
    tabId = tab && tab.id;
  }
  model = modelOfUrl(pageUrl || "");
  if (!model) { $("page-none").hidden = false; return; }
  $("page-model").hidden = false;
  if (model.site === "hf") {
    $("model-name").textContent = "A file on the Hugging Face Hub";
    $("model-version").textContent = decodeURIComponent(new URL(model.url).pathname);
    // Off Civitai no type says where a file belongs: the person chooses the folder.
    $("folder-label").hidden = false;
    const folder = $("folder");
    folder.hidden = false;
    const prompt = new Option("Choose a folder…", "");
    prompt.disabled = true;
    folder.replaceChildren(prompt, ...FOLDERS.map((f) => new Option(f, f)));
    folder.value = "";
    folder.addEventListener("change", () => { $("send").disabled = !folder.value; });
    return;
  }
  const query = new URLSearchParams();
  if (model.modelId) query.set("modelId", model.modelId);
  if (model.versionId) query.set("modelVersionId", model.versionId);
  let looked;
  try {
    looked = await daemonCall("GET", `/api/lookup?${query}`); // the daemon's look-up: its versions
  } catch (err) {
    say(err.message, true);
    return;
  }
  $("model-name").textContent = `${looked.name || `Model ${looked.modelId}`} · ${looked.type || ""}`;
  if (model.versionId) {
    const version = looked.versions.find((v) => v.id === model.versionId);
    $("model-version").textContent = `Version: ${version ? label(version) : model.versionId}`;
    $("send").disabled = false;
    return;
  }
  // The page names only the model: which version is the person's choice, not ours.
  $("chooser-label").hidden = false;
  const chooser = $("chooser");
  chooser.hidden = false;
  const prompt = new Option("Choose a version…", "");
  prompt.disabled = true;
  chooser.replaceChildren(prompt, ...looked.versions.map((v) => new Option(`${label(v)}${v.id === looked.selectedVersionId ? " · newest" : ""}`, v.id)));
  chooser.value = "";
  chooser.addEventListener("change", () => { $("send").disabled = !chooser.value; });
}

$("send").addEventListener("click", async () => {
  $("send").disabled = true;
  const versionId = model.site === "civitai" ? Number($("chooser").value) || model.versionId : undefined;
  const modelType = model.site === "hf" ? $("folder").value : undefined;
  const result = await ext.runtime.sendMessage({ type: "send", url: pageUrl, versionId, modelType, tabId });
  if (result.error) { say(result.error, true); $("send").disabled = false; return; }
  say(`Queued ${result.job.filename || result.job.url || `job ${result.job.id}`} (job ${result.job.id}).`);
  refreshQueue();
});

function percent(job) {
  if (job.status === "completed") return 100;
  return job.bytes_total ? Math.floor((100 * (job.bytes_done || 0)) / job.bytes_total) : 0;
}

async function refreshQueue() {
  let answer;
  try {
    answer = await daemonCall("GET", "/api/jobs?limit=10");
  } catch (err) {
    if (!$("message").textContent) say(err.message, true);
    return;
  }
  $("queue-empty").hidden = answer.jobs.length > 0;
  $("queue").replaceChildren(...answer.jobs.map((job) => {
    const item = document.createElement("li");
    item.className = "job";
    item.dataset.id = job.id;
    const status = Object.assign(document.createElement("span"), { className: "status", textContent: `${job.status} · ${percent(job)}%` });
    const file = Object.assign(document.createElement("div"), { className: "file", textContent: job.filename || job.url || `job ${job.id}` });
    const bar = Object.assign(document.createElement("progress"), { max: 100, value: percent(job) });
    item.append(status, file, bar);
    return item;
  }));
}

(async () => {
  const { daemonUrl } = await loadSettings();
  $("open-gui").href = daemonUrl ? `${daemonUrl}/gui` : "#";
  $("open-options").addEventListener("click", (event) => { event.preventDefault(); ext.runtime.openOptionsPage(); });
  await showPage();
  await refreshQueue();
  setInterval(refreshQueue, 1000);
})();

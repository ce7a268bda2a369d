// The Workflow tab (admins only): a ComfyUI workflow .json, dropped or picked, is previewed
// first, always (POST /api/workflow?dry_run=true): the table shows each model it needs (present,
// queued, to queue, no source or refused) with its folder and size, a checkbox on each missing
// one (ticked), and "Download N models (X GB)" queues the ticked ones; for one with no source,
// an input to paste a URL queues it.
// Loaded after client.js, whose helpers (api, el, toast) it uses.
"use strict";

const WORKFLOW_BADGES = {
  present: "text-bg-success", queued: "text-bg-primary", to_queue: "text-bg-info",
  no_source: "text-bg-warning", refused: "text-bg-danger",
};
const WORKFLOW_LABELS = { present: "present", queued: "queued", to_queue: "to queue", no_source: "no source", refused: "refused" };

function workflowNode(m) {
  return m.nodes.map((n) => `${n.title || n.type} #${n.id}${n.subgraph ? ` (in ${n.subgraph})` : ""}`).join(", ") || "top-level models";
}

// For a model with no source: paste a URL, queue it into the model's folder. It goes back to
// POST /api/workflow as that one model (its name with any subfolder, its directory, the
// workflow's SHA256), so the job lands where the workflow names it and is verified like the rest.
function workflowPasteForm(m) {
  const input = el("input", { class: "form-control form-control-sm", type: "url", placeholder: "Paste a URL to queue it", "aria-label": `URL for ${m.name}`, required: "" });
  const form = el("form", { class: "d-flex gap-1 workflow-paste" }, input,
    el("button", { class: "btn btn-sm btn-primary", type: "submit" }, "Queue"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const model = { name: m.name, directory: m.directory, url: input.value.trim() };
      if (m.sha256) Object.assign(model, { hash: m.sha256, hash_type: "SHA256" });
      const answer = await api("POST", "/api/workflow", { nodes: [], models: [model] });
      const row = answer.models[0];
      if (!row || (!row.job && row.status !== "present")) throw new Error((row && row.detail) || `${m.name} was not queued.`);
      const how = row.job ? `${row.status} as job ${row.job}` : row.status;
      form.replaceWith(el("span", {}, `${how} → ${row.path || m.folder}`));
      toast(`Queued ${m.name}`);
    } catch (err) { toast(err.message, "danger"); }
  });
  return form;
}

let workflowRows = []; // the preview's models

function workflowShow(data) {
  workflowRows = data.models;
  const table = document.getElementById("workflow-table");
  const body = table.querySelector("tbody");
  body.replaceChildren(...data.models.map((m, i) => el("tr", { "data-status": m.status, class: "workflow-row" },
    el("td", { "data-label": "Download" }, m.status === "to_queue" ? el("input", { type: "checkbox", class: "form-check-input workflow-pick", checked: "checked", "data-index": i, "aria-label": `Download ${m.name}`, onchange: workflowCount }) : ""),
    el("td", { class: "text-break workflow-name" }, m.name),
    el("td", { "data-label": "Folder" }, m.folder || m.directory),
    el("td", { class: "text-nowrap workflow-size", "data-label": "Size" }, m.size === null || m.size === undefined ? "–" : bytes(m.size)),
    el("td", { "data-label": "Status" }, el("span", { class: `badge ${WORKFLOW_BADGES[m.status] || "text-bg-secondary"}` }, WORKFLOW_LABELS[m.status] || m.status)),
    el("td", { class: "small", "data-label": "Node" }, workflowNode(m)),
    el("td", { class: "small text-break", "data-label": "Where" },
      m.status === "no_source" ? workflowPasteForm(m) : (m.job ? `job ${m.job} → ${m.path || ""}` : (m.path || m.detail || ""))))));
  table.classList.toggle("d-none", data.models.length === 0);
  const n = data.summary;
  const parts = ["present", "queued", "to_queue", "no_source", "refused"].filter((k) => n[k]).map((k) => `${n[k]} ${WORKFLOW_LABELS[k]}`);
  document.getElementById("workflow-summary").textContent =
    `${n.models} model${n.models === 1 ? "" : "s"}: ${parts.join(", ") || "none"}${data.dry_run ? "" : `; ${n.new_jobs} new download${n.new_jobs === 1 ? "" : "s"}`}.`;
  workflowCount();
}

// The button says what it will do: how many models, and their total size where known.
function workflowCount() {
  const picked = [...document.querySelectorAll(".workflow-pick:checked")].map((box) => workflowRows[Number(box.dataset.index)]);
  const button = document.getElementById("workflow-download");
  const total = picked.reduce((n, m) => n + (m.size || 0), 0);
  const unknown = picked.some((m) => m.size === null || m.size === undefined);
  button.classList.toggle("d-none", !document.querySelector(".workflow-pick"));
  button.disabled = picked.length === 0;
  const size = total ? ` (${bytes(total)}${unknown ? " and more" : ""})` : "";
  button.textContent = `Download ${picked.length} model${picked.length === 1 ? "" : "s"}${size}`;
}

async function workflowDownload() {
  const picked = [...document.querySelectorAll(".workflow-pick:checked")].map((box) => workflowRows[Number(box.dataset.index)]);
  if (!picked.length) return;
  const models = picked.map((m) => ({ name: m.name, directory: m.directory, url: m.url, ...(m.sha256 ? { hash: m.sha256, hash_type: "SHA256" } : {}) }));
  const button = document.getElementById("workflow-download");
  button.disabled = true;
  try {
    const answer = await api("POST", "/api/workflow", { nodes: [], models });
    const byName = new Map(answer.models.map((m) => [m.name, m]));
    // The preview's rows, the downloaded ones replaced by the daemon's answer.
    workflowShow({ ...answer, dry_run: false, models: workflowRows.map((m) => byName.get(m.name) || m) });
    toast(`Queued ${answer.summary.new_jobs} model${answer.summary.new_jobs === 1 ? "" : "s"}.`, "success", undefined, { label: "Show in Queue", run: () => bootstrap.Tab.getOrCreateInstance(document.getElementById("nav-queue")).show() });
  } catch (err) {
    toast(err.message, "danger");
    button.disabled = false;
  }
}

async function workflowSend(file) {
  const error = document.getElementById("workflow-error");
  error.classList.add("d-none");
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    workflowShow(await api("POST", "/api/workflow?dry_run=true", form, true)); // a preview, always
  } catch (err) {
    error.textContent = err.message;
    error.classList.remove("d-none");
  }
}

(function workflowInit() {
  const drop = document.getElementById("workflow-drop");
  const input = document.getElementById("workflow-file");
  if (!drop || !input) return;
  document.getElementById("workflow-download").addEventListener("click", workflowDownload);
  input.addEventListener("change", () => { if (input.files.length) workflowSend(input.files[0]); });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("dragging"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) workflowSend(file);
  });
})();

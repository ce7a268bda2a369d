// The Workflow tab (admins only): a ComfyUI workflow .json, dropped or picked, goes to
// POST /api/workflow; the table shows each model it needs (present, queued, to queue, no source
// or refused) and, for one with no source, an input to paste a URL that queues it.
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

function workflowShow(data) {
  const table = document.getElementById("workflow-table");
  const body = table.querySelector("tbody");
  body.replaceChildren(...data.models.map((m) => el("tr", { "data-status": m.status },
    el("td", { class: "text-break" }, m.name),
    el("td", {}, m.folder || m.directory),
    el("td", {}, el("span", { class: `badge ${WORKFLOW_BADGES[m.status] || "text-bg-secondary"}` }, WORKFLOW_LABELS[m.status] || m.status)),
    el("td", { class: "small" }, workflowNode(m)),
    el("td", { class: "small text-break" },
      m.status === "no_source" ? workflowPasteForm(m) : (m.job ? `job ${m.job} → ${m.path || ""}` : (m.path || m.detail || ""))))));
  table.classList.toggle("d-none", data.models.length === 0);
  const n = data.summary;
  const parts = ["present", "queued", "to_queue", "no_source", "refused"].filter((k) => n[k]).map((k) => `${n[k]} ${WORKFLOW_LABELS[k]}`);
  document.getElementById("workflow-summary").textContent =
    `${n.models} model(s): ${parts.join(", ") || "none"}; ${n.new_jobs} new job(s)${data.dry_run ? " (preview: nothing queued)" : ""}.`;
}

async function workflowSend(file) {
  const error = document.getElementById("workflow-error");
  error.classList.add("d-none");
  const form = new FormData();
  form.append("file", file, file.name);
  const dry = document.getElementById("workflow-dry-run").checked ? "?dry_run=true" : "";
  try {
    workflowShow(await api("POST", `/api/workflow${dry}`, form, true));
  } catch (err) {
    error.textContent = err.message;
    error.classList.remove("d-none");
  }
}

(function workflowInit() {
  const drop = document.getElementById("workflow-drop");
  const input = document.getElementById("workflow-file");
  if (!drop || !input) return;
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

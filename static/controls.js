// A job row's controls (issue 15, issue 27): pause / resume, a place in the queue (top, up, down,
// bottom, or dragged), a cancel that asks first (a Bootstrap modal), Retry only where the daemon
// says a retry can help, and a checkbox to act on several rows at once.
// Loaded before client.js; el(), api(), act(), bytes() and jobName() are client.js's, used only
// when a row is drawn or a button pressed.
"use strict";

const CONTROL_PAUSABLE = new Set(["queued", "downloading", "waiting", "verifying"]);
const CONTROL_REORDERABLE = new Set(["queued", "paused"]);
const CONTROL_ENDED = new Set(["completed", "failed", "cancelled"]);

// The buttons (and notes) of one job row, for the admin key; none for the viewer key.
function jobControls(job) {
  if (document.getElementById("app").dataset.role !== "admin") return [];
  const path = `/api/jobs/${job.id}`;
  const button = (cls, label, title, onclick) =>
    el("button", { type: "button", class: `btn btn-sm ms-1 ${cls}`, title, "aria-label": `${title}: ${jobName(job)}`, onclick }, label);
  const out = [];
  if (CONTROL_PAUSABLE.has(job.status)) {
    out.push(button("btn-outline-warning job-pause", "Pause", "Pause (keeps what is downloaded)", () => act(api("POST", `${path}/pause`), "Paused.")));
  }
  if (job.status === "paused") {
    out.push(button("btn-outline-success job-resume", "Resume", "Resume from where it stopped", () => act(api("POST", `${path}/resume`), "Resumed.")));
  }
  if (CONTROL_REORDERABLE.has(job.status)) {
    // Each a place in the queue's order (the daemon keeps the others' order); the group is
    // redrawn at once from the daemon's answer, not at the next event.
    const move = (cls, label, title, position) => button(`btn-outline-secondary ${cls}`, label, title, () => jobMove([job.id], { position }));
    out.push(move("job-top", "Top", "Move to the top: starts next", "top"));
    out.push(move("job-up", "Up", "One place up", "up"));
    out.push(move("job-down", "Down", "One place down", "down"));
    out.push(move("job-bottom", "Bottom", "Move to the bottom: starts last", "bottom"));
  }
  if (!CONTROL_ENDED.has(job.status)) {
    out.push(button("btn-outline-danger job-cancel", "Cancel", "Cancel", () => confirmCancel(job)));
  }
  if (job.retryable) {
    out.push(button("btn-outline-primary job-retry", "Retry", "Retry", () => act(api("POST", `${path}/retry`), "Queued again.")));
  } else if (job.status === "failed" && job.why_not_retryable) {
    out.push(el("span", { class: "small text-body-secondary ms-1 job-no-retry", title: job.why_not_retryable }, "no retry"));
  }
  return out;
}

const MOVE_WORDS = { top: "to the top", bottom: "to the bottom", up: "up one place", down: "down one place" };

// Moves the jobs (in the order given; "top" in reverse, so they keep their order at the top)
// and redraws the queue as soon as the daemon has answered.
async function jobMove(ids, change) {
  const order = change.position === "top" || change.position === "down" ? [...ids].reverse() : ids;
  let moved = 0;
  let last = null;
  for (const id of order) {
    const job = await act(api("PATCH", `/api/jobs/${id}`, change));
    if (job) { moved += 1; last = job; }
  }
  await queueLoad();
  if (!moved) return;
  const where = change.before ? "" : ` ${MOVE_WORDS[change.position]}`;
  toast(moved === 1 ? `Moved ${jobName(last)}${where}.` : `Moved ${moved} jobs${where}.`);
}

// Several rows ----------------------------------------------------------------------------------

const selectedJobs = new Set();

function jobSelect(job) {
  if (document.getElementById("app").dataset.role !== "admin") return null;
  return el("input", { type: "checkbox", class: "form-check-input me-2 job-select", "aria-label": `Select ${jobName(job)}`, checked: selectedJobs.has(job.id) ? "checked" : null,
    onchange: (event) => { if (event.target.checked) selectedJobs.add(job.id); else selectedJobs.delete(job.id); selectionBar(); } });
}

function selectionBar() {
  const bar = document.getElementById("queue-selection");
  if (!bar) return;
  bar.classList.toggle("d-none", selectedJobs.size === 0);
  document.getElementById("selection-count").textContent = `${selectedJobs.size} selected`;
}

// The selected jobs a step applies to (in queue order, as the rows show them); the rest are
// named in one note.
function selectedWhere(allowed) {
  const rows = [...document.querySelectorAll(".job-row")].map((r) => Number(r.id.slice(4)));
  const ids = [...selectedJobs].sort((a, b) => rows.indexOf(a) - rows.indexOf(b));
  return ids.filter((id) => { const j = jobs.get(id); return j && allowed.has(j.status); });
}

async function selectionAct(step) {
  const sets = { pause: CONTROL_PAUSABLE, resume: new Set(["paused"]), cancel: new Set(["queued", "downloading", "waiting", "verifying", "paused"]), top: CONTROL_REORDERABLE, bottom: CONTROL_REORDERABLE };
  const ids = selectedWhere(sets[step]);
  const skipped = selectedJobs.size - ids.length;
  if (!ids.length) { toast(`None of the selected jobs can be ${step === "top" || step === "bottom" ? "moved" : step + (step.endsWith("e") ? "d" : "ed")}.`, "warning"); return; }
  if (step === "cancel") { confirmCancel(ids.map((id) => jobs.get(id))); return; }
  if (step === "top" || step === "bottom") await jobMove(ids, { position: step });
  else {
    let done = 0;
    for (const id of ids) if (await act(api("POST", `/api/jobs/${id}/${step}`))) done += 1;
    toast(`${step === "pause" ? "Paused" : "Resumed"} ${done} job${done === 1 ? "" : "s"}${skipped ? `; ${skipped} could not be` : ""}.`);
  }
}

function selectionClear() {
  selectedJobs.clear();
  for (const box of document.querySelectorAll(".job-select:checked")) box.checked = false;
  selectionBar();
}

// Dragging a queued row onto another puts it just before that one (or, dropped on the lower
// half of the last row, at the bottom).
function jobDraggable(row, job) {
  if (document.getElementById("app").dataset.role !== "admin" || job.status !== "queued") return;
  row.draggable = true;
  row.classList.add("job-draggable");
  row.addEventListener("dragstart", (event) => { event.dataTransfer.setData("text/plain", String(job.id)); event.dataTransfer.effectAllowed = "move"; });
  row.addEventListener("dragover", (event) => { event.preventDefault(); row.classList.add("drop-target"); });
  row.addEventListener("dragleave", () => row.classList.remove("drop-target"));
  row.addEventListener("drop", (event) => {
    event.preventDefault();
    row.classList.remove("drop-target");
    const dragged = Number(event.dataTransfer.getData("text/plain"));
    if (!dragged || dragged === job.id) return;
    const rect = row.getBoundingClientRect();
    const lower = event.clientY > rect.top + rect.height / 2;
    let target = lower ? row.nextElementSibling : row;
    while (target && (!target.classList.contains("job-row") || target.id === `job-${dragged}`)) target = target.nextElementSibling;
    const change = target ? { before: Number(target.id.slice(4)) } : { position: "bottom" };
    jobMove([dragged], change);
  });
}

// Cancel --------------------------------------------------------------------------------------

let cancelModal = null;
let cancelJobIds = [];

function cancelDialog() {
  if (cancelModal) return cancelModal;
  const confirm = el("button", { type: "button", class: "btn btn-danger", id: "cancel-confirm" }, "Cancel download");
  const node = el("div", { class: "modal fade", id: "cancel-modal", tabindex: "-1", "aria-labelledby": "cancel-modal-title", "aria-hidden": "true" },
    el("div", { class: "modal-dialog modal-dialog-centered" },
      el("div", { class: "modal-content" },
        el("div", { class: "modal-header" },
          el("h2", { class: "modal-title h5", id: "cancel-modal-title" }, "Cancel this download?"),
          el("button", { type: "button", class: "btn-close", "data-bs-dismiss": "modal", "aria-label": "Close" })),
        el("div", { class: "modal-body" }, el("p", { class: "mb-0", id: "cancel-modal-text" })),
        el("div", { class: "modal-footer" },
          el("button", { type: "button", class: "btn btn-secondary", id: "cancel-keep", "data-bs-dismiss": "modal" }, "Keep it"),
          confirm))));
  document.body.append(node);
  cancelModal = new bootstrap.Modal(node);
  confirm.addEventListener("click", async () => {
    confirm.disabled = true;
    try {
      let done = 0;
      for (const id of cancelJobIds) if (await act(api("POST", `/api/jobs/${id}/cancel`))) done += 1;
      toast(cancelJobIds.length === 1 ? "Cancelled." : `Cancelled ${done} downloads.`);
      for (const id of cancelJobIds) selectedJobs.delete(id);
      selectionBar();
    } finally {
      confirm.disabled = false;
      cancelModal.hide();
    }
  });
  return cancelModal;
}

// One job, or several (the selection): the modal says what is lost, and Confirm cancels them.
function confirmCancel(shown) {
  const list = (Array.isArray(shown) ? shown : [shown]).map((j) => jobs.get(j.id) || j); // client.js's latest: the bytes saved by now
  const dialog = cancelDialog();
  cancelJobIds = list.map((j) => j.id);
  const text = document.getElementById("cancel-modal-text");
  const title = document.getElementById("cancel-modal-title");
  if (list.length > 1) {
    const saved = list.reduce((n, j) => n + (j.bytes_done || 0), 0);
    title.textContent = `Cancel ${list.length} downloads?`;
    text.textContent = `${list.map(jobName).join(", ")}: ${saved ? `the ${bytes(saved)} downloaded so far will be deleted.` : "nothing has been downloaded yet."}`;
  } else {
    const job = list[0];
    const kept = job.bytes_done ? `The ${bytes(job.bytes_done)} downloaded so far will be deleted.` : "Nothing has been downloaded yet.";
    const instead = CONTROL_PAUSABLE.has(job.status) ? " To stop it and keep them, use Pause instead." : "";
    title.textContent = "Cancel this download?";
    text.textContent = `${jobName(job)}: ${kept}${job.bytes_done ? instead : ""}`;
  }
  dialog.show();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const step of ["pause", "resume", "top", "bottom", "cancel"]) {
    const node = document.getElementById(`selection-${step}`);
    if (node) node.addEventListener("click", () => selectionAct(step));
  }
  const clear = document.getElementById("selection-clear");
  if (clear) clear.addEventListener("click", selectionClear);
});

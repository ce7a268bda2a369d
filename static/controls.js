// A job row's controls (issue 15): pause / resume, priority up and to the top, a cancel that
// asks first (a Bootstrap modal), and Retry only where the daemon says a retry can help.
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
    const up = button("btn-outline-secondary job-up", "Up", "Priority − 1 (starts sooner)", () => act(api("PATCH", path, { priority: job.priority - 1 }), (j) => `Priority ${j.priority}.`));
    up.disabled = job.priority <= 0 || job.priority > 100;
    out.push(up);
    out.push(button("btn-outline-secondary job-top", "Top", "Move to the top: starts next", () => act(api("PATCH", path, { position: "top" }), "Moved to the top.")));
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

// Cancel --------------------------------------------------------------------------------------

let cancelModal = null;
let cancelJobId = null;

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
      await act(api("POST", `/api/jobs/${cancelJobId}/cancel`), "Cancelled.");
    } finally {
      confirm.disabled = false;
      cancelModal.hide();
    }
  });
  return cancelModal;
}

function confirmCancel(shown) {
  const job = jobs.get(shown.id) || shown; // client.js's latest: the bytes saved by now
  const dialog = cancelDialog();
  cancelJobId = job.id;
  const kept = job.bytes_done ? `The ${bytes(job.bytes_done)} downloaded so far will be deleted.` : "Nothing has been downloaded yet.";
  const instead = CONTROL_PAUSABLE.has(job.status) ? " To stop it and keep them, use Pause instead." : "";
  document.getElementById("cancel-modal-text").textContent = `${jobName(job)}: ${kept}${job.bytes_done ? instead : ""}`;
  dialog.show();
}

// Updates where the files are (issue 26 item 4): the Library's "Download all updates" and each
// file's "Update" first show the plan (what, how big, where: POST /api/library/updates with
// dry_run) and queue only on confirm. Loaded after library.js, whose libraryReload it calls.
"use strict";

let libraryPlanIds = null; // the files the dialog's plan is for (null: every file with an update)

// The button shows how many files have an update available (from the daily check's results).
async function libraryUpdatesCount() {
  const button = document.getElementById("library-update-all");
  if (!isAdmin || !button) return;
  const data = await api("GET", "/api/library/models?update=true&per_page=1");
  button.classList.toggle("d-none", data.total === 0);
  button.textContent = `Download all updates (${data.total})`;
}

function libraryPlanRow(i) {
  const state = i.state === "ready" ? null : el("span", { class: "badge text-bg-secondary ms-1" }, i.state);
  return el("tr", { class: "updates-plan-row" },
    el("td", {}, el("div", { class: "fw-semibold" }, i.model_name || i.filename || "–"), state),
    el("td", {}, `${i.version_name || "?"} → ${i.new_version_name || i.new_version_id}`),
    el("td", { class: "text-nowrap updates-plan-size" }, bytes(i.size)),
    el("td", { class: "font-monospace text-break updates-plan-path" }, i.path));
}

async function libraryPlanUpdates(ids) {
  libraryPlanIds = ids;
  const plan = await act(api("POST", "/api/library/updates?dry_run=true", ids ? { ids } : {}));
  if (!plan) return;
  document.getElementById("updates-plan").replaceChildren(...plan.items.map(libraryPlanRow));
  const waiting = plan.items.length - plan.files;
  document.getElementById("updates-summary").textContent =
    `${plan.files} file${plan.files === 1 ? "" : "s"} to download, ${bytes(plan.bytes)} in all.` +
    (waiting ? ` ${waiting} already queued or not yet downloadable.` : "");
  document.getElementById("updates-confirm").disabled = plan.files === 0;
  bootstrap.Modal.getOrCreateInstance(document.getElementById("updates-modal")).show();
}

const libraryUpdateAll = document.getElementById("library-update-all");
if (libraryUpdateAll) libraryUpdateAll.addEventListener("click", () => libraryPlanUpdates(null));

const libraryUpdatesConfirm = document.getElementById("updates-confirm");
if (libraryUpdatesConfirm) {
  libraryUpdatesConfirm.addEventListener("click", async () => {
    libraryUpdatesConfirm.disabled = true;
    const body = libraryPlanIds ? { ids: libraryPlanIds } : {};
    const done = await act(api("POST", "/api/library/updates", body), (r) => {
      const failed = r.items.filter((i) => i.error);
      return `Queued ${r.queued.length} update${r.queued.length === 1 ? "" : "s"} (${bytes(r.bytes)}).` +
        (failed.length ? ` Not queued: ${failed.map((i) => `${i.model_name}: ${i.error}`).join("; ")}` : "");
    });
    bootstrap.Modal.getOrCreateInstance(document.getElementById("updates-modal")).hide();
    if (done) libraryReload();
  });
}

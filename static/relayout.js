// Moving the library into the configured layout's folders (POST /api/library/relayout, admins
// only): the plan first, in a dialog (each file from → to, or why it stays); Confirm applies it.
// After a layout change in Settings, and whenever the Library is shown, a notice says how many
// files are still in the old folders. Loaded after client.js and library.js, whose helpers
// (api, act, el, toast, isAdmin, libraryReload) it uses.
"use strict";

const RELAYOUT_NOTICES = ["relayout-notice", "relayout-settings-notice"];

function relayoutPlural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

// The notice in the Library and in Settings: "N files are in the old layout's folders — Review move".
function relayoutShowNotice(plan) {
  const n = plan.moves.length;
  // Nothing left to move: no button offering to move it.
  const button = document.getElementById("relayout-button");
  if (button) button.classList.toggle("d-none", n === 0);
  for (const id of RELAYOUT_NOTICES) {
    const box = document.getElementById(id);
    if (!box) continue;
    box.replaceChildren();
    box.classList.toggle("d-none", n === 0);
    if (!n) continue;
    box.append(`${relayoutPlural(n, "file")} ${n === 1 ? "is" : "are"} in the old layout's folders — `,
      el("button", { type: "button", class: "btn btn-link btn-sm p-0 align-baseline relayout-review", onclick: () => relayoutReview() }, "Review move"));
  }
}

async function relayoutCheck() {
  const plan = await api("POST", "/api/library/relayout", { confirm: false });
  relayoutShowNotice(plan);
  return plan;
}

let relayoutRoot = "";  // download_dir: paths are shown below it, as the layout table names them

function relayoutShort(path) {
  return relayoutRoot && path.startsWith(relayoutRoot + "/") ? path.slice(relayoutRoot.length + 1) : path;
}

function relayoutRow(m) {
  const name = m.from.split(/[\\/]/).pop();
  const sidecars = m.sidecars.length ? ` · with ${relayoutPlural(m.sidecars.length, "sidecar")}` : "";
  const where = m.reason
    ? el("span", { class: "text-warning-emphasis relayout-reason" }, `Stays: ${m.reason}`)
    : el("span", { class: "font-monospace text-break relayout-paths" }, el("span", { class: "relayout-from", title: m.from }, relayoutShort(m.from)), " → ", el("span", { class: "relayout-to", title: m.to }, relayoutShort(m.to)));
  return el("tr", { class: m.reason ? "relayout-stay" : "relayout-move", "data-id": m.id },
    el("td", { class: "text-break" }, el("div", { class: "fw-semibold" }, name), el("div", { class: "text-body-secondary" }, `${m.model_type}${sidecars}`)),
    el("td", {}, where));
}

function relayoutShow(summary, rows, canConfirm) {
  document.getElementById("relayout-summary").textContent = summary;
  document.getElementById("relayout-body").replaceChildren(...rows.map(relayoutRow));
  document.getElementById("relayout-table").classList.toggle("d-none", rows.length === 0);
  const confirm = document.getElementById("relayout-confirm");
  confirm.classList.toggle("d-none", !canConfirm);
  confirm.disabled = !canConfirm;
  document.getElementById("relayout-cancel").textContent = canConfirm ? "Cancel" : "Close";
}

async function relayoutReview() {
  const plan = await act(api("POST", "/api/library/relayout", { confirm: false }));
  if (!plan) return;
  relayoutShowNotice(plan);
  const n = plan.moves.length;
  const stays = plan.stays.length ? ` ${relayoutPlural(plan.stays.length, "file")} cannot move and stay${plan.stays.length === 1 ? "s" : ""} where ${plan.stays.length === 1 ? "it is" : "they are"}.` : "";
  const summary = n
    ? `${relayoutPlural(n, "file")} move${n === 1 ? "s" : ""} into the ${plan.layout} layout's folders when you confirm.${stays}`
    : `Every file is in the ${plan.layout} layout's folders already.${stays}`;
  relayoutRoot = plan.download_dir || "";
  relayoutShow(summary, [...plan.moves, ...plan.stays], n > 0);
  bootstrap.Modal.getOrCreateInstance(document.getElementById("relayout-modal")).show();
}

async function relayoutConfirm() {
  const button = document.getElementById("relayout-confirm");
  button.disabled = true;
  const done = await act(api("POST", "/api/library/relayout", { confirm: true }));
  if (!done) { button.disabled = false; return; }
  const skipped = done.skipped.length ? ` ${relayoutPlural(done.skipped.length, "file")} stayed where ${done.skipped.length === 1 ? "it was" : "they were"}.` : "";
  relayoutRoot = done.download_dir || "";
  relayoutShow(`Moved ${relayoutPlural(done.moved.length, "file")} into the ${done.layout} layout's folders.${skipped}`, [...done.moved, ...done.skipped], false);
  toast(`Moved ${relayoutPlural(done.moved.length, "file")}.${skipped}`);
  libraryReload();
  relayoutCheck().catch(() => {});
}

if (isAdmin) {
  document.getElementById("relayout-button").addEventListener("click", () => relayoutReview());
  document.getElementById("relayout-confirm").addEventListener("click", () => relayoutConfirm());
  document.getElementById("nav-library").addEventListener("shown.bs.tab", () => relayoutCheck().catch((e) => toast(e.message, "danger")));
}

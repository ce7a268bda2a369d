// Library → Tracked models: what manifest.json follows for updates, by name, version and type;
// Untrack (admin) removes the entry, never the file; an entry that cannot be used says why.
// Uses el(), api(), act(), toast() and isAdmin from client.js (loaded first).
"use strict";

function trackedRow(t) {
  const title = t.name || (t.modelId !== null && t.modelId !== undefined ? `model ${t.modelId}` : "(no modelId)");
  const version = t.version_name || (t.modelVersionId ? `version ${t.modelVersionId}` : "newest version");
  const item = el("li", { class: `list-group-item small tracked-row${t.problem ? " list-group-item-warning" : ""}`, "data-entry": t.entry, "data-model-id": t.modelId },
    el("div", { class: "d-flex justify-content-between align-items-start gap-2" },
      el("div", { class: "text-break" },
        el("span", { class: "text-body-secondary me-1" }, `#${t.entry}`),
        el("b", { class: "tracked-name" }, title),
        el("span", { class: "tracked-version" }, ` · ${version}`),
        el("span", { class: "badge text-bg-secondary ms-2 tracked-type" }, t.model_type || "no type"),
        t.filename ? el("div", { class: "text-body-secondary text-truncate text-truncate-path" }, t.filename) : null),
      isAdmin && Number.isInteger(t.modelId) ? el("button", { class: "btn btn-outline-danger btn-sm tracked-untrack text-nowrap", type: "button", onclick: () => untrack(t, title) }, "Untrack") : null));
  if (t.problem) item.append(el("div", { class: "text-danger-emphasis tracked-problem" }, `Entry ${t.entry}${t.modelId !== null && t.modelId !== undefined ? ` (modelId ${t.modelId})` : ""} cannot be used: ${t.problem}`));
  return item;
}

function renderTracked(view) {
  const list = document.getElementById("tracked-list");
  const whole = (view.problems || []).filter((p) => p.entry === null);
  const rows = (view.tracked || []).map(trackedRow);
  for (const p of whole) rows.unshift(el("li", { class: "list-group-item small list-group-item-danger tracked-problem" }, `manifest.json: ${p.detail}`));
  if (!rows.length) rows.push(el("li", { class: "list-group-item small text-body-secondary" }, "manifest.json tracks nothing yet. Tick “Track for updates” when adding a model."));
  list.replaceChildren(...rows);
}

async function untrack(t, title) {
  if (!window.confirm(`Stop tracking ${title} for updates? Its files stay on disk.`)) return;
  const view = await act(api("DELETE", `/api/manifest/${t.modelId}`), `${title} is no longer tracked; its files are kept.`);
  if (view) renderTracked(view);
}

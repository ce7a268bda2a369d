// Library → Tracked models: what manifest.json follows for updates, by name, version and type;
// each model's update policy (a select for the admin: PATCH /api/manifest/{id}); Untrack
// (admin) removes the entry, never the file; an entry that cannot be used says why.
// Uses el(), api(), act(), toast() and isAdmin from client.js (loaded first).
"use strict";

// An update not queued says why: listed only (policy notify), or early access until its end.
function updateNote(u) {
  if (u.job_id !== null && u.job_id !== undefined) return null;
  const until = u.early_access_until ? ` until ${when(u.early_access_until)}` : "";
  const text = u.policy === "notify" ? `listed only (update policy: notify)${until ? `, early access${until}` : ""}`
    : `early access${until}; queued once it ends`;
  return el("span", { class: "badge text-bg-warning ms-2 update-note" }, text);
}

const POLICIES = [
  ["download", "Download updates"],
  ["notify", "Only list updates"],
  ["replace", "Download, retire the old file"],
  ["keep", "Keep the newest N versions"],
];

function policyText(policy) {
  if (policy && typeof policy === "object") return `Keep the newest ${policy.keep} versions`;
  return (POLICIES.find(([v]) => v === policy) || [null, String(policy)])[1];
}

// The admin's select (and N for keep); a viewer reads the policy.
function policyControl(t) {
  const policy = t.policy ?? "download";
  if (!isAdmin || !Number.isInteger(t.modelId) || t.problem) {
    return el("span", { class: "badge text-bg-light border tracked-policy" }, policyText(policy));
  }
  const keep = policy && typeof policy === "object" ? policy.keep : null;
  const select = el("select", { class: "form-select form-select-sm tracked-policy-select", "aria-label": "Update policy" },
    ...POLICIES.map(([value, text]) => el("option", { value, ...((keep ? "keep" : policy) === value ? { selected: "" } : {}) }, text)));
  const n = el("input", { class: "form-control form-control-sm tracked-keep", type: "number", min: "1", max: "1000", value: keep || 2, "aria-label": "Versions to keep" });
  n.hidden = !keep;
  const save = async () => {
    const body = select.value === "keep" ? { keep: Number(n.value) } : select.value;
    const view = await act(api("PATCH", `/api/manifest/${t.modelId}`, { policy: body }), `Update policy: ${policyText(body)}.`);
    if (view) renderTracked(view);
  };
  select.addEventListener("change", () => { n.hidden = select.value !== "keep"; save(); });
  n.addEventListener("change", save);
  return el("div", { class: "d-flex gap-1 align-items-center tracked-policy-box" }, select, n);
}

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
  item.append(el("div", { class: "mt-1" }, policyControl(t)));
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

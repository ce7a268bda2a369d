// The Library's completed files (filters, totals per type, copy path, delete) and the disk of
// download_dir on the Status page. Loaded after client.js, whose helpers (api, el, bytes, toast,
// act, when, ROOT, isAdmin) it uses; client.js calls loadLibrary when the Library is shown.
"use strict";

const libraryFilter = { type: "", base: "", q: "" };
let librarySearchTimer = null;
let libraryDeleting = null; // the completed row the delete dialog asks about

function libraryOptions(select, values, allLabel) {
  const keep = select.value;
  select.replaceChildren(el("option", { value: "" }, allLabel), ...values.map((v) => el("option", { value: v }, v)));
  select.value = values.includes(keep) ? keep : "";
}

// One badge per model_type: its files and bytes (each path once); a click filters by it.
function libraryTotals(summary) {
  const box = document.getElementById("library-totals");
  const badge = (label, t, type) => el("button", {
    type: "button",
    class: `btn btn-sm ${libraryFilter.type === type ? "btn-primary" : "btn-outline-secondary"} library-total`,
    "data-type": type,
    onclick: () => { libraryFilter.type = type; document.getElementById("library-type").value = type; loadLibrary().catch((e) => toast(e.message, "danger")); },
  }, `${label} · ${t.files} file${t.files === 1 ? "" : "s"} · ${bytes(t.bytes)}`);
  box.replaceChildren(badge("All", summary, ""), ...summary.types.map((t) => badge(t.model_type, t, t.model_type)));
}

// Copy a path: the clipboard where the page may use it (a secure context: https or this
// machine), else the path is selected so Ctrl+C copies it.
async function libraryCopyPath(path, node) {
  if (window.isSecureContext && navigator.clipboard && navigator.clipboard.writeText) {
    try {
      await navigator.clipboard.writeText(path);
      toast("Path copied.");
      return;
    } catch (err) { /* no permission: select it instead */ }
  }
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  toast("The path is selected: press Ctrl+C to copy it.", "info");
}

function libraryRow(c) {
  const thumb = () => {  // lazy: only the one shown (a column, or beside the name on phones) loads
    if (!c.has_preview) return null; // asked for, a missing image is a 404 in the console
    const img = el("img", { class: "preview-thumb", alt: "", loading: "lazy", src: `${ROOT}/api/completed/${c.id}/preview` });
    img.addEventListener("error", () => { // no preview: the column keeps its width, a phone its room
      if (img.parentElement && img.parentElement.classList.contains("library-thumb-phone")) img.parentElement.remove();
      else img.style.visibility = "hidden";
    });
    return img;
  };
  const path = el("span", { class: "text-truncate font-monospace library-path", title: c.path }, c.path);
  const copy = el("button", { type: "button", class: "btn btn-outline-secondary btn-sm py-0 library-copy", title: "Copy the path", onclick: () => libraryCopyPath(c.path, path) }, "Copy");
  const actions = el("td", { class: "text-end" });
  if (isAdmin) actions.append(el("button", { type: "button", class: "btn btn-outline-danger btn-sm library-delete", onclick: () => libraryAskDelete(c) }, "Delete"));
  const kind = [c.model_type, c.base_model].filter(Boolean).join(" · ");
  return el("tr", { class: "library-row", "data-id": c.id },
    el("td", { class: "d-none d-sm-table-cell" }, thumb()),
    el("td", { class: "library-file" },
      c.has_preview ? el("div", { class: "d-sm-none float-start me-2 library-thumb-phone" }, thumb()) : null,
      el("div", { class: "fw-semibold text-break" }, c.model_name || c.filename),
      el("div", { class: "small text-body-secondary text-break" }, c.version_name ? `${c.version_name} · ${c.filename}` : c.filename),
      el("div", { class: "small text-body-secondary d-lg-none" }, kind),
      el("div", { class: "small d-flex align-items-center gap-1" }, path, copy)),
    el("td", { class: "library-type d-none d-lg-table-cell" }, c.model_type),
    el("td", { class: "small library-base d-none d-lg-table-cell" }, c.base_model || "–"),
    el("td", { class: "text-nowrap library-size" }, bytes(c.size)),
    el("td", { class: "small d-none d-xxl-table-cell" }, when(c.completed_at)),
    actions);
}

async function loadLibrary() {
  const params = new URLSearchParams({ limit: "200" });
  if (libraryFilter.type) params.set("model_type", libraryFilter.type);
  if (libraryFilter.base) params.set("base_model", libraryFilter.base);
  if (libraryFilter.q) params.set("q", libraryFilter.q);
  const [data, summary] = await Promise.all([api("GET", `/api/completed?${params}`), api("GET", "/api/library")]);
  libraryOptions(document.getElementById("library-type"), summary.types.map((t) => t.model_type), "All types");
  libraryOptions(document.getElementById("library-base"), summary.base_models, "All base models");
  libraryFilter.type = document.getElementById("library-type").value;
  libraryFilter.base = document.getElementById("library-base").value;
  libraryTotals(summary);
  document.getElementById("library-body").replaceChildren(...data.completed.map(libraryRow));
  const filtered = libraryFilter.type || libraryFilter.base || libraryFilter.q;
  document.getElementById("library-count").textContent = data.total > data.completed.length
    ? `newest ${data.completed.length} of ${data.total}` : `${data.total} file${data.total === 1 ? "" : "s"}`;
  const empty = document.getElementById("library-empty");
  empty.textContent = filtered ? "No completed file matches these filters." : "No completed downloads yet.";
  empty.classList.toggle("d-none", data.completed.length > 0);
}

function libraryReload() { loadLibrary().catch((e) => toast(e.message, "danger")); }

document.getElementById("library-filters").addEventListener("submit", (event) => event.preventDefault());
document.getElementById("library-type").addEventListener("change", (event) => { libraryFilter.type = event.target.value; libraryReload(); });
document.getElementById("library-base").addEventListener("change", (event) => { libraryFilter.base = event.target.value; libraryReload(); });
document.getElementById("library-search").addEventListener("input", (event) => {
  clearTimeout(librarySearchTimer);
  librarySearchTimer = setTimeout(() => { libraryFilter.q = event.target.value.trim(); libraryReload(); }, 250);
});

// Delete, after a confirmation -----------------------------------------------------------------

function libraryAskDelete(c) {
  libraryDeleting = c;
  document.getElementById("delete-name").textContent = c.model_name ? `${c.model_name}${c.version_name ? " · " + c.version_name : ""}` : c.filename;
  document.getElementById("delete-path").textContent = c.path;
  document.getElementById("delete-confirm").disabled = false;
  bootstrap.Modal.getOrCreateInstance(document.getElementById("delete-modal")).show();
}

function libraryDeleted(r) {
  const name = r.path.split(/[\\/]/).pop();
  const sidecars = r.deleted.length > 1 ? ` and ${r.deleted.length - 1} sidecar file${r.deleted.length > 2 ? "s" : ""}` : "";
  const parts = [r.deleted.length ? `Deleted ${name}${sidecars}.` : `${name} was already gone from disk; removed from the library.`];
  if (r.untracked.length) parts.push(`No longer tracked for updates (manifest entry ${r.untracked.map((e) => e.entry).join(", ")}).`);
  for (const e of r.still_tracked) parts.push(`Manifest entry ${e.entry} (model ${e.modelId}) is still tracked: ${e.reason}.`);
  return parts.join(" ");
}

const libraryDeleteConfirm = document.getElementById("delete-confirm");
if (libraryDeleteConfirm) {
  libraryDeleteConfirm.addEventListener("click", async () => {
    if (!libraryDeleting) return;
    libraryDeleteConfirm.disabled = true;
    const result = await act(api("DELETE", `/api/library/${libraryDeleting.id}`), libraryDeleted);
    bootstrap.Modal.getOrCreateInstance(document.getElementById("delete-modal")).hide();
    libraryDeleting = null;
    if (result) libraryReload();
  });
}

// Disk of download_dir, on the Status page ------------------------------------------------------

async function loadDisk() {
  const s = await api("GET", "/api/status");
  const d = s.disk;
  const pct = d.total ? Math.min(100, Math.round((100 * d.used) / d.total)) : 0;
  document.getElementById("disk-path").textContent = d.path;
  document.getElementById("disk-text").textContent = `${bytes(d.free)} free of ${bytes(d.total)} (${pct}% used)`;
  const bar = document.getElementById("disk-bar");
  bar.setAttribute("aria-valuenow", pct);
  bar.firstElementChild.style.width = `${pct}%`;
  bar.firstElementChild.classList.toggle("bg-danger", pct >= 90);
  document.getElementById("disk-models").textContent = `Models in the library: ${bytes(s.library_bytes)}`;
}

document.getElementById("nav-status").addEventListener("shown.bs.tab", () => loadDisk().catch((e) => toast(e.message, "danger")));
setInterval(() => { if (document.getElementById("tab-status").classList.contains("active")) loadDisk().catch(() => {}); }, 5000);

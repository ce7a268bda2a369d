// The Library (issue 26): every file, as cards or a compact table (the choice remembered),
// filtered, searched (name, file, trigger word, SHA256 or AutoV2) and paged by the daemon
// (GET /api/library/models); the totals per type; copy a path or trigger words; delete; an
// NSFW preview blurred until clicked. The disk of download_dir on the Status page. Loaded after
// client.js, whose helpers (api, el, bytes, toast, act, when, ROOT, isAdmin) it uses; client.js
// calls loadLibrary when the Library is shown. Updates: static/library_updates.js.
"use strict";

const LIBRARY_PER_PAGE = 60;
const libraryFilter = { type: "", base: "", folder: "", show: "", q: "", sort: "newest", page: 1 };
let libraryView = localStorage.getItem("library-view") === "cards" ? "cards" : "table";
let librarySearchTimer = null;
let libraryDeleting = null; // the completed row the delete dialog asks about
let libraryAsked = 0; // the newest request: an older answer arriving late is dropped
let libraryFiles = []; // the page shown, drawn again when the view changes
let librarySummary = null; // GET /api/library's last answer: the totals and the filters' options

function libraryOptions(select, values, allLabel, label = (v) => v) {
  const keep = select.value;
  select.replaceChildren(el("option", { value: "" }, allLabel), ...values.map((v) => el("option", { value: v }, label(v))));
  select.value = values.includes(keep) ? keep : "";
}

// One badge per model_type: its files and bytes (each path once); a click filters by it.
function libraryTotals(summary) {
  const box = document.getElementById("library-totals");
  const badge = (label, t, type) => el("button", {
    type: "button",
    class: `btn btn-sm ${libraryFilter.type === type ? "btn-primary" : "btn-outline-secondary"} library-total`,
    "data-type": type,
    onclick: () => { libraryFilter.type = type; libraryFilter.page = 1; document.getElementById("library-type").value = type; libraryRefresh(); },
  }, `${label} · ${t.files} file${t.files === 1 ? "" : "s"} · ${bytes(t.bytes)}`);
  box.replaceChildren(badge("All", summary, ""), ...summary.types.map((t) => badge(t.model_type, t, t.model_type)));
}

// Copy text: the clipboard where the page may use it (a secure context: https or this machine),
// else the text is selected so Ctrl+C copies it. `what`: "path" or "trigger words".
async function libraryCopy(text, node, what) {
  if (window.isSecureContext && navigator.clipboard && navigator.clipboard.writeText) {
    try {
      await navigator.clipboard.writeText(text);
      toast(`${what[0].toUpperCase()}${what.slice(1)} copied.`);
      return;
    } catch (err) { /* no permission: select it instead */ }
  }
  const range = document.createRange();
  range.selectNodeContents(node);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  toast(`The ${what} ${what.endsWith("s") ? "are" : "is"} selected: press Ctrl+C to copy ${what.endsWith("s") ? "them" : "it"}.`, "info");
}

// The preview through the daemon; an NSFW one blurred (show_nsfw off) until a click shows it.
function libraryPreview(c, cls) {
  if (!c.has_preview) return null; // asked for, a missing image is a 404 in the console
  const img = el("img", { class: cls, alt: "", loading: "lazy", src: `${ROOT}/api/completed/${c.id}/preview` });
  if (c.blur) {
    img.classList.add("library-blur");
    img.title = "NSFW preview: click to show it";
    img.addEventListener("click", () => { img.classList.remove("library-blur"); img.removeAttribute("title"); }, { once: true });
  }
  return img;
}

function libraryWords(c) {
  if (!c.trained_words.length) return null;
  const words = el("span", { class: "library-words" }, ...c.trained_words.map((w) => el("code", { class: "library-trigger me-1" }, w)));
  const copy = el("button", { type: "button", class: "btn btn-outline-secondary btn-sm py-0 library-copy-words", title: "Copy the trigger words",
    onclick: () => libraryCopy(c.trained_words.join(", "), words, "trigger words") }, "Copy");
  return el("div", { class: "small d-flex flex-wrap align-items-center gap-1" }, el("span", { class: "text-body-secondary" }, "Trigger:"), words, copy);
}

function libraryMarks(c) {
  const marks = [];
  if (c.kind === "unknown") marks.push(el("span", { class: "badge text-bg-secondary library-unknown" }, "unknown to Civitai"));
  if (c.tracked) marks.push(el("span", { class: "badge text-bg-info library-tracked" }, "tracked"));
  const u = c.update;
  if (u) {
    const queued = ["queued", "downloading", "waiting", "verifying", "paused"].includes(u.job_status);
    marks.push(el("span", { class: `badge ${queued ? "text-bg-primary" : "text-bg-warning"} library-update-badge`, title: u.size ? `${bytes(u.size)}` : "" },
      queued ? `update ${u.version_name || ""} queued` : `update available: ${u.version_name || "a new version"}`));
  }
  return marks.length ? el("div", { class: "d-flex flex-wrap gap-1" }, ...marks) : null;
}

function libraryActions(c) {
  const box = el("div", { class: "d-flex flex-wrap gap-1 justify-content-end" });
  if (c.page_url) box.append(el("a", { class: "btn btn-outline-secondary btn-sm library-page-link", href: c.page_url, target: "_blank", rel: "noopener noreferrer" }, c.modelId ? "Civitai ↗" : "Page ↗"));
  const u = c.update;
  const ready = u && !["queued", "downloading", "waiting", "verifying", "paused"].includes(u.job_status) && !(!u.job_id && !u.untracked); // a tracked model's, without a job: early access
  if (isAdmin && ready) box.append(el("button", { type: "button", class: "btn btn-outline-success btn-sm library-update", onclick: () => libraryPlanUpdates([c.id]) }, "Update"));
  if (isAdmin && c.id) box.append(el("button", { type: "button", class: "btn btn-outline-danger btn-sm library-delete", onclick: () => libraryAskDelete(c) }, "Delete"));
  return box;
}

function libraryPath(c) {
  const path = el("span", { class: "text-truncate font-monospace library-path", title: c.path }, c.path);
  const copy = el("button", { type: "button", class: "btn btn-outline-secondary btn-sm py-0 library-copy", title: "Copy the path", onclick: () => libraryCopy(c.path, path, "path") }, "Copy");
  return el("div", { class: "small d-flex align-items-center gap-1" }, path, copy);
}

function libraryHash(c) {
  return c.autov2 ? el("div", { class: "small text-body-secondary" }, "AutoV2 ", el("code", { class: "library-autov2 user-select-all", title: `SHA256 ${c.sha256}` }, c.autov2)) : null;
}

function libraryRow(c) {
  const thumb = () => {  // lazy: only the one shown (a column, or beside the name on phones) loads
    const img = libraryPreview(c, "preview-thumb");
    if (!img) return null;
    img.addEventListener("error", () => { // no preview: the column keeps its width, a phone its room
      if (img.parentElement && img.parentElement.classList.contains("library-thumb-phone")) img.parentElement.remove();
      else img.style.visibility = "hidden";
    });
    return img;
  };
  const kind = [c.model_type, c.base_model].filter(Boolean).join(" · ");
  return el("tr", { class: "library-row", "data-id": c.id ?? "", "data-path": c.path },
    el("td", { class: "d-none d-sm-table-cell" }, thumb()),
    el("td", { class: "library-file" },
      c.has_preview ? el("div", { class: "d-sm-none float-start me-2 library-thumb-phone" }, thumb()) : null,
      el("div", { class: "fw-semibold text-break" }, c.model_name || c.filename),
      el("div", { class: "small text-body-secondary text-break" }, c.version_name ? `${c.version_name} · ${c.filename}` : c.filename),
      el("div", { class: "small text-body-secondary d-lg-none" }, kind),
      libraryMarks(c), libraryWords(c), libraryPath(c)),
    el("td", { class: "library-type d-none d-lg-table-cell" }, c.model_type),
    el("td", { class: "small library-base d-none d-lg-table-cell" }, c.base_model || "–"),
    el("td", { class: "text-nowrap library-size" }, bytes(c.size)),
    el("td", { class: "small d-none d-xxl-table-cell" }, when(c.completed_at)),
    el("td", { class: "text-end" }, libraryActions(c)));
}

function libraryCard(c) {
  const image = libraryPreview(c, "card-img-top library-card-img");
  return el("div", { class: "col" }, el("div", { class: "card h-100 library-row library-card", "data-id": c.id ?? "", "data-path": c.path },
    el("div", { class: "library-card-frame" }, image || el("div", { class: "card-img-top library-card-img library-noimg" })),
    el("div", { class: "card-body p-2 d-flex flex-column gap-1 library-file" },
      el("div", { class: "fw-semibold text-break library-name" }, c.model_name || c.filename),
      el("div", { class: "small text-body-secondary text-break" }, c.version_name ? `${c.version_name} · ${c.filename}` : c.filename),
      el("div", { class: "small d-flex flex-wrap gap-2" },
        el("span", { class: "library-type" }, c.model_type || "–"),
        el("span", { class: "library-base" }, c.base_model || "–"),
        el("span", { class: "library-size" }, bytes(c.size))),
      libraryMarks(c), libraryWords(c), libraryHash(c), libraryPath(c),
      el("div", { class: "mt-auto" }, libraryActions(c)))));
}

// Only the view shown holds the files: one element per file on the page.
function libraryShowView() {
  const cards = libraryView === "cards";
  document.getElementById("library-cards").classList.toggle("d-none", !cards);
  document.getElementById("library-table").classList.toggle("d-none", cards);
  document.getElementById("library-body").replaceChildren(...(cards ? [] : libraryFiles.map(libraryRow)));
  document.getElementById("library-cards").replaceChildren(...(cards ? libraryFiles.map(libraryCard) : []));
  for (const [id, on] of [["library-view-cards", cards], ["library-view-table", !cards]]) {
    const button = document.getElementById(id);
    button.classList.toggle("active", on);
    button.setAttribute("aria-pressed", String(on));
  }
}

function libraryParams() {
  const f = libraryFilter;
  const params = new URLSearchParams({ page: String(f.page), per_page: String(LIBRARY_PER_PAGE), sort: f.sort });
  if (f.type) params.set("type", f.type);
  if (f.base) params.set("base_model", f.base);
  if (f.folder) params.set("folder", f.folder === "." ? "" : f.folder);
  if (f.q) params.set("q", f.q);
  if (f.show === "tracked" || f.show === "untracked") params.set("tracked", String(f.show === "tracked"));
  if (f.show === "update") params.set("update", "true");
  if (f.show === "unknown") params.set("unknown", "true");
  return params;
}

// `full`: the totals and the updates' count too (the tab shown, a file added or removed); a
// search, a filter or another page asks for its files only.
async function loadLibrary(full = true) {
  const asked = ++libraryAsked;
  const [data, summary] = await Promise.all([api("GET", `/api/library/models?${libraryParams()}`),
    full || !librarySummary ? api("GET", "/api/library") : librarySummary]);
  if (asked !== libraryAsked) return; // a newer search is on its way
  librarySummary = summary;
  libraryOptions(document.getElementById("library-type"), summary.types.map((t) => t.model_type), "All types");
  libraryOptions(document.getElementById("library-base"), summary.base_models, "All base models");
  libraryOptions(document.getElementById("library-folder"), data.folders.map((f) => f || "."), "All folders", (f) => (f === "." ? "(download_dir)" : f));
  libraryFilter.type = document.getElementById("library-type").value;
  libraryFilter.base = document.getElementById("library-base").value;
  libraryTotals(summary);
  libraryFiles = data.files;
  libraryShowView();
  const pages = Math.max(1, Math.ceil(data.total / data.per_page));
  const first = (data.page - 1) * data.per_page + 1;
  document.getElementById("library-count").textContent = data.total > data.files.length
    ? `${first}–${first + data.files.length - 1} of ${data.total}` : `${data.total} file${data.total === 1 ? "" : "s"}`;
  document.getElementById("library-pager").classList.toggle("d-none", pages < 2);
  document.getElementById("library-page-info").textContent = `Page ${data.page} of ${pages}`;
  document.getElementById("library-prev").disabled = data.page <= 1;
  document.getElementById("library-next").disabled = data.page >= pages;
  const filtered = libraryFilter.type || libraryFilter.base || libraryFilter.q || libraryFilter.folder || libraryFilter.show;
  const empty = document.getElementById("library-empty");
  empty.textContent = filtered ? "No completed file matches these filters." : "No completed downloads yet.";
  empty.classList.toggle("d-none", data.files.length > 0);
  if (full && typeof libraryUpdatesCount === "function") libraryUpdatesCount().catch(() => {});
}

function libraryReload() { loadLibrary().catch((e) => toast(e.message, "danger")); }
function libraryRefresh() { loadLibrary(false).catch((e) => toast(e.message, "danger")); }

function libraryOn(id, key) {
  document.getElementById(id).addEventListener("change", (event) => { libraryFilter[key] = event.target.value; libraryFilter.page = 1; libraryRefresh(); });
}

document.getElementById("library-filters").addEventListener("submit", (event) => event.preventDefault());
libraryOn("library-type", "type");
libraryOn("library-base", "base");
libraryOn("library-folder", "folder");
libraryOn("library-show", "show");
libraryOn("library-sort", "sort");
document.getElementById("library-search").addEventListener("input", (event) => {
  clearTimeout(librarySearchTimer);
  librarySearchTimer = setTimeout(() => { libraryFilter.q = event.target.value.trim(); libraryFilter.page = 1; libraryRefresh(); }, 250);
});
document.getElementById("library-prev").addEventListener("click", () => { libraryFilter.page -= 1; libraryRefresh(); });
document.getElementById("library-next").addEventListener("click", () => { libraryFilter.page += 1; libraryRefresh(); });
for (const view of ["cards", "table"]) {
  document.getElementById(`library-view-${view}`).addEventListener("click", () => {
    libraryView = view;
    localStorage.setItem("library-view", view);
    libraryShowView();
  });
}
libraryShowView();

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

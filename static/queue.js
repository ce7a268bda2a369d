// The queue as groups by state, running first, each with its count, collapsible, showing a page
// of rows at a time ("show more"), narrowed by a search. The daemon filters and counts
// (GET /api/jobs?status=…&q=…), so 2,000 jobs cost 300 rows in the page at most.
"use strict";

const QUEUE_GROUPS = [
  { key: "running", label: "Running", statuses: ["downloading", "verifying"] },
  { key: "queued", label: "Queued", statuses: ["queued"], order: "queue" },
  { key: "waiting", label: "Waiting to retry", statuses: ["waiting"] },
  { key: "paused", label: "Paused", statuses: ["paused"] },
  { key: "failed", label: "Failed", statuses: ["failed"], clear: "Clear failed" },
  { key: "finished", label: "Finished", statuses: ["completed", "cancelled"], clear: "Clear finished" },
];
const QUEUE_PAGE = 50; // rows a group shows, and how many more each "show more" adds
const queueView = {
  q: "",
  shown: {}, // group key -> rows asked for
  collapsed: new Set(JSON.parse(localStorage.getItem("queue-collapsed") || "[]")),
  groupOf: new Map(), // job id -> the group it was last seen in
  counts: {}, // group key -> jobs in it (the daemon's count, kept up to date between refreshes)
  timer: null,
  running: null, // the refresh in progress
  again: false, // another refresh was asked for meanwhile
};
const queueIsAdmin = document.getElementById("app").dataset.role === "admin";

function queueGroup(status) {
  return QUEUE_GROUPS.find((g) => g.statuses.includes(status)) || QUEUE_GROUPS[0];
}

function queueLimit(group) { return queueView.shown[group.key] || QUEUE_PAGE; }

function queueMatches(job) {
  const q = queueView.q.trim().toLowerCase();
  if (!q) return true;
  if (/^\d+$/.test(q) && [job.id, job.modelId, job.modelVersionId].some((n) => String(n) === q)) return true;
  return [job.model_name, job.version_name, job.filename, job.model_type, job.url].some((v) => v && v.toLowerCase().includes(q));
}

// The column names, for the card layout of narrow screens (CSS `attr(data-label)`).
function queueLabel(row) {
  const names = [...document.querySelectorAll("#queue-table thead th")].map((th) => th.textContent.trim());
  [...row.cells].forEach((cell, i) => { if (names[i]) cell.dataset.label = names[i]; });
  row.classList.add("job-row");
  return row;
}

function queueBuild() {
  const table = document.getElementById("queue-table");
  for (const group of QUEUE_GROUPS) {
    const toggle = el("button", { type: "button", class: "btn btn-link btn-sm p-0 text-decoration-none fw-semibold group-toggle", "aria-expanded": String(!queueView.collapsed.has(group.key)), onclick: () => queueCollapse(group) },
      el("span", { class: "group-caret" }), ` ${group.label} `, el("span", { class: "badge rounded-pill text-bg-secondary group-count" }, "0"));
    const line = el("div", { class: "d-flex justify-content-between align-items-center gap-2" }, toggle);
    if (group.clear && queueIsAdmin) {
      line.append(el("button", { type: "button", class: "btn btn-outline-secondary btn-sm group-clear", id: `clear-${group.key}`, title: "Removes these rows from the history; the files stay", onclick: () => queueClear(group) }, group.clear));
    }
    const head = el("tr", { class: "group-head" }, el("th", { colspan: 8 }, line));
    table.append(el("tbody", { class: "queue-group d-none", id: `group-${group.key}`, "data-group": group.key }, head));
  }
}

// A job changed (live feed, or an action's answer): its row is redrawn where it is; a job that
// moved to another group is shown at the top of that group at once and counted by a refresh.
function queueShow(job, fresh) {
  const group = queueGroup(job.status);
  const body = document.getElementById(`group-${group.key}`);
  const old = document.getElementById(`job-${job.id}`);
  const before = queueView.groupOf.get(job.id);
  queueView.groupOf.set(job.id, group.key);
  queueLabel(fresh);
  if (old && old.parentElement === body) {
    old.replaceWith(fresh);
    if (group.order === "queue") queuePlace(body, fresh, job); // a new priority: a new place
    return;
  }
  if (old) old.remove();
  if (before === group.key) return; // a row beyond the page shown: nothing to redraw
  if (before) queueCount(before, -1);
  if (queueMatches(job)) queueCount(group.key, 1);
  if (!queueView.collapsed.has(group.key) && queueMatches(job) && body.querySelectorAll(".job-row").length < queueLimit(group)) {
    if (group.order === "queue") queuePlace(body, fresh, job);
    else body.querySelector(".group-head").after(fresh);
    body.classList.remove("d-none");
    document.getElementById("queue-empty").classList.add("d-none");
  }
  queueSoon();
}

// The queued group is in the order the workers claim jobs (priority, then id): a row goes
// before the first row that runs after it.
function queuePlace(body, row, job) {
  const after = (other) => other.priority > job.priority || (other.priority === job.priority && other.id > job.id);
  const next = [...body.querySelectorAll(".job-row")].find((r) => r !== row && jobs.has(Number(r.id.slice(4))) && after(jobs.get(Number(r.id.slice(4)))));
  if (next) next.before(row);
  else if (body.querySelector(".group-more")) body.querySelector(".group-more").before(row);
  else body.append(row);
}

// Counted at once, so a group never shows a count behind its rows; the refresh confirms it.
function queueCount(key, delta) {
  const total = Math.max(0, (queueView.counts[key] || 0) + delta);
  queueView.counts[key] = total;
  const body = document.getElementById(`group-${key}`);
  body.querySelector(".group-count").textContent = total.toLocaleString();
  body.classList.toggle("d-none", total === 0 && !body.querySelector(".job-row"));
}

function queueSoon(delay = 300) {
  clearTimeout(queueView.timer);
  queueView.timer = setTimeout(() => queueLoad().catch((e) => toast(e.message, "danger", "queue-load")), delay);
}

// Counts first (one query), then each open group's first rows, all at once.
async function queueLoad() {
  if (queueView.running) { queueView.again = true; return queueView.running; }
  queueView.running = queueFetch();
  try { await queueView.running; } finally { queueView.running = null; }
  if (queueView.again) { queueView.again = false; await queueLoad(); }
}

async function queueFetch() {
  const q = encodeURIComponent(queueView.q.trim());
  const { counts } = await api("GET", `/api/jobs?limit=1&q=${q}`);
  const parts = await Promise.all(QUEUE_GROUPS.map(async (group) => {
    const statuses = group.statuses.filter((s) => s in counts); // `paused` only where the daemon has it
    const total = statuses.reduce((n, s) => n + counts[s], 0);
    if (!total || queueView.collapsed.has(group.key)) return [group, total, []];
    const data = await api("GET", `/api/jobs?status=${statuses.join(",")}&q=${q}&order=${group.order || "newest"}&limit=${queueLimit(group)}`);
    return [group, total, data.jobs];
  }));
  for (const [group, total, list] of parts) queueRender(group, total, list);
  const empty = parts.every(([, total]) => total === 0);
  const note = document.getElementById("queue-empty");
  note.classList.toggle("d-none", !empty);
  if (empty && queueView.q.trim()) note.textContent = `No job matches “${queueView.q.trim()}”.`;
  else if (empty) note.replaceChildren("Nothing queued. Use ", el("b", {}, "Add"), " to download a model.");
}

function queueRender(group, total, list) {
  const body = document.getElementById(`group-${group.key}`);
  queueView.counts[group.key] = total;
  body.classList.toggle("d-none", total === 0);
  body.querySelector(".group-count").textContent = total.toLocaleString();
  for (const node of body.querySelectorAll(".job-row, .group-more")) node.remove();
  const rows = list.map((job) => {
    queueView.groupOf.set(job.id, group.key);
    if (!jobs.has(job.id)) jobs.set(job.id, job); // the live feed keeps what it already knows
    return queueLabel(jobRow(job));
  });
  body.append(...rows);
  if (!queueView.collapsed.has(group.key) && total > list.length) {
    const more = Math.min(QUEUE_PAGE, total - list.length);
    body.append(el("tr", { class: "group-more" }, el("td", { colspan: 8 },
      el("button", { type: "button", class: "btn btn-link btn-sm p-0 show-more", onclick: () => { queueView.shown[group.key] = list.length + QUEUE_PAGE; queueLoad(); } },
        `Show ${more} more (${(total - list.length).toLocaleString()} not shown)`))));
  }
}

// Jobs that left the history: their rows go at once, and a refresh recounts the groups.
function queueForget(ids) {
  for (const id of ids) {
    const row = document.getElementById(`job-${id}`);
    if (row) row.remove();
    jobs.delete(id);
    queueView.groupOf.delete(id);
    selectedJobs.delete(id); // controls.js
  }
  selectionBar();
  queueSoon(50);
}

function queueCollapse(group) {
  const c = queueView.collapsed;
  if (c.has(group.key)) c.delete(group.key); else c.add(group.key);
  localStorage.setItem("queue-collapsed", JSON.stringify([...c]));
  document.querySelector(`#group-${group.key} .group-toggle`).setAttribute("aria-expanded", String(!c.has(group.key)));
  queueLoad().catch((e) => toast(e.message, "danger"));
}

async function queueClear(group) {
  const statuses = group.statuses.filter((s) => s !== "paused");
  const q = queueView.q.trim();
  const result = await act(api("POST", "/api/jobs/clear", q ? { statuses, q } : { statuses }),
    (r) => `Cleared ${r.cleared} job${r.cleared === 1 ? "" : "s"} from the list; the files stay.`);
  if (result) { queueView.shown[group.key] = QUEUE_PAGE; await queueLoad(); }
}

queueBuild();
document.getElementById("queue-search").addEventListener("input", (event) => {
  queueView.q = event.target.value;
  queueView.shown = {};
  queueSoon(250);
});

// The Follows tab (issue 28): each follow with its last check and what that found; a rule's dry
// run (POST /api/follows?dry_run=true) shown as a table before Follow saves it; Check now and
// Remove. Browse's Follow buttons fill the form through followFrom(rule).
// Uses api, act, el, bytes, when, toast and isAdmin from client.js (loaded first).
"use strict";

const FOLLOW_STATES = {
  new: "take now", existing: "seen: not taken", held: "hold: early access", filtered: "leave out",
  unavailable: "nothing to download", queued: "queued", downloaded: "downloaded already",
  notified: "notified", taken: "taken before",
};

const followEl = (id) => document.getElementById(id);
let followDraft = null; // the rule the preview on screen was made for

function followRule() {
  const list = (id) => followEl(id).value.split(",").map((s) => s.trim()).filter(Boolean);
  const kind = followEl("follow-kind").value;
  const rule = {
    [kind]: followEl("follow-value").value.trim(),
    mode: followEl("follow-mode").value,
    track: followEl("follow-track").checked,
    nsfw: followEl("follow-nsfw").checked,
    backlog: followEl("follow-backlog").checked ? "take" : "skip",
  };
  if (list("follow-types").length) rule.types = list("follow-types");
  if (list("follow-bases").length) rule.baseModels = list("follow-bases");
  const mb = Number(followEl("follow-max").value);
  if (mb > 0) rule.max_size = Math.round(mb * 1e6);
  if (kind === "query") {
    for (const key of ["sort", "period"]) if (followEl(`follow-${key}`).value) rule[key] = followEl(`follow-${key}`).value;
  }
  return rule;
}

function followState(item) {
  const text = FOLLOW_STATES[item.state] || item.state;
  const until = item.until ? ` until ${when(item.until)}` : "";
  return el("span", { class: `follow-state follow-${item.state}`, title: item.problem || "" }, text + until, item.problem ? el("div", { class: "text-body-secondary" }, item.problem) : null);
}

function showFollowPreview(result) {
  const items = result.items || [];
  const taking = items.filter((i) => i.state === "new").length;
  followEl("follow-summary").textContent = `${result.title}: ${result.listed} listed now, ${taking} would be taken; after that, each check takes the new models only.`;
  followEl("follow-preview-body").replaceChildren(...items.map((i) => el("tr", { class: "follow-item", "data-model-id": i.modelId },
    el("td", {}, i.name || `model ${i.modelId}`),
    el("td", {}, i.versionName || ""),
    el("td", { class: "text-break" }, i.filename || ""),
    el("td", { class: "text-nowrap" }, i.size === null || i.size === undefined ? "" : bytes(i.size)),
    el("td", {}, i.folder ? `${i.folder}/` : ""),
    el("td", {}, followState(i)))));
  if (!items.length) followEl("follow-preview-body").replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "text-body-secondary" }, "Civitai lists nothing for this rule now.")));
  followEl("follow-result").classList.remove("d-none");
}

async function previewFollow() {
  const rule = followRule();
  followEl("follow-error").classList.add("d-none");
  followEl("follow-result").classList.add("d-none");
  followEl("follow-preview").disabled = true;
  try {
    showFollowPreview(await api("POST", "/api/follows?dry_run=true", rule));
    followDraft = rule;
  } catch (err) {
    followEl("follow-error").textContent = err.message;
    followEl("follow-error").classList.remove("d-none");
  } finally {
    followEl("follow-preview").disabled = false;
  }
}

function followFound(result) {
  if (!result) return "not checked yet";
  if (result.error) return `error: ${result.error}`;
  const names = (result.new || []).slice(0, 3).map((i) => i.name).filter(Boolean);
  const held = (result.held || []).map((i) => `${i.name} (early access until ${i.until ? when(i.until) : "a date Civitai did not give"})`);
  const parts = [`${(result.new || []).length} new${names.length ? `: ${names.join(", ")}` : ""}`];
  if (held.length) parts.push(`held: ${held.join(", ")}`);
  if (result.gap) parts.push(result.gap);
  return parts.join(" · ");
}

function followRow(f) {
  const buttons = isAdmin ? el("div", { class: "d-flex gap-1 justify-content-end" },
    el("button", { type: "button", class: "btn btn-outline-primary btn-sm text-nowrap follow-check", onclick: () => checkFollow(f) }, "Check now"),
    el("button", { type: "button", class: "btn btn-outline-danger btn-sm follow-remove", onclick: () => removeFollow(f) }, "Remove")) : null;
  const filters = [...(f.types || []), ...(f.baseModels || [])].join(", ");
  return el("tr", { class: "follow-row", "data-follow-id": f.id },
    el("td", {}, el("b", { class: "follow-title" }, f.title), filters ? el("div", { class: "text-body-secondary" }, filters) : null),
    el("td", { class: "follow-mode" }, f.mode + (f.track ? " + track" : "")),
    el("td", { class: "text-nowrap follow-last" }, f.last_check ? when(f.last_check) : "never"),
    el("td", { class: "follow-found" }, followFound(f.last_result)),
    el("td", {}, buttons));
}

async function loadFollows() {
  const data = await act(api("GET", "/api/follows"));
  if (!data) return;
  followEl("follows-body").replaceChildren(...data.follows.map(followRow));
  followEl("follows-empty").classList.toggle("d-none", data.follows.length > 0);
}

async function checkFollow(f) {
  const result = await act(api("POST", `/api/follows/${f.id}/check`), (r) => `${r.title}: ${followFound(r)}.`);
  if (result) loadFollows();
}

async function removeFollow(f) {
  if (!window.confirm(`Stop following ${f.title}? What it queued or downloaded stays.`)) return;
  if (await act(api("DELETE", `/api/follows/${f.id}`), `No longer following ${f.title}.`)) loadFollows();
}

// Browse's Follow buttons: the form filled with the creator or the search, and its dry run shown.
function followFrom(rule) {
  const kind = ["username", "query", "tag"].find((k) => rule[k] !== undefined);
  followEl("follow-kind").value = kind;
  followEl("follow-value").value = rule[kind];
  followEl("follow-types").value = (rule.types || []).join(", ");
  followEl("follow-bases").value = (rule.baseModels || []).join(", ");
  followEl("follow-sort").value = rule.sort || "";
  followEl("follow-period").value = rule.period || "";
  bootstrap.Tab.getOrCreateInstance(followEl("nav-follows")).show();
  previewFollow();
}

followEl("nav-follows").addEventListener("shown.bs.tab", loadFollows);
document.addEventListener("check-summary", () => { if (followEl("tab-follows").classList.contains("active")) loadFollows(); });
if (isAdmin) {
  followEl("follow-form").addEventListener("submit", (event) => { event.preventDefault(); previewFollow(); });
  // A rule changed after its preview is previewed again before it can be saved.
  followEl("follow-form").addEventListener("input", () => { followDraft = null; followEl("follow-result").classList.add("d-none"); });
  followEl("follow-save").addEventListener("click", async () => {
    const made = await act(api("POST", "/api/follows", followDraft || followRule()), (f) => `Following ${f.title}; checked with the daily update check.`);
    if (made) {
      followEl("follow-result").classList.add("d-none");
      loadFollows();
    }
  });
}

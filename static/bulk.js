// The Add tab's "A creator's models": preview a Civitai creator's models, pick, queue them
// (POST /api/bulk/preview, then POST /api/bulk). Uses api, act, el, bytes, toast and upsertJob
// from client.js.
"use strict";

(() => {
  const STATE_TEXT = { new: "new", queued: "queued", downloaded: "downloaded", unavailable: "unavailable" };
  const STATE_STYLE = { new: "primary", queued: "secondary", downloaded: "success", unavailable: "warning" };
  let previewed = [];

  const $ = (id) => document.getElementById(id);

  function checked() {
    return [...document.querySelectorAll(".bulk-pick:checked")].map((box) => previewed[Number(box.dataset.index)]);
  }

  function updateSelection() {
    const picked = checked();
    const size = picked.reduce((sum, item) => sum + (item.size || 0), 0);
    $("bulk-selected").textContent = `${picked.length} selected · ${bytes(size)}`;
    $("bulk-download").disabled = picked.length === 0;
    const boxes = document.querySelectorAll(".bulk-pick:not(:disabled)");
    $("bulk-all").checked = boxes.length > 0 && picked.length === boxes.length;
  }

  function row(item, index) {
    const pickable = item.state === "new";
    const box = el("input", { class: "form-check-input bulk-pick", type: "checkbox", "data-index": index, "aria-label": `Select ${item.name}` });
    box.checked = pickable;
    box.disabled = !pickable;
    box.addEventListener("change", updateSelection);
    const state = el("span", { class: `badge text-bg-${STATE_STYLE[item.state] || "secondary"}` }, STATE_TEXT[item.state] || item.state);
    const why = item.problem || item.path || (item.job_id ? `job ${item.job_id} (${item.job_status})` : "");
    return el("tr", { class: "bulk-row", "data-model-id": item.modelId },
      el("td", {}, box),
      el("td", {}, item.name || `model ${item.modelId}`, el("div", { class: "text-body-secondary" }, `${item.type || ""}${item.nsfw ? " · NSFW" : ""}`)),
      el("td", {}, item.versionName || "–"),
      el("td", { class: "d-none d-md-table-cell" }, item.baseModel || "–"),
      el("td", { class: "text-break" }, item.filename || "–"),
      el("td", { class: "text-nowrap bulk-size" }, item.size === undefined ? "–" : bytes(item.size)),
      el("td", {}, state, why ? el("div", { class: "text-body-secondary text-break bulk-why" }, why) : null));
  }

  function show(preview) {
    previewed = preview.items;
    const t = preview.totals;
    $("bulk-summary").textContent = `${preview.username}: ${preview.items.length} model(s) · ${t.models} to fetch, ${bytes(t.bytes)} in all · ` +
      `${t.new} new (${bytes(t.new_bytes)}), ${t.downloaded} downloaded, ${t.queued} queued${t.unavailable ? `, ${t.unavailable} unavailable` : ""}.`;
    $("bulk-limit").textContent = preview.limit.detail || "";
    $("bulk-limit").classList.toggle("d-none", !preview.limit.detail);
    $("bulk-body").replaceChildren(...previewed.map(row));
    $("bulk-result").classList.remove("d-none");
    updateSelection();
  }

  function clear() {
    previewed = [];
    $("bulk-result").classList.add("d-none");
    $("bulk-body").replaceChildren();
    $("bulk-error").classList.add("d-none");
    $("bulk-error").textContent = "";
    $("bulk-download").disabled = true;
  }

  $("bulk-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    clear();
    const username = $("bulk-username").value.trim();
    const type = $("bulk-type").value;
    const button = $("bulk-preview-button");
    button.disabled = true;
    try {
      show(await api("POST", "/api/bulk/preview", { username, types: type ? [type] : [], nsfw: $("bulk-nsfw").checked }));
    } catch (err) {
      $("bulk-error").textContent = `Preview of ${username} failed: ${err.message}`;
      $("bulk-error").classList.remove("d-none");
    } finally {
      button.disabled = false;
    }
  });

  $("bulk-all").addEventListener("change", () => {
    for (const box of document.querySelectorAll(".bulk-pick:not(:disabled)")) box.checked = $("bulk-all").checked;
    updateSelection();
  });

  $("bulk-download").addEventListener("click", async () => {
    const items = checked().map((item) => ({ modelVersionId: item.modelVersionId, fileId: item.fileId, model_type: item.model_type }));
    if (!items.length) return;
    $("bulk-download").disabled = true;
    let result;
    try {
      result = await api("POST", "/api/bulk", { items, track: $("bulk-track").checked });
    } catch (err) {
      result = err.data && err.data.errors ? err.data : null;
      toast(err.message, "danger");
    }
    if (!result) { updateSelection(); return; }
    for (const job of result.jobs) upsertJob(job);
    const problems = result.errors || [];
    for (const problem of problems) toast(`Version ${items[problem.index].modelVersionId}: ${problem.detail}`, "danger");
    if (result.jobs.length) toast(`Queued ${result.jobs.length} model(s)${problems.length ? `; ${problems.length} refused` : ""}.`, problems.length ? "warning" : "success");
    const byVersion = new Map(result.jobs.map((job) => [job.modelVersionId, job]));
    for (const box of document.querySelectorAll(".bulk-pick:checked")) {
      const job = byVersion.get(previewed[Number(box.dataset.index)].modelVersionId);
      if (!job) continue; // refused: it stays picked, with the reason in a toast
      const badge = box.closest("tr").querySelector(".badge");
      badge.className = `badge text-bg-${job.duplicate ? "success" : "secondary"}`;
      badge.textContent = job.duplicate ? "downloaded" : "queued";
      box.checked = false;
      box.disabled = true;
    }
    updateSelection();
  });
})();

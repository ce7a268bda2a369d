// The Browse tab: search Civitai (GET /api/civitai/models), a grid of cards with previews through
// the daemon (GET /api/civitai/image), more by cursor (a button, and by itself when it scrolls
// into view), a card's versions and files with Download / Download and track (admins only).
// Uses api, el, bytes, when, toast, upsertJob, isAdmin and ROOT from client.js (loaded first).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const STATE_STYLE = { downloaded: "success", queued: "secondary" };
  // Civitai's type names as the Type filter shows them (LORA → LoRA, TextualInversion →
  // Embedding): one map, read from the filter, for the cards and the dialog alike.
  const TYPE_NAMES = new Map([...document.querySelectorAll("#browse-type option")].filter((o) => o.value).map((o) => [o.value.toLowerCase(), o.textContent]));
  const typeName = (type) => (type ? TYPE_NAMES.get(String(type).toLowerCase()) || type : "");
  const LIMIT = 20;
  const shown = new Map(); // model id -> item, in the order shown
  let cursor = null; // the next page's cursor; null: no more
  let asked = null; // the query string of the search on screen
  let loading = false;
  let generation = 0; // a newer search makes an older answer stale
  let opened = null; // the item whose versions the dialog shows
  let started = false;

  function query(params) {
    const q = new URLSearchParams({ limit: String(LIMIT), ...params });
    const text = $("browse-query").value.trim();
    const type = $("browse-type").value;
    const base = $("browse-base").value;
    if (text) q.set("query", text);
    if (type) q.append("types", type);
    if (base) q.append("baseModels", base);
    q.set("sort", $("browse-sort").value);
    q.set("period", $("browse-period").value);
    return q;
  }

  function thumbUrl(image, width) {
    return `${ROOT}/api/civitai/image?url=${encodeURIComponent(image.url)}&width=${width}`;
  }

  function placeholder(text = "No preview") {
    return el("div", { class: "browse-thumb browse-noimg d-flex align-items-center justify-content-center text-body-secondary small" }, text);
  }

  // A preview that fails to load becomes the placeholder (a card never shows a broken image).
  function preview(image, width, extra = "") {
    if (!image || !image.url) return placeholder();
    const img = el("img", { class: `browse-thumb ${extra}`, alt: "", loading: "lazy", decoding: "async", src: thumbUrl(image, width) });
    img.addEventListener("error", () => img.replaceWith(placeholder("Preview unavailable")), { once: true });
    return img;
  }

  function primaryFile(version) {
    const files = (version && version.files) || [];
    return files.find((f) => f.primary) || files[0] || null;
  }

  function count(n) {
    if (n === null || n === undefined) return "–";
    if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
    if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
    return String(n);
  }

  // The rating where Civitai still gives one, else its thumbs up (what it rates by since 2024).
  function score(stats) {
    if (stats.rating) return `★ ${Number(stats.rating).toFixed(1)}${stats.ratingCount ? ` (${count(stats.ratingCount)})` : ""}`;
    return `▲ ${count(stats.thumbsUpCount || 0)}`;
  }

  function stateBadge(state, extra = "") {
    if (!state) return null;
    return el("span", { class: `badge text-bg-${STATE_STYLE[state] || "secondary"} browse-state ${extra}` }, state);
  }

  function card(item) {
    const newest = (item.versions || [])[0];
    const file = primaryFile(newest);
    const stats = item.stats || {};
    const rating = score(stats);
    const open = el("button", { type: "button", class: "btn btn-link stretched-link p-0 text-start text-body fw-semibold text-decoration-none browse-name", onclick: () => openModel(item.id) }, item.name || "Unnamed model");
    return el("div", { class: "col" },
      el("div", { class: "card h-100 browse-card", "data-model-id": item.id },
        el("div", { class: "position-relative" },
          preview(item.image, 320, "card-img-top"),
          el("div", { class: "position-absolute top-0 start-0 m-2 d-flex gap-1 flex-wrap" },
            el("span", { class: "badge text-bg-dark browse-type" }, typeName(item.type)),
            item.nsfw ? el("span", { class: "badge text-bg-danger" }, "NSFW") : null),
          el("div", { class: "position-absolute top-0 end-0 m-2" }, stateBadge(item.state))),
        el("div", { class: "card-body p-2 d-flex flex-column gap-1" },
          open,
          el("div", { class: "small text-body-secondary d-flex align-items-center gap-1" },
            el("span", { class: "text-truncate" }, item.creator ? `by ${item.creator}` : ""),
            isAdmin && item.creator ? el("button", { type: "button", class: "btn btn-outline-primary btn-sm py-0 px-1 ms-auto browse-follow-creator", title: `Follow ${item.creator}: their new models, checked daily`, onclick: () => followFrom({ username: item.creator }) }, "Follow") : null),
          el("div", { class: "small d-flex flex-wrap gap-1 align-items-center mt-auto" },
            newest && newest.baseModel ? el("span", { class: "badge text-bg-info browse-base" }, newest.baseModel) : null,
            el("span", { class: "browse-size text-nowrap" }, file ? bytes(file.size) : "–")),
          el("div", { class: "small text-body-secondary d-flex gap-3" },
            el("span", { class: "browse-downloads text-nowrap", title: `${stats.downloadCount || 0} downloads` }, `↓ ${count(stats.downloadCount)}`),
            el("span", { class: "browse-rating text-nowrap", title: stats.rating ? "rating" : "thumbs up" }, rating)))));
  }

  function render(items, replace) {
    const grid = $("browse-grid");
    const fresh = items.filter((item) => !shown.has(item.id)); // a page may repeat a model
    for (const item of fresh) shown.set(item.id, item);
    const cards = fresh.map(card);
    if (replace) grid.replaceChildren(...cards);
    else grid.append(...cards);
    $("browse-summary").textContent = shown.size ? `${shown.size} model${shown.size === 1 ? "" : "s"}${cursor ? ", more below" : ""}.` : "No model matches this search.";
    $("browse-more").classList.toggle("d-none", !cursor);
  }

  async function search(more = false) {
    if (more && (loading || !cursor)) return;
    const mine = more ? generation : ++generation;
    const params = more ? new URLSearchParams(asked) : query({});
    if (more) params.set("cursor", cursor);
    else asked = params.toString();
    loading = true;
    $("browse-more").disabled = true;
    $("browse-button").disabled = !more;
    try {
      const answer = await api("GET", `/api/civitai/models?${params}`);
      if (mine !== generation) return; // a newer search is on its way
      if (!more) shown.clear();
      cursor = answer.nextCursor || null;
      render(answer.items || [], !more);
    } catch (err) {
      if (mine === generation) toast(err.message, "danger", "browse-error");
    } finally {
      if (mine === generation) {
        loading = false;
        $("browse-more").disabled = false;
        $("browse-button").disabled = false;
      }
    }
  }

  // The dialog: versions and their files ----------------------------------------------------

  function folderHint() {
    const type = $("browse-model-type").value.trim();
    $("browse-folder").textContent = !type ? "Name a type or a folder."
      : type === opened.model_type && opened.folder ? `Goes to ${opened.folder}/ under the layout.`
        : `Goes to the folder the layout gives ${type}.`;
  }

  // A version's state changed here: its badge in the dialog and its model's card follow.
  function mark(item, version, state) {
    version.state = state;
    const states = (item.versions || []).map((v) => v.state);
    item.state = item.state === "downloaded" || states.includes("downloaded") ? "downloaded" : states.includes("queued") ? "queued" : null;
    const badge = opened === item && document.querySelector(`.browse-version[data-version-id="${version.id}"] .browse-version-state`);
    if (badge) badge.replaceChildren(stateBadge(state));
    const old = document.querySelector(`.browse-card[data-model-id="${item.id}"]`);
    if (old) old.parentElement.replaceWith(card(item));
  }

  // Each job's news (client.js's "job" event): a version queued here is downloaded once it completes.
  document.addEventListener("job", (event) => {
    const job = event.detail;
    const state = job.status === "completed" ? "downloaded" : ["failed", "cancelled"].includes(job.status) ? null : "queued";
    for (const item of shown.values()) {
      const version = (item.versions || []).find((v) => v.id === job.modelVersionId);
      if (version && version.state !== "downloaded" && version.state !== state) mark(item, version, state);
    }
  });

  async function queue(version, f, track, button) {
    const item = opened;
    const type = $("browse-model-type").value.trim();
    button.disabled = true;
    try {
      const job = await api("POST", "/api/download", { modelVersionId: version.id, fileId: f.id, model_type: type || undefined, track });
      upsertJob(job);
      toast(job.duplicate ? `${job.filename} is already downloaded.` : `Queued ${job.filename}${track ? " (tracked for updates)" : ""}.`);
      if (version.state !== "downloaded") mark(item, version, job.duplicate ? "downloaded" : "queued"); // the feed may be first
    } catch (err) {
      toast(err.message, "danger");
    } finally {
      button.disabled = false;
    }
  }

  // A file: its name (the primary one marked) and size, then its buttons (beneath on a phone).
  function fileRow(version, f) {
    const buttons = isAdmin ? el("div", { class: "d-flex gap-1 ms-auto" },
      el("button", { type: "button", class: "btn btn-success btn-sm text-nowrap browse-download", onclick: (e) => queue(version, f, false, e.currentTarget) }, "Download"),
      el("button", { type: "button", class: "btn btn-outline-success btn-sm text-nowrap browse-track", onclick: (e) => queue(version, f, true, e.currentTarget) }, "Download and track")) : null;
    return el("div", { class: "d-flex flex-wrap align-items-center gap-2 py-1 border-top small browse-file", "data-file-id": f.id },
      el("div", { class: "browse-file-name" }, f.name, f.primary ? el("span", { class: "badge text-bg-primary ms-1 browse-primary" }, "primary") : null,
        f.type && f.type !== "Model" ? el("span", { class: "text-body-secondary" }, ` · ${f.type}`) : null),
      el("span", { class: "text-body-secondary text-nowrap browse-file-details" }, [f.format, f.fp, f.pruned].filter(Boolean).join(" · ")),
      el("span", { class: "text-nowrap browse-file-size" }, bytes(f.size)),
      buttons);
  }

  function versionBlock(version) {
    const early = version.earlyAccessEndsAt && Date.parse(version.earlyAccessEndsAt) > Date.now()
      ? el("div", { class: "small text-warning-emphasis browse-early" }, `Early access until ${when(version.earlyAccessEndsAt)}: Civitai lets only its supporters download it before then.`)
      : null;
    return el("div", { class: "list-group-item browse-version", "data-version-id": version.id },
      el("div", { class: "d-flex flex-wrap align-items-center gap-2 mb-1" },
        el("span", { class: "fw-semibold" }, version.name || "Unnamed version"),
        version.baseModel ? el("span", { class: "badge text-bg-info" }, version.baseModel) : null,
        el("span", { class: "browse-version-state" }, stateBadge(version.state)),
        version.publishedAt ? el("span", { class: "small text-body-secondary ms-auto" }, `published ${when(version.publishedAt)}`) : null),
      early,
      triggerWords(version),
      imageStrip(version),
      ...(version.files || []).map((f) => fileRow(version, f)));
  }

  // The words that call the model up in a prompt, with a button that copies them all.
  function triggerWords(version) {
    const words = version.trainedWords || [];
    if (!words.length) return null;
    const copy = el("button", { type: "button", class: "btn btn-outline-secondary btn-sm py-0 browse-copy-words" }, "Copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(words.join(", "));
        toast(`Copied the trigger words of ${version.name || "this version"}.`);
      } catch (err) {
        toast("The browser did not let the page copy: select the words and press Ctrl+C.", "warning");
      }
    });
    return el("div", { class: "d-flex flex-wrap align-items-center gap-1 small my-1" },
      el("span", { class: "text-body-secondary" }, "Trigger words:"),
      ...words.map((w) => el("code", { class: "browse-trigger user-select-all" }, w)), copy);
  }

  // Example images through the daemon; an NSFW one blurred unless show_nsfw allows it, until a
  // click shows that one.
  function imageStrip(version) {
    const images = (version.images || []).filter((i) => i.type !== "video");
    if (!images.length) return null;
    return el("div", { class: "d-flex gap-1 overflow-auto py-1 browse-strip" },
      ...images.map((image) => {
        const img = el("img", { class: `browse-strip-img${image.blur ? " browse-blur" : ""}`, alt: "", loading: "lazy", decoding: "async", src: thumbUrl(image, 200) });
        img.addEventListener("error", () => img.remove(), { once: true });
        if (image.blur) {
          img.title = "NSFW: click to show it";
          img.addEventListener("click", () => { img.classList.remove("browse-blur"); img.removeAttribute("title"); }, { once: true });
        }
        return img;
      }));
  }

  function openModel(id) {
    opened = shown.get(id);
    if (!opened) return;
    const item = opened;
    $("browse-modal-title").textContent = item.name || "Unnamed model";
    const stats = item.stats || {};
    $("browse-modal-meta").replaceChildren([typeName(item.type), item.creator ? `by ${item.creator}` : "", `${count(stats.downloadCount)} downloads`,
      score(stats)].filter(Boolean).join(" · "),
      item.page ? el("a", { class: "ms-2 browse-page-link", href: item.page, target: "_blank", rel: "noopener noreferrer" }, "Open on Civitai ↗") : "");
    $("browse-modal-image").replaceChildren(preview(item.image, 640),
      item.description ? el("p", { class: "small mt-2 mb-0 browse-description" }, item.description) : "");
    if (isAdmin) {
      $("browse-model-type").value = item.model_type || "";
      folderHint();
    }
    $("browse-versions").replaceChildren(...(item.versions || []).map(versionBlock));
    bootstrap.Modal.getOrCreateInstance($("browse-modal")).show();
  }

  // Wiring ------------------------------------------------------------------------------------

  $("browse-form").addEventListener("submit", (event) => { event.preventDefault(); search(); });
  for (const id of ["browse-type", "browse-base", "browse-sort", "browse-period"]) $(id).addEventListener("change", () => search());
  $("browse-query").addEventListener("search", () => { if (!$("browse-query").value) search(); }); // the ✕ of the box
  $("browse-more").addEventListener("click", () => search(true));
  // Follow search: the search as it is on screen, its new models checked daily (follows.js).
  $("browse-follow").addEventListener("click", () => {
    const q = query({});
    const rule = { query: q.get("query") || "", types: q.getAll("types"), baseModels: q.getAll("baseModels"), sort: q.get("sort"), period: q.get("period") };
    if (!rule.query && !rule.types.length && !rule.baseModels.length) toast("Type words, or pick a type or a base model, to follow a search.", "warning");
    else followFrom(rule);
  });
  if (isAdmin) $("browse-model-type").addEventListener("input", folderHint);
  $("nav-browse").addEventListener("shown.bs.tab", () => { if (!started) { started = true; search(); } });
  // Infinite scroll: "Load more" loads by itself once it scrolls into view.
  if ("IntersectionObserver" in window) {
    new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) search(true); }, { rootMargin: "0px 0px 200px 0px" }).observe($("browse-more"));
  }
})();

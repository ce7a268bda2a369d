// Shared by the background, the popup and the options page: the daemon's address and key, calls
// to its API, and which model a page's URL names. No page's markup is read: the URL says it all.
"use strict";

const ext = globalThis.browser ?? globalThis.chrome; // Firefox's promise API, else Chromium's
const SITES = ["civitai.com", "civitai.red", "civitai.green", "huggingface.co"];
const PAGE_PATTERNS = SITES.flatMap((s) => [`https://${s}/*`, `https://www.${s}/*`]);

async function loadSettings() {
  const { daemonUrl = "", apiKey = "" } = await ext.storage.local.get(["daemonUrl", "apiKey"]);
  return { daemonUrl: daemonUrl.replace(/\/+$/, ""), apiKey };
}

// A call to the daemon's API with the key as `Authorization: Bearer`; a refusal becomes an Error
// holding the daemon's own sentence ({"detail": …}).
async function daemonCall(method, path, body) {
  const { daemonUrl, apiKey } = await loadSettings();
  if (!daemonUrl || !apiKey) throw new Error("Set the daemon's URL and API key in the extension's options first.");
  let response;
  try {
    response = await fetch(daemonUrl + path, {
      method,
      headers: { Authorization: `Bearer ${apiKey}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      credentials: "omit",
    });
  } catch (err) {
    throw new Error(`The daemon at ${daemonUrl} did not answer (is it running, and is this extension's origin, ${self.location.origin}, in its allowed_origins?).`);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = data && typeof data.detail === "string" ? data.detail : `HTTP ${response.status}`;
    throw new Error(`The daemon refused: ${detail}`);
  }
  return data;
}

// What a page's URL names: {site: "civitai", modelId, versionId} (versionId null when the page
// names only the model), {site: "hf", url} for a file on the Hub, or null.
function modelOfUrl(text) {
  let url;
  try { url = new URL(text); } catch { return null; }
  const host = url.hostname.replace(/^www\./, "");
  if (url.protocol !== "https:" || !SITES.includes(host)) return null;
  if (host === "huggingface.co") {
    // …/<owner>/<repo>/(blob|resolve)/<revision>/<path>, also under datasets/ or spaces/
    return /^\/(?:(?:datasets|spaces)\/)?[^/]+\/[^/]+\/(?:blob|resolve)\/[^/]+\/.+/.test(url.pathname) ? { site: "hf", url: url.href } : null;
  }
  const version = url.searchParams.get("modelVersionId");
  let m = /^\/models\/(\d+)(?:\/[^/]*)?\/?$/.exec(url.pathname);
  if (m) return { site: "civitai", modelId: Number(m[1]), versionId: /^\d+$/.test(version || "") ? Number(version) : null };
  m = /^\/api\/download\/models\/(\d+)\/?$/.exec(url.pathname);
  if (m) return { site: "civitai", modelId: null, versionId: Number(m[1]) };
  return null;
}

// The folders a Hub file may go to (the daemon's model_type): off Civitai, the person says which.
const FOLDERS = ["checkpoint", "lora", "vae", "embedding", "controlnet", "upscaler", "text_encoders", "diffusion_models", "clip_vision", "other"];

// Queue what the page names: the page's version, or the one chosen; a Hub file by its URL into
// the folder chosen.
async function sendModel(model, chosenVersionId, modelType) {
  if (model.site === "hf") {
    if (!modelType) throw new Error("Choose the folder for this file.");
    return daemonCall("POST", "/api/download", { url: model.url, model_type: modelType });
  }
  const versionId = chosenVersionId || model.versionId;
  if (!versionId) throw new Error("This page names only the model: choose a version.");
  return daemonCall("POST", "/api/download", { modelVersionId: versionId });
}

const BADGES = { downloaded: ["✓", "#198754"], queued: ["Q", "#0d6efd"], "update available": ["new", "#fd7e14"] };

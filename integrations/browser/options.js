// Options: the daemon's URL and key, kept in storage.local; saving tests them at once.
"use strict";

const origin = window.location.origin; // chrome-extension://<id> or moz-extension://<uuid>
document.getElementById("origin").textContent = origin;

(async () => {
  const { daemonUrl, apiKey } = await loadSettings();
  document.getElementById("daemon-url").value = daemonUrl;
  document.getElementById("api-key").value = apiKey;
})();

document.getElementById("options").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = document.getElementById("result");
  const daemonUrl = document.getElementById("daemon-url").value.trim().replace(/\/+$/, "");
  const apiKey = document.getElementById("api-key").value.trim();
  if (!/^https?:\/\/[^/]+(\/.*)?$/.test(daemonUrl)) {
    result.textContent = "The daemon's URL is http:// or https:// and its address, e.g. http://127.0.0.1:8137.";
    result.className = "error";
    return;
  }
  await ext.storage.local.set({ daemonUrl, apiKey });
  try {
    const status = await daemonCall("GET", "/api/status");
    result.textContent = `Saved. The daemon answers${status.version ? ` (version ${status.version})` : ""}.`;
    result.className = "";
  } catch (err) {
    result.textContent = `Saved, but: ${err.message}`;
    result.className = "error";
  }
});

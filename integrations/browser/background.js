// The background (Chromium: a service worker; Firefox: an event page, manifest "scripts"): the
// context-menu entry, and the badge saying what the daemon holds of the model a tab shows.
"use strict";

if (typeof importScripts === "function") importScripts("common.js"); // Firefox loads it first

const MENU = "civitai-daemon-send";

ext.runtime.onInstalled.addListener(() => {
  ext.contextMenus.create({
    id: MENU,
    title: "Send to Civitai Daemon",
    contexts: ["page", "link"],
    documentUrlPatterns: PAGE_PATTERNS,
    targetUrlPatterns: PAGE_PATTERNS,
  });
});

// A page or link naming a version is queued at once; one naming only the model opens the
// chooser (the popup's page in a tab) with the versions the daemon looks up, and a Hub file
// opens it to choose its folder.
async function sendFromUrl(url, tabId) {
  const model = modelOfUrl(url);
  if (!model) return { error: `${url} is not a Civitai model page or a Hugging Face file.` };
  if (model.site === "hf" || !model.versionId) { // a Hub file's folder, or a version: asked
    await ext.tabs.create({ url: ext.runtime.getURL(`popup.html?url=${encodeURIComponent(url)}`) });
    return { chooser: true };
  }
  try {
    const job = await sendModel(model);
    if (tabId !== undefined) await followTab(tabId); // the tab's own page: a link may name another
    return { job };
  } catch (err) {
    if (tabId !== undefined) {
      await ext.action.setBadgeText({ tabId, text: "!" });
      await ext.action.setTitle({ tabId, title: err.message });
    }
    return { error: err.message };
  }
}

ext.contextMenus.onClicked.addListener((info, tab) => {
  sendFromUrl(info.linkUrl || info.pageUrl, tab && tab.id);
});

// The badge: the daemon's answer for the page URL's ids (GET /api/civitai/state).
async function showState(tabId, url) {
  const model = modelOfUrl(url || "");
  let text = "";
  let title = "Civitai Daemon";
  if (model && model.site === "civitai") {
    const query = new URLSearchParams();
    if (model.modelId) query.set("modelId", model.modelId);
    if (model.versionId) query.set("modelVersionId", model.versionId);
    try {
      const answer = await daemonCall("GET", `/api/civitai/state?${query}`);
      const badge = BADGES[answer.state];
      if (badge) {
        [text] = badge;
        await ext.action.setBadgeBackgroundColor({ tabId, color: badge[1] });
        title = `Civitai Daemon: ${answer.state}`;
      }
    } catch (err) {
      title = err.message;
    }
  }
  await ext.action.setBadgeText({ tabId, text });
  await ext.action.setTitle({ tabId, title });
  return text;
}

// While the model is queued the badge is asked again every few seconds, so it turns ✓ when the
// download is verified; it stops when the tab is closed or shows another page.
const FOLLOW_MS = 2000;
const following = new Map(); // tabId -> the URL followed

async function follow(tabId, url) {
  following.set(tabId, url);
  const text = await showState(tabId, url);
  if (text !== BADGES.queued[0] || following.get(tabId) !== url) return;
  setTimeout(async () => {
    const tab = await ext.tabs.get(tabId).catch(() => null);
    if (tab && tab.url === url && following.get(tabId) === url) follow(tabId, url);
  }, FOLLOW_MS);
}

async function followTab(tabId) {
  const tab = await ext.tabs.get(tabId).catch(() => null);
  if (tab) await follow(tabId, tab.url);
}

ext.tabs.onUpdated.addListener((tabId, change, tab) => {
  if (change.url || change.status === "complete") follow(tabId, tab.url);
});
ext.tabs.onActivated.addListener(async ({ tabId }) => {
  const tab = await ext.tabs.get(tabId);
  follow(tabId, tab.url);
});
ext.tabs.onRemoved.addListener((tabId) => following.delete(tabId));

// The popup asks here, so a send and the badge it changes are one step.
ext.runtime.onMessage.addListener((message, sender, reply) => {
  if (message && message.type === "send") {
    const model = modelOfUrl(message.url || "");
    const send = model
      ? sendModel(model, message.versionId, message.modelType).then((job) => ({ job }), (err) => ({ error: err.message }))
      : Promise.resolve({ error: `${message.url} is not a Civitai model page or a Hugging Face file.` });
    send.then(async (result) => {
      if (message.tabId !== undefined && !result.error) await followTab(message.tabId);
      reply(result);
    });
    return true; // the answer comes later
  }
  return false;
});

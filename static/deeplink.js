// The deep link /gui/add?url=… and the bookmarklet that opens it (issue 25).
"use strict";

(() => {
  const appNode = document.getElementById("app");
  const root = appNode.dataset.root || "";
  const daemon = `${window.location.origin}${root}`;

  // The bookmarklet runs on the other site's page: it only opens our deep link with that page's
  // URL, so no code of ours runs there and the site's CSP has nothing to refuse.
  const link = document.getElementById("bookmarklet");
  if (link) {
    link.href = `javascript:void(location.href=${JSON.stringify(`${daemon}/gui/add?url=`)}+encodeURIComponent(location.href))`;
    // Clicked here, the GUI's own CSP would refuse it: say what it is for instead.
    link.addEventListener("click", (event) => {
      event.preventDefault();
      toast("Drag this button to your bookmarks bar, then click it on a model's page.", "info");
    });
  }

  const wanted = (appNode.dataset.addUrl || "").trim();
  if (!wanted || appNode.dataset.role !== "admin") {
    if (wanted) toast("Adding a model needs the API key; this session has the viewer key.", "warning");
    return;
  }
  // A clean address again: a reload shows the GUI, it does not look the model up twice.
  window.history.replaceState(null, "", `${root}/gui`);
  bootstrap.Tab.getOrCreateInstance(document.getElementById("nav-add")).show();
  const civitai = /^\d+$/.test(wanted) || /^urn:air:/i.test(wanted) || (() => {
    try { return /(^|\.)civitai\.(com|red|green)$/i.test(new URL(wanted).hostname); } catch { return false; }
  })();
  if (civitai) {
    document.getElementById("lookup-input").value = wanted;
    document.getElementById("lookup-form").requestSubmit();
  } else {
    // A Hugging Face file (or any direct URL): no look-up to show, it is one "Queue all" away.
    document.getElementById("batch-urls").value = wanted;
    document.getElementById("batch-urls").focus();
  }
})();

// Toasts: one per message (a repeat adds to its ×N count), at most TOAST_MAX in view, in a dock
// below the page (never over it). Successes and notes go by themselves; errors stay until closed.
"use strict";

const TOAST_MAX = 3;
const TOAST_DELAY = 5000; // ms a success or a note stays
const toastsByKey = new Map(); // key -> { node, body, count, kind, timer }

function toastNode(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// `key`: toasts with the same key are one toast (its text becomes the latest message, its
// count grows); by default the same words of the same kind. `action` ({label, run}): a link in
// the toast (Show in Queue) that runs it and closes the toast.
function toast(message, kind = "success", key = `${kind}:${message}`, action = null) {
  const dock = document.getElementById("toasts");
  let entry = toastsByKey.get(key);
  if (!entry) {
    const node = toastNode("div", `toast show align-items-center text-bg-${kind} border-0`);
    node.setAttribute("role", kind === "danger" ? "alert" : "status");
    node.dataset.kind = kind;
    const row = toastNode("div", "d-flex align-items-center");
    const body = toastNode("div", "toast-body flex-grow-1");
    const count = toastNode("span", "badge rounded-pill text-bg-light me-2 toast-count d-none");
    const close = toastNode("button", `btn-close${kind === "warning" || kind === "info" ? "" : " btn-close-white"} me-2`);
    close.type = "button";
    close.setAttribute("aria-label", "Close");
    close.addEventListener("click", () => dropToast(key));
    row.append(body, count, close);
    node.append(row);
    entry = { node, body, count, kind, n: 0, timer: null };
    toastsByKey.set(key, entry);
  }
  entry.n += 1;
  entry.body.textContent = message;
  if (action) {
    const link = toastNode("button", "btn btn-link btn-sm p-0 ms-2 align-baseline toast-link text-reset", action.label);
    link.type = "button";
    link.addEventListener("click", () => { action.run(); dropToast(key); });
    entry.body.append(link);
  }
  entry.count.textContent = `×${entry.n}`;
  entry.count.classList.toggle("d-none", entry.n < 2);
  dock.append(entry.node); // the newest last, at the bottom; "N more" stays on top
  clearTimeout(entry.timer);
  if (kind !== "danger") entry.timer = setTimeout(() => dropToast(key), TOAST_DELAY);
  layoutToasts();
}

function dropToast(key) {
  const entry = toastsByKey.get(key);
  if (!entry) return;
  clearTimeout(entry.timer);
  entry.node.remove();
  toastsByKey.delete(key);
  layoutToasts();
}

// The newest TOAST_MAX are shown; older ones wait behind a "N more" line (an error closed
// brings back the one before it).
function layoutToasts() {
  const nodes = [...document.querySelectorAll("#toasts > .toast")];
  const hidden = Math.max(0, nodes.length - TOAST_MAX);
  nodes.forEach((node, i) => node.classList.toggle("d-none", i < hidden));
  const more = document.getElementById("toasts-more");
  more.classList.toggle("d-none", hidden === 0);
  document.getElementById("toasts-more-text").textContent = `${hidden} older message${hidden === 1 ? "" : "s"}`;
}

document.getElementById("toasts-dismiss").addEventListener("click", () => {
  for (const key of [...toastsByKey.keys()]) dropToast(key);
});

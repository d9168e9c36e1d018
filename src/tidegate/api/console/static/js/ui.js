// Small DOM and formatting helpers shared by every view.

import { ApiError } from "./api.js";

/** h("div", {class: "x", onclick: f}, child, "text", [more]) → an element. */
export function h(tag, attrs = {}, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else if (!svg && key in el && typeof value !== "string" && key !== "list") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// -- formatting ------------------------------------------------------------------------

const TERMINAL = new Set([
  "JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_UPDATED", "JOB_STATE_DRAINED",
]);

export const isTerminal = (state) => TERMINAL.has(state);

export function stateName(state) {
  if (!state) return "Unknown";
  const name = String(state).replace(/^JOB_STATE_|^EXECUTION_STATE_|^JOB_MESSAGE_|^JOB_TYPE_/, "").replace(/_/g, " ").toLowerCase();
  return name.charAt(0).toUpperCase() + name.slice(1);
}

const TONES = {
  RUNNING: "info", DONE: "ok", SUCCEEDED: "ok", FAILED: "bad", CANCELLED: "muted", DRAINED: "ok",
  UPDATED: "accent", CANCELLING: "warn", DRAINING: "warn", RESOURCE_CLEANING_UP: "warn", PENDING: "wait",
  QUEUED: "wait", STOPPED: "wait", NOT_STARTED: "wait",
};

export function tone(state) {
  return TONES[String(state || "").replace(/^JOB_STATE_|^EXECUTION_STATE_/, "")] || "muted";
}

export function badge(state, extra = "") {
  return h("span", { class: `badge tone-${tone(state)} ${extra}`, dataset: { state: state || "" } },
    h("span", { class: "dot" }), stateName(state));
}

export function fmtTime(value) {
  if (!value) return "—";
  const d = new Date(value);
  if (Number.isNaN(d.getTime()) || d.getTime() <= 0) return "—";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return "—";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

export function fmtRelative(value) {
  if (!value) return "";
  const ms = Date.now() - new Date(value).getTime();
  if (!Number.isFinite(ms)) return "";
  if (ms < 45_000) return "just now";
  return `${fmtDuration(ms).split(" ").slice(0, 2).join(" ")} ago`;
}

const NUMBER = new Intl.NumberFormat("en-US");
export const fmtNumber = (n) => (n === null || n === undefined ? "—" : NUMBER.format(n));

export function fmtBytes(n) {
  if (!n) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// -- dialogs and notices -------------------------------------------------------------------

/**
 * A modal asking to confirm an action. `run` is called on confirm; an ApiError it throws is
 * shown in the dialog (the server's message and reason) and the dialog stays open.
 */
export function confirmAction({ title, body, confirmLabel, danger = false, run, done }) {
  const error = h("div", { class: "dialog-error", role: "alert", hidden: true });
  const confirm = h("button", { class: `btn ${danger ? "btn-danger" : "btn-primary"}`, type: "submit", dataset: { action: "confirm" } }, confirmLabel);
  const cancel = h("button", { class: "btn", type: "button", dataset: { action: "dismiss" } }, "Cancel");
  const form = h("form", { method: "dialog", class: "dialog-form" },
    h("h2", { class: "dialog-title" }, title),
    h("div", { class: "dialog-body" }, body),
    error,
    h("div", { class: "dialog-actions" }, cancel, confirm));
  const dialog = h("dialog", { class: "dialog" }, form);
  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    confirm.disabled = true;
    error.hidden = true;
    try {
      const result = await run(form);
      dialog.close();
      if (done) done(result);
    } catch (failure) {
      error.hidden = false;
      clear(error, ...errorParts(failure));
      confirm.disabled = false;
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

export function errorParts(failure) {
  if (failure instanceof ApiError) {
    return [
      h("strong", {}, failure.status ? `The server refused (${failure.status}${failure.reason ? ` ${failure.reason}` : ""})` : "Request failed"),
      h("div", { class: "dialog-error-message" }, failure.message),
    ];
  }
  return [h("strong", {}, "Something went wrong"), h("div", {}, String(failure && failure.message ? failure.message : failure))];
}

export function toast(text, kind = "ok") {
  let host = document.getElementById("toasts");
  if (!host) {
    host = h("div", { id: "toasts", class: "toasts", "aria-live": "polite" });
    document.body.append(host);
  }
  const item = h("div", { class: `toast toast-${kind}`, role: "status" }, text);
  host.append(item);
  setTimeout(() => item.remove(), 6000);
}

export function errorBox(failure) {
  return h("div", { class: "notice notice-bad", role: "alert" }, ...errorParts(failure));
}

export function empty(title, detail = "") {
  return h("div", { class: "empty" }, h("div", { class: "empty-title" }, title), detail ? h("div", { class: "empty-detail" }, detail) : null);
}

export function field(label, input, hint = "") {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), input, hint ? h("span", { class: "field-hint" }, hint) : null);
}

// The console's shell: the header, the API token setting, and the router (history API).
// Addresses:
//   /ui/                                              the job list (?project=&region=&state=&q=&page=)
//   /ui/projects/{p}/locations/{l}/jobs/{id}?tab=…    a job

import { api, getToken, setToken } from "./api.js";
import { renderJobList } from "./jobs.js";
import { renderJob } from "./job.js";
import { clear, confirmAction, field, h, toast } from "./ui.js";

const main = document.getElementById("app");
let current = null; // the view on screen: { stop() }

export function navigate(url, { replace = false, state = null } = {}) {
  const target = new URL(url, window.location.origin);
  if (replace) history.replaceState(state, "", target);
  else history.pushState(state, "", target);
  route();
}

function route() {
  if (current && current.stop) current.stop();
  current = null;
  document.body.dataset.ready = "";
  const path = window.location.pathname.replace(/\/+$/, "");
  const job = path.match(/^\/ui\/projects\/([^/]+)\/locations\/([^/]+)\/jobs\/([^/]+)$/);
  clear(main);
  if (job) {
    const [, project, location, jobId] = job.map((part) => decodeURIComponent(part));
    current = renderJob(main, { project, location, jobId, navigate });
  } else {
    current = renderJobList(main, { navigate });
  }
}

// Links inside the console navigate without reloading the page.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  const url = new URL(link.href, window.location.origin);
  if (url.origin !== window.location.origin || !url.pathname.startsWith("/ui") || link.target) return;
  event.preventDefault();
  navigate(url);
});
window.addEventListener("popstate", route);

function tokenButton() {
  const button = document.getElementById("token-button");
  const label = () => {
    button.dataset.set = getToken() ? "1" : "";
    button.querySelector(".token-state").textContent = getToken() ? "API token set" : "API token";
  };
  label();
  button.addEventListener("click", () => {
    const input = h("input", { type: "password", name: "token", autocomplete: "off", class: "input", value: getToken(), placeholder: "Paste a token" });
    confirmAction({
      title: "API token",
      body: [
        h("p", {}, "Calls from this browser to the server carry this token as ", h("code", {}, "Authorization: Bearer …"), ". It is kept in this browser only (local storage). Leave it empty for a server that needs none."),
        field("Token", input),
      ],
      confirmLabel: "Save",
      run: async () => setToken(input.value.trim()),
      done: () => {
        label();
        toast(getToken() ? "API token saved" : "API token cleared");
        route();
      },
    });
  });
}

async function health() {
  const dot = document.getElementById("health");
  try {
    await api("/healthz");
    dot.dataset.state = "ok";
    dot.title = "The server answers";
  } catch {
    dot.dataset.state = "down";
    dot.title = "The server does not answer";
  }
}

tokenButton();
health();
setInterval(health, 15_000);
route();

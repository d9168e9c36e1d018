// The job list: project, region and state filters and a name search, all kept in the
// address; pages (Dataflow's page tokens); refreshed every few seconds.

import { api, ApiError, listPath } from "./api.js";
import { badge, clear, empty, errorBox, fmtDuration, fmtRelative, fmtTime, h, isTerminal, stateName } from "./ui.js";

const REFRESH_MS = 5000;
const PAGE_SIZE = 25;
const LAST_PROJECT = "tidegate.project";
const STATES = [
  ["", "All states"],
  ["active", "Active"],
  ["terminated", "Finished"],
];
const FILTER = { "": "ALL", active: "ACTIVE", terminated: "TERMINATED" };
let refocus = false; // the name search had the focus when the filters changed: give it back

export function jobHref(job) {
  const enc = encodeURIComponent;
  return `/ui/projects/${enc(job.projectId)}/locations/${enc(job.location)}/jobs/${enc(job.id)}`;
}

export function renderJobList(root, { navigate }) {
  const params = new URLSearchParams(window.location.search);
  const state = {
    project: params.get("project") || "",
    region: params.get("region") || "",
    status: params.get("state") || "",
    q: params.get("q") || "",
    page: params.get("page") || "",
    size: Number(params.get("size")) || PAGE_SIZE,
  };
  const earlier = (history.state && history.state.earlier) || [];
  let timer = null;
  let stopped = false;

  const projectSelect = h("select", { class: "input", name: "project", "aria-label": "Project" });
  const regionInput = h("input", { class: "input", name: "region", list: "regions", placeholder: "All regions", value: state.region, "aria-label": "Region", size: 14 });
  const regions = h("datalist", { id: "regions" });
  const stateSelect = h("select", { class: "input", name: "state", "aria-label": "State" },
    STATES.map(([value, label]) => h("option", { value, selected: value === state.status }, label)));
  const search = h("input", { class: "input input-search", type: "search", name: "q", placeholder: "Filter by name (prefix)", value: state.q, "aria-label": "Name" });
  const body = h("tbody");
  const table = h("table", { class: "table jobs-table" },
    h("thead", {}, h("tr", {}, ["Name", "Type", "Status", "Region", "Created", "Duration", "Job ID"].map((c) => h("th", {}, c)))),
    body);
  const status = h("div", { class: "list-status", "aria-live": "polite" });
  const newer = h("button", { class: "btn", type: "button", dataset: { action: "newer" }, disabled: !state.page }, "‹ Newer");
  const older = h("button", { class: "btn", type: "button", dataset: { action: "older" }, disabled: true }, "Older ›");
  const content = h("div", { class: "card" }, table);
  const pager = h("div", { class: "pager" }, status, h("div", { class: "pager-buttons" }, newer, older));

  clear(root,
    h("div", { class: "page-head" },
      h("h1", {}, "Jobs"),
      h("div", { class: "page-head-note" }, "Live: refreshed every 5 s")),
    h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); apply(); } },
      h("label", { class: "filter" }, h("span", {}, "Project"), projectSelect),
      h("label", { class: "filter" }, h("span", {}, "Region"), regionInput, regions),
      h("label", { class: "filter" }, h("span", {}, "State"), stateSelect),
      h("label", { class: "filter filter-grow" }, h("span", {}, "Name"), search)),
    content,
    pager);

  function apply(extra = {}) {
    refocus = document.activeElement === search;
    const next = { ...state, project: projectSelect.value, region: regionInput.value.trim(), status: stateSelect.value, q: search.value.trim(), page: "", ...extra };
    const query = new URLSearchParams();
    if (next.project) query.set("project", next.project);
    if (next.region) query.set("region", next.region);
    if (next.status) query.set("state", next.status);
    if (next.q) query.set("q", next.q);
    if (next.page) query.set("page", next.page);
    if (next.size !== PAGE_SIZE) query.set("size", String(next.size));
    const url = `/ui/${query.toString() ? `?${query}` : ""}`;
    if (url === `${window.location.pathname}${window.location.search}` && !("page" in extra)) return; // nothing changed
    navigate(url, { state: { earlier: extra.earlier || [] } });
  }
  const go = (extra) => apply(extra);
  if (refocus) {
    search.focus();
    search.setSelectionRange(search.value.length, search.value.length);
    refocus = false;
  }

  projectSelect.addEventListener("change", () => apply());
  stateSelect.addEventListener("change", () => apply());
  regionInput.addEventListener("change", () => apply());
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => apply(), 400);
  });
  newer.addEventListener("click", () => {
    const back = earlier.slice(0, -1);
    go({ page: earlier[earlier.length - 1] || "", earlier: back });
  });

  async function projects() {
    let names = [];
    try {
      names = (await api("/tidegate/v1/projects")).projects.map((p) => p.projectId);
    } catch (failure) {
      if (!(failure instanceof ApiError)) throw failure;
    }
    if (!state.project) {
      const last = localStorage.getItem(LAST_PROJECT);
      state.project = names.includes(last) ? last : names[0] || "";
    }
    if (state.project && !names.includes(state.project)) names.unshift(state.project);
    clear(projectSelect, names.length ? names.map((n) => h("option", { value: n, selected: n === state.project }, n)) : h("option", { value: "" }, "No projects yet"));
    if (state.project) localStorage.setItem(LAST_PROJECT, state.project);
  }

  let nextToken = "";
  async function load() {
    if (!state.project) {
      clear(content, empty("No jobs yet", "Jobs appear here once a client submits one (Beam's DataflowRunner, the official Dataflow client, or `tidegate run`)."));
      status.textContent = "";
      document.body.dataset.ready = "jobs";
      return;
    }
    let page;
    try {
      page = await api(listPath(state.project, state.region), {
        query: { filter: FILTER[state.status] || "ALL", pageSize: state.size, pageToken: state.page, namePrefix: state.q },
      });
    } catch (failure) {
      clear(content, errorBox(failure));
      document.body.dataset.ready = "jobs";
      return;
    }
    if (stopped) return;
    clear(content, table);
    const jobs = page.jobs || [];
    nextToken = page.nextPageToken || "";
    older.disabled = !nextToken;
    newer.disabled = !state.page;
    const seen = new Set([...regions.options].map((o) => o.value));
    for (const job of jobs) {
      if (!seen.has(job.location)) {
        seen.add(job.location);
        regions.append(h("option", { value: job.location }));
      }
    }
    if (!jobs.length) {
      clear(body, h("tr", {}, h("td", { colspan: 7 }, empty(state.q || state.status || state.region ? "No jobs match these filters" : "No jobs in this project"))));
    } else {
      clear(body, jobs.map(row));
    }
    const first = earlier.length * state.size + 1;
    status.textContent = jobs.length ? `Jobs ${first}–${first + jobs.length - 1}${nextToken ? "" : ` of ${first + jobs.length - 1}`}` : "";
    document.body.dataset.ready = "jobs";
  }

  older.addEventListener("click", () => go({ page: nextToken, earlier: [...earlier, state.page] }));

  function row(job) {
    const ended = isTerminal(job.currentState);
    const start = new Date(job.startTime || job.createTime).getTime();
    const end = ended ? new Date(job.currentStateTime).getTime() : Date.now();
    return h("tr", { dataset: { jobId: job.id } },
      h("td", {}, h("a", { href: jobHref(job), class: "job-link" }, job.name)),
      h("td", {}, stateName(job.type)),
      h("td", {}, badge(job.currentState)),
      h("td", {}, job.location),
      h("td", { title: fmtTime(job.createTime) }, fmtTime(job.createTime), h("div", { class: "sub" }, fmtRelative(job.createTime))),
      h("td", {}, fmtDuration(end - start)),
      h("td", { class: "mono" }, job.id));
  }

  async function tick() {
    await load();
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  }

  projects().then(() => { if (!stopped) tick(); });
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      clearTimeout(typing);
    },
  };
}

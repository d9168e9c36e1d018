// A job's page: its summary beside tabs for the graph, execution details, metrics,
// messages, worker logs, state history and snapshots. Live: while the job is not in a
// terminal state, it is read again every two seconds.

import { api, jobPaths } from "./api.js";
import { cancelJob, drainJob, snapshotJob, updateOptions } from "./job_actions.js";
import { TABS, renderTab, sampleMetrics } from "./job_tabs.js";
import { badge, clear, errorBox, fmtDuration, fmtRelative, fmtTime, h, isTerminal, stateName } from "./ui.js";

const POLL_MS = 2000;

export function renderJob(root, { project, location, jobId, navigate }) {
  const params = new URLSearchParams(window.location.search);
  const ctx = {
    project, location, jobId, navigate,
    paths: jobPaths(project, location, jobId),
    tab: TABS.some((t) => t.id === params.get("tab")) ? params.get("tab") : "graph",
    job: null, graph: null, history: null, messages: null, samples: [], metrics: null,
    stages: null, snapshots: null, logs: null, importance: params.get("importance") || "",
    selectedStep: "", stopped: false, scale: 1,
  };
  let timer = null;

  const title = h("h1", { class: "job-title" }, "Loading…");
  const state = h("div", { class: "job-state" });
  const actions = h("div", { class: "job-actions" });
  const tabBar = h("nav", { class: "tabs", role: "tablist" });
  const panel = h("section", { class: "tab-panel", role: "tabpanel" });
  const info = h("aside", { class: "job-info card" }, h("div", { class: "skeleton" }, "Loading job…"));
  const live = h("span", { class: "live", hidden: true }, h("span", { class: "live-dot" }), "Live");

  clear(root,
    h("div", { class: "breadcrumb" }, h("a", { href: backToList() }, "Jobs"), h("span", { class: "sep" }, "/"), h("span", {}, jobId)),
    h("div", { class: "job-head" }, h("div", { class: "job-head-main" }, h("div", { class: "job-title-row" }, title, state, live)), actions),
    h("div", { class: "job-body" }, h("div", { class: "job-main card" }, tabBar, panel), info));

  function backToList() {
    const q = new URLSearchParams({ project });
    return `/ui/?${q}`;
  }

  function drawTabs() {
    clear(tabBar, TABS.map((t) => {
      const count = t.count ? t.count(ctx) : "";
      return h("button", {
        class: `tab${t.id === ctx.tab ? " active" : ""}`, type: "button", role: "tab", "aria-selected": String(t.id === ctx.tab),
        dataset: { tab: t.id }, onclick: () => select(t.id),
      }, t.label, count ? h("span", { class: `tab-count ${t.countTone ? t.countTone(ctx) : ""}` }, count) : null);
    }));
  }

  function select(tab) {
    ctx.tab = tab;
    const url = new URL(window.location.href);
    url.searchParams.set("tab", tab);
    history.replaceState(history.state, "", url);
    drawTabs();
    show();
  }

  function show() {
    renderTab(ctx, panel, { refresh, redraw: show, navigate });
  }

  function drawHeader() {
    const job = ctx.job;
    title.textContent = job.name;
    document.title = `${job.name} · tidegate`;
    clear(state, badge(job.currentState, "badge-lg"),
      job.requestedState && job.requestedState !== job.currentState && !isTerminal(job.currentState) && job.requestedState !== "JOB_STATE_RUNNING"
        ? h("span", { class: "requested" }, `${stateName(job.requestedState)} requested`) : null);
    live.hidden = isTerminal(job.currentState);
    const ended = isTerminal(job.currentState);
    const button = (label, action, handler, extra = "") => h("button", {
      class: `btn ${extra}`, type: "button", disabled: ended, dataset: { action }, onclick: () => handler(ctx, refresh),
      title: ended ? `The job is ${stateName(job.currentState).toLowerCase()}` : "",
    }, label);
    clear(actions,
      button("Update options", "update", updateOptions),
      button("Snapshot", "snapshot", snapshotJob),
      button("Drain", "drain", drainJob),
      button("Cancel", "cancel", cancelJob, "btn-danger-outline"));
  }

  function row(label, ...value) {
    return [h("dt", {}, label), h("dd", {}, ...value)];
  }

  function jobLink(id, label = id) {
    const enc = encodeURIComponent;
    return h("a", { href: `/ui/projects/${enc(project)}/locations/${enc(location)}/jobs/${enc(id)}`, class: "mono" }, label);
  }

  function drawInfo() {
    const job = ctx.job;
    const env = job.environment || {};
    const options = ((env.sdkPipelineOptions || {}).options) || {};
    const own = options.tidegate || {};
    const ended = isTerminal(job.currentState);
    const start = new Date(job.startTime || job.createTime).getTime();
    const end = ended ? new Date(job.currentStateTime).getTime() : Date.now();
    const sdk = ((job.jobMetadata || {}).sdkVersion) || {};
    const agent = env.userAgent || {};
    const sdkText = sdk.versionDisplayName || sdk.version
      ? `${sdk.versionDisplayName || "SDK"} ${sdk.version || ""}`.trim()
      : agent.name ? `${agent.name} ${agent.version || ""}`.trim() : "—";
    const labels = Object.entries(job.labels || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));  // a map: shown in key order, whatever order the server sent
    const optionRows = Object.entries(options).filter(([k]) => k !== "tidegate").sort(([a], [b]) => a.localeCompare(b));
    clear(info,
      h("h2", { class: "card-title" }, "Job info"),
      h("dl", { class: "facts", dataset: { section: "summary" } },
        row("Job name", job.name),
        row("Job ID", h("span", { class: "mono", dataset: { field: "id" } }, job.id)),
        row("Job type", stateName(job.type)),
        row("Engine", h("span", { dataset: { field: "engine" } }, own.engine || "beam")),
        row("Status", badge(job.currentState), h("div", { class: "sub" }, `since ${fmtTime(job.currentStateTime)}`)),
        row("Region", job.location),
        row("Project", job.projectId),
        row("Created", fmtTime(job.createTime), h("div", { class: "sub" }, fmtRelative(job.createTime))),
        row("Started", fmtTime(job.startTime)),
        ended ? row("Ended", fmtTime(job.currentStateTime)) : null,
        row("Elapsed", fmtDuration(end - start)),
        row("SDK", h("span", { dataset: { field: "sdk" } }, sdkText)),
        job.replaceJobId ? row("Replaces", jobLink(job.replaceJobId)) : null,
        job.replacedByJobId ? row("Replaced by", jobLink(job.replacedByJobId)) : null,
        job.createdFromSnapshotId ? row("From snapshot", h("span", { class: "mono" }, job.createdFromSnapshotId)) : null),
      h("h3", { class: "card-subtitle" }, "Labels"),
      labels.length
        ? h("div", { class: "chips", dataset: { section: "labels" } }, labels.map(([k, v]) => h("span", { class: "chip" }, h("b", {}, k), v ? `: ${v}` : "")))
        : h("div", { class: "muted", dataset: { section: "labels" } }, "No labels"),
      h("h3", { class: "card-subtitle" }, "Pipeline options"),
      optionRows.length
        ? h("dl", { class: "facts facts-options", dataset: { section: "options" } },
          optionRows.map(([k, v]) => row(k, h("span", { class: "mono wrap" }, typeof v === "string" ? v : JSON.stringify(v)))))
        : h("div", { class: "muted", dataset: { section: "options" } }, "None"),
      Object.keys(own).length
        ? [h("h3", { class: "card-subtitle" }, "tidegate options"),
          h("dl", { class: "facts facts-options" }, Object.entries(own).map(([k, v]) => row(k, h("span", { class: "mono wrap" }, typeof v === "string" ? v : JSON.stringify(v)))))]
        : null);
  }

  async function loadJob() {
    ctx.job = await api(ctx.paths.job, { query: { view: "JOB_VIEW_ALL" } });
    drawHeader();
    drawInfo();
  }

  async function loadGraph() {
    ctx.graph = await api(ctx.paths.graph);
  }

  async function loadHistory() {
    ctx.history = (await api(ctx.paths.history)).stateHistory || [];
  }

  async function loadMessages() {
    const page = await api(ctx.paths.messages, { query: { pageSize: 1000, minimumImportance: ctx.importance } });
    ctx.messages = { items: page.jobMessages || [], next: page.nextPageToken || "" };
  }

  async function refresh(extra) {
    const work = [loadJob(), loadGraph(), loadHistory(), sampleMetrics(ctx)];
    if (ctx.tab === "messages" || extra === "messages") work.push(loadMessages());
    if (ctx.tab === "stages") work.push(api(ctx.paths.executionDetails).then((d) => { ctx.stages = d.stages || []; }));
    if (ctx.tab === "snapshots" || extra === "snapshots") work.push(api(ctx.paths.snapshots).then((d) => { ctx.snapshots = d.snapshots || []; }));
    const results = await Promise.allSettled(work);
    if (ctx.stopped) return;
    const failed = results.find((r) => r.status === "rejected");
    if (failed && !ctx.job) {
      clear(root, h("div", { class: "breadcrumb" }, h("a", { href: backToList() }, "Jobs")), errorBox(failed.reason));
      document.body.dataset.ready = "job";
      ctx.stopped = true;
      return;
    }
    drawTabs();
    show();
  }

  async function start() {
    const first = await Promise.allSettled([loadJob(), loadGraph(), loadMessages(), loadHistory()]);
    if (ctx.stopped) return;
    const failed = first.find((r) => r.status === "rejected");
    if (failed && !ctx.job) {
      clear(root, h("div", { class: "breadcrumb" }, h("a", { href: backToList() }, "Jobs")), errorBox(failed.reason));
      document.body.dataset.ready = "job";
      return;
    }
    drawTabs();
    show();
    document.body.dataset.ready = "job";
    await sampleMetrics(ctx);
    if (ctx.stopped) return;
    show();
    poll();
  }

  async function poll() {
    if (ctx.stopped) return;
    const wasActive = !isTerminal(ctx.job.currentState);
    if (!wasActive) return; // ended: nothing changes any more (one last read happened on the way)
    timer = setTimeout(async () => {
      await refresh();
      poll();
    }, POLL_MS);
  }

  drawTabs();
  start();
  return {
    stop() {
      ctx.stopped = true;
      clearTimeout(timer);
      if (ctx.logs && ctx.logs.timer) clearTimeout(ctx.logs.timer);
    },
  };
}

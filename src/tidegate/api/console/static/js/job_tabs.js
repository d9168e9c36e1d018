// The tabs of a job's page. Each draws into a host element of its own that stays on the
// page while the tab is shown, and redraws only when what it shows has changed.

import { api, ApiError } from "./api.js";
import { lineChart } from "./charts.js";
import { drawGraph } from "./graph.js";
import { createFromSnapshot, deleteSnapshot, snapshotJob } from "./job_actions.js";
import { badge, clear, empty, errorBox, fmtBytes, fmtDuration, fmtNumber, fmtTime, h, isTerminal, stateName, tone } from "./ui.js";

const IMPORTANCE = [
  ["", "All messages"],
  ["JOB_MESSAGE_DETAILED", "Detailed and above"],
  ["JOB_MESSAGE_BASIC", "Info and above"],
  ["JOB_MESSAGE_WARNING", "Warnings and errors"],
  ["JOB_MESSAGE_ERROR", "Errors only"],
];
const IMPORTANCE_LABEL = {
  JOB_MESSAGE_DEBUG: "Debug", JOB_MESSAGE_DETAILED: "Detail", JOB_MESSAGE_BASIC: "Info",
  JOB_MESSAGE_WARNING: "Warning", JOB_MESSAGE_ERROR: "Error",
};
const COUNTS = new Set(["ElementCount", "numRecordsOut"]);
const MAX_SAMPLES = 900;
const LOG_PAGE = 500;
const LOG_POLL_MS = 2000;

const problems = (ctx) => (ctx.messages ? ctx.messages.items.filter((m) => ["JOB_MESSAGE_ERROR", "JOB_MESSAGE_WARNING"].includes(m.messageImportance)).length : 0);

export const TABS = [
  { id: "graph", label: "Job graph", count: (ctx) => (ctx.graph && ctx.graph.nodes.length ? String(ctx.graph.nodes.length) : "") },
  { id: "stages", label: "Execution details" },
  { id: "metrics", label: "Metrics" },
  {
    id: "messages", label: "Messages",
    count: (ctx) => (problems(ctx) ? String(problems(ctx)) : ""),
    countTone: (ctx) => (ctx.messages && ctx.messages.items.some((m) => m.messageImportance === "JOB_MESSAGE_ERROR") ? "tone-bad" : "tone-warn"),
  },
  { id: "logs", label: "Worker logs" },
  { id: "timeline", label: "State history" },
  { id: "snapshots", label: "Snapshots" },
];

export function renderTab(ctx, panel, helpers) {
  ctx.hosts ||= {};
  ctx.drawn ||= {};
  const host = (ctx.hosts[ctx.tab] ||= h("div", { class: `tab-body tab-${ctx.tab}`, dataset: { panel: ctx.tab } }));
  if (panel.firstChild !== host) {
    clear(panel, host);
    ctx.drawn[ctx.tab] = null;
  }
  RENDER[ctx.tab](ctx, host, helpers);
}

function once(ctx, tab, key, draw) {
  if (ctx.drawn[tab] === key) return;
  ctx.drawn[tab] = key;
  draw();
}

// -- graph -------------------------------------------------------------------------------

function graphTab(ctx, host, helpers) {
  const graph = ctx.graph;
  if (!graph) return clear(host, h("div", { class: "skeleton" }, "Loading the graph…"));
  once(ctx, "graph", JSON.stringify([graph, ctx.selectedStep, ctx.scale]), () => {
    if (!graph.nodes.length) {
      clear(host, empty("No graph for this job", "It brought no pipeline (Beam's staged pipeline, or Dataflow steps) and its engine has no plan of it yet."));
      return;
    }
    ctx.graphScroll ||= h("div", { class: "graph-scroll" });
    const zoom = (factor) => () => { ctx.scale = factor ? Math.min(2, Math.max(0.3, ctx.scale * factor)) : 1; helpers.redraw(); };
    const toolbar = h("div", { class: "toolbar" },
      h("div", { class: "legend" }, ["RUNNING", "SUCCEEDED", "FAILED", "NOT_STARTED"].map((s) => h("span", { class: `legend-item tone-${tone(s)}` }, h("span", { class: "dot" }), stateName(s)))),
      h("div", { class: "toolbar-right" },
        h("span", { class: "muted small" }, `${graph.nodes.length} steps · from ${({ pipeline: "the staged Beam pipeline", steps: "the job's steps", "flink-plan": "Flink's job plan" })[graph.origin] || graph.origin}`),
        h("button", { class: "btn btn-icon", type: "button", title: "Zoom out", onclick: zoom(0.8) }, "−"),
        h("button", { class: "btn btn-icon", type: "button", title: "Actual size", onclick: zoom(0) }, "100%"),
        h("button", { class: "btn btn-icon", type: "button", title: "Zoom in", onclick: zoom(1.25) }, "+")));
    const step = graph.nodes.find((n) => n.id === ctx.selectedStep);
    drawGraph(ctx.graphScroll, graph, {
      selected: ctx.selectedStep, scale: ctx.scale,
      onSelect: (node) => { ctx.selectedStep = node.id === ctx.selectedStep ? "" : node.id; helpers.redraw(); },
    });
    clear(host, toolbar, h("div", { class: "graph-layout" }, ctx.graphScroll, step ? stepPanel(step) : null));
  });
}

function stepPanel(step) {
  return h("div", { class: "step-panel", dataset: { selectedStep: step.name } },
    h("h3", {}, step.name),
    h("dl", { class: "facts" },
      h("dt", {}, "Kind"), h("dd", {}, step.kind || "—"),
      h("dt", {}, "State"), h("dd", {}, step.state ? badge(step.state) : "—"),
      h("dt", {}, "Elements in"), h("dd", {}, fmtNumber(step.elementsIn)),
      h("dt", {}, "Elements out"), h("dd", {}, fmtNumber(step.elementsOut))),
    (step.counters || []).length
      ? [h("h4", {}, "Counters"), h("table", { class: "table table-compact" }, h("tbody", {}, step.counters.map((c) => h("tr", {}, h("td", {}, c.namespace ? `${c.namespace}/${c.name}` : c.name), h("td", { class: "num" }, fmtNumber(c.value))))))]
      : null,
    step.steps && step.steps.length > 1
      ? [h("h4", {}, `Transforms (${step.steps.length})`), h("ul", { class: "step-list" }, step.steps.map((s) => h("li", { class: "mono" }, s)))]
      : null);
}

// -- execution details -----------------------------------------------------------------------

function stagesTab(ctx, host) {
  if (ctx.stages === null) {
    clear(host, h("div", { class: "skeleton" }, "Loading stages…"));
    api(ctx.paths.executionDetails).then((d) => { ctx.stages = d.stages || []; stagesTab(ctx, host); }, (e) => clear(host, errorBox(e)));
    return;
  }
  once(ctx, "stages", JSON.stringify(ctx.stages), () => {
    if (!ctx.stages.length) return clear(host, empty("No stages yet", "Stages appear once the engine has planned the job."));
    const now = Date.now();
    clear(host, h("table", { class: "table" },
      h("thead", {}, h("tr", {}, ["Stage", "State", "Started", "Ended", "Duration"].map((c) => h("th", {}, c)))),
      h("tbody", {}, ctx.stages.map((s) => {
        const start = s.startTime ? new Date(s.startTime).getTime() : null;
        const end = s.endTime ? new Date(s.endTime).getTime() : (s.state === "EXECUTION_STATE_RUNNING" ? now : null);
        return h("tr", { dataset: { stage: s.stageId } },
          h("td", { class: "mono" }, s.stageId), h("td", {}, badge(s.state || "EXECUTION_STATE_UNKNOWN")),
          h("td", {}, fmtTime(s.startTime)), h("td", {}, fmtTime(s.endTime)),
          h("td", {}, start !== null && end !== null ? fmtDuration(end - start) : "—"));
      }))));
  });
}

// -- metrics ------------------------------------------------------------------------------

/** Reads the job's metrics once and keeps a sample: the charts are drawn from the samples. */
export async function sampleMetrics(ctx) {
  let data;
  try {
    data = await api(ctx.paths.metrics);
  } catch {
    return;
  }
  const committed = (data.metrics || []).filter((m) => ((m.name || {}).context || {}).tentative !== "true");
  ctx.metrics = committed;
  let elements = 0;
  let watermark = null;
  for (const m of committed) {
    const name = (m.name || {}).name;
    const value = Number(m.scalar);
    if (COUNTS.has(name)) elements += value;
    if (name === "currentOutputWatermark" && Number.isFinite(value)) watermark = watermark === null ? value : Math.min(watermark, value);
  }
  const t = data.metricTime ? new Date(data.metricTime).getTime() : Date.now();
  ctx.samples.push({ t, elements, watermark });
  if (ctx.samples.length > MAX_SAMPLES) ctx.samples.shift();
}

function metricsTab(ctx, host) {
  if (ctx.metrics === null) return clear(host, h("div", { class: "skeleton" }, "Loading metrics…"));
  once(ctx, "metrics", `${ctx.samples.length}:${JSON.stringify(ctx.metrics)}`, () => {
    const rates = [];
    for (let i = 1; i < ctx.samples.length; i += 1) {
      const a = ctx.samples[i - 1];
      const b = ctx.samples[i];
      const dt = (b.t - a.t) / 1000;
      if (dt > 0) rates.push({ t: b.t, v: Math.max(0, (b.elements - a.elements) / dt) });
    }
    const lags = ctx.samples.filter((s) => s.watermark !== null).map((s) => ({ t: s.t, v: Math.max(0, (s.t - s.watermark) / 1000) }));
    const streaming = ctx.job && ctx.job.type === "JOB_TYPE_STREAMING";
    const ended = ctx.job && isTerminal(ctx.job.currentState);
    const throughput = h("div", { class: "chart card-inner", dataset: { chart: "throughput" } });
    const lag = h("div", { class: "chart card-inner", dataset: { chart: "watermark-lag" } });
    const waiting = ended ? "The job has ended: nothing more to sample" : "Sampling…";
    const rows = [...ctx.metrics].sort((a, b) => `${a.name.context.step}${a.name.name}`.localeCompare(`${b.name.context.step}${b.name.name}`));
    clear(host,
      h("div", { class: "charts" }, throughput, streaming ? lag : null),
      h("p", { class: "muted small" }, "Charts are sampled by this page every 2 s while it is open and the job runs; the server keeps the latest value of each metric, not a series."),
      h("h3", { class: "section-title" }, "Counters"),
      rows.length
        ? h("table", { class: "table" },
          h("thead", {}, h("tr", {}, ["Step", "Metric", "Kind", "Value"].map((c) => h("th", { class: c === "Value" ? "num" : "" }, c)))),
          h("tbody", {}, rows.map((m) => {
            const c = m.name.context || {};
            return h("tr", { dataset: { metric: m.name.name } },
              h("td", {}, c.step || "—"),
              h("td", {}, c.namespace ? `${c.namespace}/${m.name.name}` : m.name.name, c.output_user_name && c.output_user_name !== `${c.step}.None` ? h("div", { class: "sub mono" }, c.output_user_name) : null),
              h("td", {}, m.name.origin === "user" ? "User" : "System"),
              h("td", { class: "num" }, m.name.name === "currentOutputWatermark" ? fmtTime(Number(m.scalar)) : fmtNumber(Number(m.scalar))));
          })))
        : empty("No metrics", "Metrics appear once the job runs."));
    // Drawn once on the page, at the width they are given.
    lineChart(throughput, rates, { title: streaming ? "Records per second (all steps)" : "Elements per second (all steps)", unit: "/s", emptyText: waiting });
    if (streaming) lineChart(lag, lags, { title: "Watermark lag", unit: "s", emptyText: ended ? waiting : "No watermark reported yet" });
  });
}

// -- messages ---------------------------------------------------------------------------------

function messagesTab(ctx, host, helpers) {
  const select = h("select", { class: "input", name: "importance", "aria-label": "Importance" },
    IMPORTANCE.map(([value, label]) => h("option", { value, selected: value === ctx.importance }, label)));
  select.addEventListener("change", async () => {
    ctx.importance = select.value;
    const url = new URL(window.location.href);
    if (ctx.importance) url.searchParams.set("importance", ctx.importance);
    else url.searchParams.delete("importance");
    history.replaceState(history.state, "", url);
    ctx.messages = null;
    ctx.drawn.messages = null;
    messagesTab(ctx, host, helpers);
  });
  if (ctx.messages === null) {
    clear(host, h("div", { class: "toolbar" }, h("label", { class: "filter" }, h("span", {}, "Importance"), select)), h("div", { class: "skeleton" }, "Loading messages…"));
    api(ctx.paths.messages, { query: { pageSize: 1000, minimumImportance: ctx.importance } }).then((page) => {
      ctx.messages = { items: page.jobMessages || [], next: page.nextPageToken || "" };
      messagesTab(ctx, host, helpers);
    }, (e) => clear(host, errorBox(e)));
    return;
  }
  const items = ctx.messages.items;
  once(ctx, "messages", `${ctx.importance}:${items.length}:${items.length ? items[items.length - 1].id : ""}:${ctx.messages.next}`, () => {
    const more = ctx.messages.next
      ? h("button", {
        class: "btn", type: "button", onclick: async () => {
          const page = await api(ctx.paths.messages, { query: { pageSize: 1000, minimumImportance: ctx.importance, pageToken: ctx.messages.next } });
          ctx.messages = { items: [...items, ...(page.jobMessages || [])], next: page.nextPageToken || "" };
          messagesTab(ctx, host, helpers);
        },
      }, "Load more")
      : null;
    clear(host,
      h("div", { class: "toolbar" }, h("label", { class: "filter" }, h("span", {}, "Importance"), select),
        h("span", { class: "muted small", dataset: { count: items.length } }, `${fmtNumber(items.length)} message${items.length === 1 ? "" : "s"}${ctx.messages.next ? " (more below)" : ""}`)),
      items.length
        ? h("div", { class: "messages", role: "list" }, items.map(messageRow))
        : empty("No messages", ctx.importance ? "None at this importance or above." : "The job has written none yet."),
      more);
  });
}

function messageRow(m) {
  const importance = m.messageImportance || "JOB_MESSAGE_DETAILED";
  const text = m.messageText || "";
  const [first, ...rest] = text.split("\n");
  return h("div", { class: `message imp-${importance.replace("JOB_MESSAGE_", "").toLowerCase()}`, role: "listitem", dataset: { importance } },
    h("span", { class: "message-time mono" }, fmtTime(m.time)),
    h("span", { class: "message-imp" }, IMPORTANCE_LABEL[importance] || stateName(importance)),
    rest.length
      ? h("details", { class: "message-text" }, h("summary", {}, first), h("pre", {}, rest.join("\n")))
      : h("span", { class: "message-text" }, first));
}

// -- worker logs --------------------------------------------------------------------------------

function logsTab(ctx, host) {
  const logs = (ctx.logs ||= { entries: [], offset: "", complete: false, error: null, timer: null, drawn: 0, running: false });
  if (!logs.view) {
    logs.count = h("span", { class: "muted small" });
    logs.follow = h("input", { type: "checkbox", checked: true, name: "follow" });
    logs.lines = h("div", { class: "log-lines mono", role: "log" });
    logs.status = h("div", { class: "log-status" });
    logs.view = [h("div", { class: "toolbar" }, h("label", { class: "check" }, logs.follow, " Follow"), logs.count), logs.lines, logs.status];
  }
  if (host.firstChild !== logs.view[0]) clear(host, logs.view);
  drawLogs(ctx);
  if (!logs.running && !logs.complete && !logs.error) fetchLogs(ctx);
}

function drawLogs(ctx) {
  const logs = ctx.logs;
  const fresh = logs.entries.slice(logs.drawn);
  if (fresh.length) {
    logs.lines.append(...fresh.map((e) => h("div", { class: `log-line src-${e.source || "stdout"}` }, h("span", { class: "log-src" }, e.source || ""), h("span", { class: "log-text" }, e.text))));
    logs.drawn = logs.entries.length;
    if (logs.follow.checked) logs.lines.scrollTop = logs.lines.scrollHeight;
  }
  logs.count.textContent = `${fmtNumber(logs.entries.length)} line${logs.entries.length === 1 ? "" : "s"}`;
  if (logs.error) clear(logs.status, logs.error);
  else if (logs.complete) clear(logs.status, h("span", { class: "muted", dataset: { complete: "1" } }, "End of the logs: the job has ended and everything it wrote is shown."));
  else clear(logs.status, h("span", { class: "muted" }, logs.entries.length ? "Following the job's output…" : "Waiting for the job's output…"));
  if (!logs.entries.length && logs.complete) clear(logs.lines, empty("No worker logs", "The job's workers wrote nothing."));
}

async function fetchLogs(ctx) {
  const logs = ctx.logs;
  logs.running = true;
  try {
    while (!ctx.stopped && ctx.tab === "logs") {
      const page = await api(ctx.paths.logs, { query: { offset: logs.offset, pageSize: LOG_PAGE } });
      logs.entries.push(...(page.entries || []));
      logs.offset = page.nextOffset ?? logs.offset;
      logs.complete = Boolean(page.complete);
      drawLogs(ctx);
      if (logs.complete) break;
      if ((page.entries || []).length < LOG_PAGE) await new Promise((r) => { logs.timer = setTimeout(r, LOG_POLL_MS); });
    }
  } catch (failure) {
    logs.error = failure instanceof ApiError && failure.reason === "URL_NOT_FOUND"
      ? empty("No worker logs on this server", "This server does not serve its jobs' worker logs.")
      : errorBox(failure);
    drawLogs(ctx);
  } finally {
    logs.running = false;
  }
}

// -- state history ------------------------------------------------------------------------------

function timelineTab(ctx, host) {
  const rows = ctx.history;
  if (!rows) return clear(host, h("div", { class: "skeleton" }, "Loading the history…"));
  const ended = ctx.job && isTerminal(ctx.job.currentState);
  once(ctx, "timeline", `${rows.length}:${ended ? "end" : Math.floor(Date.now() / 10000)}`, () => {
    const times = rows.map((r) => new Date(r.time).getTime());
    const last = ended ? times[times.length - 1] : Date.now();
    const total = Math.max(1, last - times[0]);
    const bar = h("div", { class: "timeline-bar", role: "img", "aria-label": "Time spent in each state" },
      rows.map((r, i) => {
        const span = (i + 1 < rows.length ? times[i + 1] : last) - times[i];
        const final = i === rows.length - 1 && ended;
        const seg = h("div", { class: `timeline-seg tone-${tone(r.toState)}`, title: `${stateName(r.toState)}: ${final ? "final" : fmtDuration(span)}` });
        seg.style.flexGrow = final ? "0" : String(Math.max(span / total, 0.004));
        if (final) seg.style.flexBasis = "6px";
        return seg;
      }));
    clear(host,
      h("div", { class: "timeline-summary" }, bar,
        h("div", { class: "timeline-scale muted small" }, h("span", {}, fmtTime(rows[0] && rows[0].time)), h("span", {}, ended ? fmtTime(ctx.job.currentStateTime) : "now"))),
      h("ol", { class: "timeline" }, rows.map((r, i) => h("li", { class: "timeline-item", dataset: { to: r.toState, actor: r.actor } },
        h("span", { class: `timeline-dot tone-${tone(r.toState)}` }),
        h("div", { class: "timeline-row" },
          h("div", { class: "timeline-change" }, r.fromState ? [badge(r.fromState), h("span", { class: "arrow" }, "→")] : null, badge(r.toState)),
          h("div", { class: "timeline-meta" },
            h("span", { class: `actor actor-${r.actor}` }, r.actor),
            h("span", { class: "mono small" }, fmtTime(r.time)),
            i + 1 < rows.length ? h("span", { class: "muted small" }, `for ${fmtDuration(times[i + 1] - times[i])}`) : null),
          r.reason ? h("div", { class: "timeline-reason" }, r.reason) : null)))));
  });
}

// -- snapshots ----------------------------------------------------------------------------------

function snapshotsTab(ctx, host, helpers) {
  if (ctx.snapshots === null) {
    clear(host, h("div", { class: "skeleton" }, "Loading snapshots…"));
    api(ctx.paths.snapshots).then((d) => { ctx.snapshots = d.snapshots || []; snapshotsTab(ctx, host, helpers); }, (e) => clear(host, errorBox(e)));
    return;
  }
  once(ctx, "snapshots", JSON.stringify([ctx.snapshots, ctx.job && ctx.job.currentState]), () => {
    const running = ctx.job && ctx.job.currentState === "JOB_STATE_RUNNING";
    const take = h("button", { class: "btn btn-primary", type: "button", dataset: { action: "take-snapshot" }, disabled: !running, onclick: () => snapshotJob(ctx, helpers.refresh) }, "Take snapshot");
    clear(host,
      h("div", { class: "toolbar" }, h("span", { class: "muted small" }, "Snapshots save a running streaming job's state; a new job can start from one."), take),
      ctx.snapshots.length
        ? h("table", { class: "table" },
          h("thead", {}, h("tr", {}, ["Snapshot", "State", "Created", "Expires", "Size", "Description", ""].map((c) => h("th", {}, c)))),
          h("tbody", {}, ctx.snapshots.map((s) => {
            const ttl = s.ttl ? Number(String(s.ttl).replace("s", "")) * 1000 : null;
            const ready = s.state === "READY";
            return h("tr", { dataset: { snapshot: s.id } },
              h("td", { class: "mono" }, s.id), h("td", {}, h("span", { class: `badge tone-${{ READY: "ok", FAILED: "bad", DELETED: "muted" }[s.state] || "wait"}`, dataset: { state: s.state } }, h("span", { class: "dot" }), stateName(s.state))),
              h("td", {}, fmtTime(s.creationTime)),
              h("td", {}, ttl ? fmtTime(new Date(new Date(s.creationTime).getTime() + ttl).toISOString()) : "never"),
              h("td", { class: "nowrap" }, fmtBytes(Number(s.diskSizeBytes || 0))), h("td", {}, s.description || "—"),
              h("td", { class: "row-actions" },
                h("button", { class: "btn btn-small", type: "button", disabled: !ready, dataset: { action: "create-from-snapshot" }, onclick: () => createFromSnapshot(ctx, s, helpers.navigate) }, "Create job"),
                h("button", { class: "btn btn-small btn-danger-outline", type: "button", dataset: { action: "delete-snapshot" }, onclick: () => deleteSnapshot(ctx, s, helpers.refresh) }, "Delete")));
          })))
        : empty("No snapshots", running ? "Take one with “Take snapshot”." : "Snapshots can be taken while a streaming job runs."));
  });
}

const RENDER = {
  graph: graphTab, stages: stagesTab, metrics: metricsTab, messages: messagesTab,
  logs: logsTab, timeline: timelineTab, snapshots: snapshotsTab,
};

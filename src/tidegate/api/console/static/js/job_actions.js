// A job's actions, each behind a confirmation: cancel, drain, snapshot, update options
// (labels), and create a job from a snapshot. A refusal shows the server's reason.

import { api } from "./api.js";
import { confirmAction, field, h, toast } from "./ui.js";

export function cancelJob(ctx, refresh) {
  confirmAction({
    title: "Cancel this job?",
    body: h("p", {}, "Job ", h("strong", {}, ctx.job.name), " stops at once: its workers are stopped and data still in flight is lost. This cannot be undone."),
    confirmLabel: "Cancel job",
    danger: true,
    run: () => api(ctx.paths.job, { method: "PUT", body: { requestedState: "JOB_STATE_CANCELLED" } }),
    done: () => { toast("Cancel requested"); refresh(); },
  });
}

export function drainJob(ctx, refresh) {
  confirmAction({
    title: "Drain this job?",
    body: h("p", {}, "Job ", h("strong", {}, ctx.job.name), " stops reading its sources and finishes the data it holds: open windows fire, then it ends drained. Only streaming jobs drain."),
    confirmLabel: "Drain job",
    run: () => api(ctx.paths.job, { method: "PUT", body: { requestedState: "JOB_STATE_DRAINED" } }),
    done: () => { toast("Drain requested"); refresh(); },
  });
}

export function snapshotJob(ctx, refresh) {
  const description = h("input", { class: "input", name: "description", placeholder: "Before the schema change", maxlength: 200 });
  const ttl = h("input", { class: "input", name: "ttl", type: "number", min: 1, max: 30, value: "7", required: true });
  confirmAction({
    title: "Take a snapshot",
    body: [
      h("p", {}, "A snapshot saves the state of the running streaming job ", h("strong", {}, ctx.job.name), ". A new job can start from it."),
      field("Description", description),
      field("Keep for (days)", ttl, "1 to 30 days"),
    ],
    confirmLabel: "Take snapshot",
    run: () => api(ctx.paths.snapshot, {
      method: "POST",
      body: { ttl: `${Math.round(Number(ttl.value) * 86400)}s`, description: description.value.trim() },
    }),
    done: (snapshot) => { toast(`Snapshot ${snapshot.id} taken`); refresh("snapshots"); },
  });
}

function parseLabels(text) {
  const labels = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const at = line.indexOf("=");
    const key = (at < 0 ? line : line.slice(0, at)).trim();
    labels[key] = at < 0 ? "" : line.slice(at + 1).trim();
  }
  return labels;
}

export function updateOptions(ctx, refresh) {
  const current = Object.entries(ctx.job.labels || {}).map(([k, v]) => `${k}=${v}`).join("\n");
  const labels = h("textarea", { class: "input textarea mono", name: "labels", rows: 6, spellcheck: "false" });
  labels.value = current;
  confirmAction({
    title: "Update job options",
    body: [
      h("p", {}, "A job's labels can change while it runs. One ", h("code", {}, "key=value"), " a line; lowercase letters, digits, ", h("code", {}, "_"), " and ", h("code", {}, "-"), "."),
      field("Labels", labels),
    ],
    confirmLabel: "Update job",
    run: () => api(ctx.paths.job, { method: "PUT", query: { updateMask: "labels" }, body: { labels: parseLabels(labels.value) } }),
    done: () => { toast("Job options updated"); refresh(); },
  });
}

// The fields of a job that belong to the job tidegate made of it, not to its description.
const NOT_COPIED = [
  "id", "currentState", "currentStateTime", "requestedState", "createTime", "startTime", "replaceJobId",
  "replacedByJobId", "clientRequestId", "createdFromSnapshotId", "stageStates", "executionInfo", "pipelineDescription",
];

export function createFromSnapshot(ctx, snapshot, navigate) {
  const name = h("input", { class: "input", name: "name", required: true, value: `${ctx.job.name}-restored`.slice(0, 1024) });
  confirmAction({
    title: "Create a job from this snapshot",
    body: [
      h("p", {}, "A new job runs the same pipeline as ", h("strong", {}, ctx.job.name), ", starting from the state saved in snapshot ", h("code", {}, snapshot.id), "."),
      field("Job name", name),
    ],
    confirmLabel: "Create job",
    run: () => {
      const body = { ...ctx.job };
      for (const key of NOT_COPIED) delete body[key];
      body.name = name.value.trim();
      body.createdFromSnapshotId = snapshot.id;
      return api(ctx.paths.jobs, { method: "POST", body });
    },
    done: (job) => {
      toast(`Job ${job.name} created`);
      const enc = encodeURIComponent;
      navigate(`/ui/projects/${enc(job.projectId)}/locations/${enc(job.location)}/jobs/${enc(job.id)}`);
    },
  });
}

export function deleteSnapshot(ctx, snapshot, refresh) {
  confirmAction({
    title: "Delete this snapshot?",
    body: h("p", {}, "Snapshot ", h("code", {}, snapshot.id), " and its saved state are deleted. Jobs already started from it run on."),
    confirmLabel: "Delete snapshot",
    danger: true,
    run: () => api(ctx.paths.snapshotOf(snapshot.id), { method: "DELETE" }),
    done: () => { toast("Snapshot deleted"); refresh("snapshots"); },
  });
}

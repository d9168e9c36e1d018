// The one way the console talks to the server: its public REST API, same origin.
// Every call goes through api(), which adds `Authorization: Bearer <token>` when an API
// token is set (Settings), and turns Google's error body into an ApiError that carries
// the server's message and reason.

const TOKEN_KEY = "tidegate.apiToken";

export class ApiError extends Error {
  constructor(status, message, reason = "", body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.reason = reason;
    this.body = body;
  }
}

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

export async function api(path, { method = "GET", query = {}, body } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, `The server cannot be reached (${error.message}).`, "UNREACHABLE");
  }
  const text = await response.text();
  let data = {};
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { raw: text };
    }
  }
  if (!response.ok) {
    const error = data.error || {};
    const info = (error.details || []).find((d) => String(d["@type"] || "").endsWith("ErrorInfo")) || {};
    throw new ApiError(response.status, error.message || `HTTP ${response.status}`, info.reason || error.status || "", data);
  }
  return data;
}

const enc = encodeURIComponent;

/** Paths of one job's resources, in Dataflow's API and tidegate's own. */
export function jobPaths(project, location, jobId) {
  const v1b3 = `/v1b3/projects/${enc(project)}/locations/${enc(location)}`;
  const own = `/tidegate/v1/projects/${enc(project)}/locations/${enc(location)}`;
  const job = `${v1b3}/jobs/${enc(jobId)}`;
  return {
    jobs: `${v1b3}/jobs`,
    job,
    messages: `${job}/messages`,
    metrics: `${job}/metrics`,
    executionDetails: `${job}/executionDetails`,
    snapshot: `${job}:snapshot`,
    snapshots: `${job}/snapshots`,
    snapshotOf: (id) => `${v1b3}/snapshots/${enc(id)}`,
    history: `${own}/jobs/${enc(jobId)}/history`,
    graph: `${own}/jobs/${enc(jobId)}/graph`,
    logs: `${own}/jobs/${enc(jobId)}/logs`,
  };
}

export function listPath(project, location) {
  return location
    ? `/v1b3/projects/${enc(project)}/locations/${enc(location)}/jobs`
    : `/v1b3/projects/${enc(project)}/jobs:aggregated`;
}

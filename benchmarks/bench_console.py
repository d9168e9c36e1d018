"""The console's job page: time until a job of 1,000 messages and a 50-step graph is shown.

    .venv/bin/python benchmarks/bench_console.py [--runs 7] [--messages 1000] [--steps 50]

Starts ``tidegate server --engines beam`` on a fresh SQLite store, runs one real Beam batch
job whose pipeline has ``--steps`` top-level steps and whose first step logs one warning
per element (``--messages`` of them: each is a job message), then opens the job's page in
Debian's headless Chromium (``/usr/bin/chromium``, as the browser tests do) ``--runs``
times. Each run is a full page load, timed from navigation until the page says it is ready
(``body[data-ready=job]``: summary, graph and the first page of messages read and drawn),
with every one of the graph's steps on the page; a second variant opens the Messages tab
and also waits for every message row. Prints the medians next to a baseline measured in the
same run, the load of a trivial page of the same server (``/healthz``), and their ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import httpx
from apache_beam.internal.cloudpickle import cloudpickle
from playwright.sync_api import Page, sync_playwright

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker cannot import this module

ROOT = Path(__file__).resolve().parent.parent
TIDEGATE = Path(sys.executable).with_name("tidegate")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROJECT = "bench"
LOCATION = "us-central1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log(value: int) -> int:
    logging.getLogger("bench").warning("element %d of the benchmark's input", value)
    return value


def _step(value: int) -> int:
    return value + 1


def staged(folder: Path, steps: int, messages: int) -> Path:
    """A pipeline of ``steps`` top-level steps: Create, a step logging each element, maps, a write."""
    pipeline = beam.Pipeline()
    data = pipeline | "Numbers" >> beam.Create(list(range(messages))) | "Log" >> beam.Map(_log)
    for index in range(steps - 3):
        data = data | f"Step {index + 1:02d}" >> beam.Map(_step)
    _ = data | "Write" >> beam.io.WriteToText(str(folder / "out.txt"), shard_name_template="")
    path = folder / "pipeline.pb"
    path.write_bytes(pipeline.to_runner_api().SerializeToString())
    return path


def count_messages(base: str, job_id: str) -> int:
    url = f"{base}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs/{job_id}/messages"
    total, token = 0, ""
    while True:
        page = httpx.get(url, params={"pageSize": 1000, "pageToken": token}, timeout=30).json()
        total += len(page.get("jobMessages", []))
        token = page.get("nextPageToken", "")
        if not token:
            return total


def prepare(base: str, folder: Path, steps: int, messages: int) -> str:
    options = {"pipelineUrl": str(staged(folder, steps, messages)), "project": PROJECT}
    body = {
        "name": "bench-console",
        "type": "JOB_TYPE_BATCH",
        "environment": {"sdkPipelineOptions": {"options": options}},
    }
    job = httpx.post(f"{base}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs", json=body, timeout=60).json()
    url = f"{base}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs/{job['id']}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        state = httpx.get(url, timeout=30).json()["currentState"]
        if state == "JOB_STATE_DONE" and count_messages(base, job["id"]) >= messages:
            return str(job["id"])
        if state in ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
            raise SystemExit(f"the benchmark's job ended {state}")
        time.sleep(0.5)
    raise SystemExit("the benchmark's job did not end within 600 s")


def timed(page: Page, url: str, ready: str) -> float:
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_function(ready, timeout=60_000)
    return time.perf_counter() - start


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        folder = Path(tmp)
        port = free_port()
        base = f"http://localhost:{port}"
        command = [str(TIDEGATE), "server", "--port", str(port), "--grpc-port", "0", "--job-port", "0"]
        command += ["--engines", "beam", "--data-dir", str(folder / "data")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
        with (folder / "server.log").open("wb") as log:
            server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            job_id = prepare(base, folder, args.steps, args.messages)
            graph = httpx.get(f"{base}/tidegate/v1/projects/{PROJECT}/locations/{LOCATION}/jobs/{job_id}/graph").json()
            shown = count_messages(base, job_id)
            page_url = f"{base}/ui/projects/{PROJECT}/locations/{LOCATION}/jobs/{job_id}"
            ready = "document.body.dataset.ready === 'job'"
            graph_ready = f"() => {ready} && document.querySelectorAll('.graph-node').length === {len(graph['nodes'])}"
            messages_ready = f"() => {ready} && document.querySelectorAll('.message').length >= {min(shown, 1000)}"
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                timed(page, page_url, graph_ready)  # a first load, not counted: the browser's own start-up
                baseline, job_page, messages_tab = [], [], []
                for _ in range(args.runs):
                    baseline.append(timed(page, f"{base}/healthz", "() => document.readyState === 'complete'"))
                    job_page.append(timed(page, page_url, graph_ready))
                    messages_tab.append(timed(page, page_url + "?tab=messages", messages_ready))
                browser.close()
        finally:
            server.terminate()
            server.wait(30)
    base_ms = median_ms(baseline)
    print(
        f"job {job_id}: {len(graph['nodes'])} steps, {len(graph['edges'])} edges, {shown} messages;"
        f" {args.runs} runs, medians"
    )
    print(f"{'page':<44} {'median ms':>10} {'ratio':>8}")
    print(f"{'baseline: GET /healthz (trivial page)':<44} {base_ms:>10.1f} {1.0:>8.1f}")
    for name, samples in (
        ("job page (summary, graph)", job_page),
        ("job page, Messages tab (every row)", messages_tab),
    ):
        print(f"{name:<44} {median_ms(samples):>10.1f} {median_ms(samples) / base_ms:>8.1f}")


if __name__ == "__main__":
    main()

"""The console's streaming flows in a real browser, over a scripted streaming engine.

No local engine here runs a streaming job except Flink, whose own behaviour (drain, savepoints,
updates, its plan and metrics) has tests of its own (``test_flink_*``). This module drives the
console's side of the same flows: the REST app, the store, the service and the scheduler are
the real ones, in one process; the engine is ``tests.engines.ScriptedEngine``, whose runs start
at once and report Flink-shaped metrics (records out per operator, output watermarks) and a
plan. It covers: the watermark-lag and records-per-second charts, a drain that succeeds, a
snapshot taken, a job created from it, and the links between a job and its replacement.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import Page, expect

from tests.browser import browser, page, shot
from tests.engines import ScriptedEngine
from tidegate.api.rest.app import create_app
from tidegate.engines.base import EngineState, Handle, LaunchRequest
from tidegate.model import GraphEdge, GraphNode, JobGraph, MetricValue, StageDetails
from tidegate.scheduler.loop import Scheduler, SchedulerSettings
from tidegate.service.jobs import JobService
from tidegate.store import Store

from ..acceptance.conftest import free_port

pytestmark = pytest.mark.slow
__all__ = ["browser", "page"]  # the fixtures this module uses

PROJECT = "streams"
LOCATION = "us-central1"
RATE = 40  # records a second out of the source


class StreamingEngine(ScriptedEngine):
    """Runs that start at once and stream: records and watermarks that move with the clock, and a plan."""

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[str, float] = {}

    def launch(self, request: LaunchRequest) -> Handle:
        handle = super().launch(request)
        self.runs[request.job_id].state = EngineState.RUNNING
        self.started[request.job_id] = time.time()
        return handle

    def metrics(self, handle: Handle) -> list[MetricValue]:
        run = self._kept(handle)
        if run.state is EngineState.RUNNING:  # once ended, the last ones stay
            seconds = time.time() - self.started[handle.ref]
            records = int(seconds * RATE)
            watermark = int((time.time() - 3 - seconds % 2) * 1000)  # 3 to 5 s behind
            run.metrics = [
                MetricValue("numRecordsOut", "Parse", records, "dataflow/v1b3"),
                MetricValue("numRecordsOut", "Sink__out", records // 2, "dataflow/v1b3"),
                MetricValue("currentOutputWatermark", "Window", watermark, "dataflow/v1b3"),
            ]
            run.stages = [
                StageDetails("v1", "RUNNING", steps=("Source: events", "Parse")),
                StageDetails("v2", "RUNNING", steps=("Window", "Sink: out")),
            ]
        return list(run.metrics)

    def plan(self, handle: Handle) -> JobGraph | None:
        self._kept(handle)
        return JobGraph(
            "flink-plan",
            (
                GraphNode("v1", "Source: events -> Parse", steps=("Source: events", "Parse")),
                GraphNode("v2", "Window -> Sink: out", steps=("Window", "Sink: out")),
            ),
            (GraphEdge("v1", "v2", "HASH"),),
        )


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The REST app, the store and a scheduler over the streaming engine, served on a free port."""
    folder = tmp_path_factory.mktemp("console-streaming")
    store = Store(f"sqlite:///{folder / 'tidegate.db'}")
    store.migrate()
    service = JobService(store)
    scheduler = Scheduler(service, {"beam": StreamingEngine()}, SchedulerSettings(work_dir=folder / "runs"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    scheduler.start()
    thread.start()
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not server.started:
        time.sleep(0.05)
    assert server.started, "the in-process server did not start"
    yield url
    server.should_exit = True
    thread.join(30)
    scheduler.stop()
    store.close()


def create(base: str, name: str, **body: Any) -> dict[str, Any]:
    payload = {"name": name, "type": "JOB_TYPE_STREAMING", "labels": {"pipeline": "events"}, **body}
    response = httpx.post(f"{base}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs", json=payload, timeout=30)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def state_of(base: str, job_id: str) -> str:
    url = f"{base}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs/{job_id}"
    return str(httpx.get(url, timeout=10).json()["currentState"])


def wait_state(base: str, job_id: str, state: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and state_of(base, job_id) != state:
        time.sleep(0.1)
    assert state_of(base, job_id) == state


def open_job(page: Page, base: str, job_id: str, tab: str = "") -> None:
    page.goto(f"{base}/ui/projects/{PROJECT}/locations/{LOCATION}/jobs/{job_id}" + (f"?tab={tab}" if tab else ""))
    page.wait_for_selector("body[data-ready=job]")


def test_a_streaming_jobs_charts_and_graph_follow_its_metrics(base: str, page: Page) -> None:
    job = create(base, "events-charts")
    wait_state(base, job["id"], "JOB_STATE_RUNNING")
    open_job(page, base, job["id"], "metrics")
    expect(page.locator("[data-chart=watermark-lag]")).to_contain_text("Watermark lag")
    page.wait_for_function(
        "() => Number(document.querySelector('[data-chart=throughput] .chart-svg').dataset.points) >= 3", timeout=30_000
    )
    rate = float(page.locator("[data-chart=throughput] .chart-svg").get_attribute("data-max") or 0)
    lag = float(page.locator("[data-chart=watermark-lag] .chart-svg").get_attribute("data-max") or 0)
    assert 0.8 * RATE * 1.5 <= rate <= 1.2 * RATE * 1.5 + 20  # Parse and the sink: 1.5 times the source's rate
    assert 2.5 <= lag <= 8, lag  # the engine's watermark is 3 to 5 s behind (the page samples within 2 s)
    expect(page.locator("[data-chart=throughput] .chart-title")).to_have_text("Records per second (all steps)")
    shot(page, "streaming-metrics-charts")
    page.click("button[data-tab=graph]")
    expect(page.locator(".graph-node")).to_have_count(2)
    expect(page.locator(".graph-node[data-step='Source: events -> Parse']")).to_have_attribute("data-state", "RUNNING")
    expect(page.locator(".graph-edge")).to_have_count(1)
    expect(page.locator(".toolbar")).to_contain_text("from Flink's job plan")
    shot(page, "streaming-graph")


def test_drain_snapshot_and_a_job_from_the_snapshot(base: str, page: Page) -> None:
    job = create(base, "events-snap")
    wait_state(base, job["id"], "JOB_STATE_RUNNING")
    open_job(page, base, job["id"], "snapshots")
    expect(page.locator("[data-panel=snapshots]")).to_contain_text("No snapshots")
    page.click(".job-actions button[data-action=snapshot]")
    dialog = page.locator("dialog[open]")
    dialog.locator("input[name=description]").fill("before the schema change")
    dialog.locator("input[name=ttl]").fill("3")
    shot(page, "streaming-snapshot-dialog")
    dialog.locator("button[data-action=confirm]").click()
    row = page.locator("[data-panel=snapshots] tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("before the schema change")
    expect(row.locator(".badge")).to_have_text("Ready")
    shot(page, "streaming-snapshots")
    snapshot_id = row.get_attribute("data-snapshot")

    row.locator("button[data-action=create-from-snapshot]").click()
    dialog.locator("input[name=name]").fill("events-restored")
    dialog.locator("button[data-action=confirm]").click()
    page.wait_for_url(lambda url: "/jobs/" in url and job["id"] not in url)
    page.wait_for_selector("body[data-ready=job]")
    expect(page.locator(".job-title")).to_have_text("events-restored")
    expect(page.locator("[data-section=summary]")).to_contain_text(str(snapshot_id))
    expect(page.locator("[data-section=summary]")).to_contain_text("Streaming")
    expect(page.locator("[data-section=labels] .chip")).to_have_text(["pipeline: events"])
    expect(page.locator(".job-state .badge")).to_have_text("Running")
    shot(page, "streaming-job-from-snapshot")

    open_job(page, base, job["id"])
    page.click(".job-actions button[data-action=drain]")
    page.locator("dialog[open] button[data-action=confirm]").click()
    expect(page.locator(".job-state .badge").first).to_have_text("Drained")
    page.click("button[data-tab=timeline]")
    expect(page.locator(".timeline-item").last).to_have_attribute("data-to", "JOB_STATE_DRAINED")
    expect(page.locator(".timeline-item[data-to=JOB_STATE_DRAINING]")).to_contain_text("JOB_STATE_DRAINED requested")
    shot(page, "streaming-drained")


def test_a_job_and_its_replacement_link_to_each_other(base: str, page: Page) -> None:
    old = create(base, "events-v1")
    wait_state(base, old["id"], "JOB_STATE_RUNNING")
    new = create(base, "events-v1", replaceJobId=old["id"])
    wait_state(base, old["id"], "JOB_STATE_UPDATED")
    open_job(page, base, old["id"])
    expect(page.locator(".job-state .badge")).to_have_text("Updated")
    link = page.locator("[data-section=summary] dd a", has_text=new["id"])
    expect(page.locator("[data-section=summary] dt", has_text="Replaced by")).to_have_count(1)
    shot(page, "job-replaced-by")
    link.click()
    page.wait_for_selector("body[data-ready=job]")
    assert new["id"] in page.url
    expect(page.locator("[data-section=summary] dt", has_text="Replaces")).to_have_count(1)
    expect(page.locator("[data-section=summary] dd a", has_text=old["id"])).to_have_count(1)
    shot(page, "job-replaces")

"""The web console in a real browser: Debian's headless Chromium, driven by Playwright, against a real server.

Jobs run on the Beam engine (real batch pipelines, staged as DataflowRunner stages them).
Every test writes screenshots to ``test-artifacts/screenshots/`` (CI keeps that folder).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import httpx
import pytest
from apache_beam.internal.cloudpickle import cloudpickle
from playwright.sync_api import Page, expect

from tests.browser import browser, page, shot

from .conftest import LOCATION, Server

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker cannot import this module


# -- pipelines and jobs -------------------------------------------------------------------------


def _slowly(pause: float) -> Callable[[int], int]:
    def slowly(value: int) -> int:
        time.sleep(pause)
        if value % 10 == 0:
            logging.getLogger("console-test").warning("reached %d", value)
        return value

    return slowly


class _Seen(beam.DoFn):  # type: ignore[misc]
    def __init__(self) -> None:
        self.seen = beam.metrics.Metrics.counter("demo", "seen")

    def process(self, value: int) -> Iterator[int]:
        self.seen.inc()
        yield value


def _pause(pause: float) -> Callable[[int], int]:
    def again(value: int) -> int:
        time.sleep(pause)
        return value

    return again


STEPS = ("Numbers", "Slowly", "Seen", "Shuffle", "Again", "Evens", "Odds", "Merge", "Format", "Write")


def staged_pipeline(folder: Path, name: str, *, count: int = 40, pause: float = 0.0) -> Path:
    """A branching batch pipeline of two slow stages (``STEPS``), staged as DataflowRunner stages it."""
    pipeline = beam.Pipeline()
    seen = (
        pipeline
        | "Numbers" >> beam.Create(list(range(count)))
        | "Slowly" >> beam.Map(_slowly(pause))
        | "Seen" >> beam.ParDo(_Seen())
        | "Shuffle" >> beam.Reshuffle()
        | "Again" >> beam.Map(_pause(pause))
    )
    evens = seen | "Evens" >> beam.Filter(lambda v: v % 2 == 0)
    odds = seen | "Odds" >> beam.Filter(lambda v: v % 2 == 1)
    output = folder / f"{name}.txt"
    _ = (
        (evens, odds)
        | "Merge" >> beam.Flatten()
        | "Format" >> beam.Map(str)
        | "Write" >> beam.io.WriteToText(str(output), shard_name_template="")
    )
    staged = folder / f"{name}.pb"
    staged.write_bytes(pipeline.to_runner_api().SerializeToString())
    return staged


def create_job(server: Server, project: str, name: str, *, location: str = LOCATION, **body: Any) -> dict[str, Any]:
    payload = {"name": name, "type": "JOB_TYPE_BATCH", **body}
    response = httpx.post(f"{server.base}/v1b3/projects/{project}/locations/{location}/jobs", json=payload, timeout=30)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def beam_job(server: Server, project: str, name: str, folder: Path, **pipeline: Any) -> dict[str, Any]:
    staged = staged_pipeline(folder, name, **pipeline)
    options = {"pipelineUrl": str(staged), "project": project, "job_name": name}
    return create_job(
        server, project, name, labels={"team": "data"}, environment={"sdkPipelineOptions": {"options": options}}
    )


def held_job(server: Server, project: str, name: str, **fields: Any) -> dict[str, Any]:
    """A job held in JOB_STATE_STOPPED: it stays active and never runs."""
    return create_job(server, project, name, requestedState="JOB_STATE_STOPPED", **fields)


def wait_state(server: Server, job: dict[str, Any], *states: str, timeout: float = 90) -> str:
    url = f"{server.base}/v1b3/projects/{job['projectId']}/locations/{job['location']}/jobs/{job['id']}"
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = httpx.get(url, timeout=10).json()["currentState"]
        if state in states:
            return str(state)
        time.sleep(0.2)
    raise AssertionError(f"job {job['id']} is {state}, not {states} after {timeout} s")


def job_url(server: Server, job: dict[str, Any], tab: str = "") -> str:
    url = f"{server.base}/ui/projects/{job['projectId']}/locations/{job['location']}/jobs/{job['id']}"
    return url + (f"?tab={tab}" if tab else "")


# -- the browser (tests.browser) and the server ----------------------------------------------------

__all__ = ["browser", "page"]  # the fixtures this module uses


@pytest.fixture(scope="module")
def beam_server(start_server: Callable[..., Server]) -> Server:
    return start_server("sqlite", "beam")


def job_rows(page: Page) -> list[str]:
    return [name.strip() for name in page.locator(".jobs-table tbody .job-link").all_inner_texts()]


def open_list(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready=jobs]")


# -- the job list -------------------------------------------------------------------------------


def test_the_job_list_filters_by_project_region_state_and_name_kept_in_the_address(
    beam_server: Server, page: Page, project: str, tmp_path: Path
) -> None:
    done = beam_job(beam_server, project, "alpha-done", tmp_path)
    held_job(beam_server, project, "alpha-held")
    held_job(beam_server, project, "beta-held")
    held_job(beam_server, project, "alpha-eu", location="europe-west1")
    other = f"{project}-other"
    held_job(beam_server, other, "elsewhere")
    wait_state(beam_server, done, "JOB_STATE_DONE")

    page.goto(f"{beam_server.base}/")  # / leads to the console
    page.wait_for_selector("body[data-ready=jobs]")
    assert page.url.startswith(f"{beam_server.base}/ui/")
    open_list(page, f"{beam_server.base}/ui/?project={project}")
    expect(page.locator(".jobs-table tbody tr")).to_have_count(4)
    assert set(job_rows(page)) == {"alpha-done", "alpha-held", "beta-held", "alpha-eu"}
    assert page.locator("select[name=project] option").all_inner_texts().count(other) == 1
    expect(page.locator("tr", has_text="alpha-done").locator(".badge")).to_have_text("Done")
    shot(page, "jobs-list")

    page.select_option("select[name=state]", "terminated")
    page.wait_for_url(re.compile(r"state=terminated"))
    page.wait_for_selector("body[data-ready=jobs]")
    assert job_rows(page) == ["alpha-done"]
    page.select_option("select[name=state]", "active")
    page.wait_for_url(re.compile(r"state=active"))
    page.wait_for_selector("body[data-ready=jobs]")
    assert set(job_rows(page)) == {"alpha-held", "beta-held", "alpha-eu"}

    page.fill("input[name=region]", "europe-west1")
    page.press("input[name=region]", "Enter")
    page.wait_for_url(re.compile(r"region=europe-west1"))
    page.wait_for_selector("body[data-ready=jobs]")
    assert job_rows(page) == ["alpha-eu"]
    page.fill("input[name=region]", "")
    page.press("input[name=region]", "Enter")
    page.wait_for_url(lambda url: "region=" not in url)

    page.fill("input[name=q]", "alpha")
    page.wait_for_url(re.compile(r"q=alpha"))
    page.wait_for_selector("body[data-ready=jobs]")
    assert set(job_rows(page)) == {"alpha-held", "alpha-eu"}
    assert page.evaluate("document.activeElement.name") == "q"  # typing goes on in the search box
    shot(page, "jobs-list-filtered")

    page.reload()  # the filters live in the address: a reload (or a shared link) shows the same
    page.wait_for_selector("body[data-ready=jobs]")
    assert set(job_rows(page)) == {"alpha-held", "alpha-eu"}
    assert page.input_value("input[name=q]") == "alpha"
    assert page.input_value("select[name=state]") == "active"
    assert page.input_value("select[name=project]") == project

    page.select_option("select[name=project]", other)
    page.wait_for_url(re.compile(rf"project={re.escape(other)}"))
    page.wait_for_selector("body[data-ready=jobs]")
    assert job_rows(page) == []  # the name filter stays: "elsewhere" does not start with "alpha"
    page.fill("input[name=q]", "")
    page.wait_for_url(lambda url: "q=" not in url)
    page.wait_for_selector("body[data-ready=jobs]")
    assert job_rows(page) == ["elsewhere"]


def test_the_job_list_pages_and_updates_live(beam_server: Server, page: Page, project: str) -> None:
    for index in range(5):
        held_job(beam_server, project, f"paged-{index}")
    open_list(page, f"{beam_server.base}/ui/?project={project}&size=2")
    assert job_rows(page) == ["paged-4", "paged-3"]  # newest first
    expect(page.locator("button[data-action=newer]")).to_be_disabled()
    page.click("button[data-action=older]")
    page.wait_for_url(re.compile(r"page="))
    page.wait_for_selector("body[data-ready=jobs]")
    assert job_rows(page) == ["paged-2", "paged-1"]
    expect(page.locator(".list-status")).to_have_text("Jobs 3\u20134")
    page.click("button[data-action=older]")
    page.wait_for_selector("body[data-ready=jobs]")
    expect(page.locator(".jobs-table tbody .job-link")).to_have_text(["paged-0"])
    expect(page.locator("button[data-action=older]")).to_be_disabled()
    shot(page, "jobs-list-last-page")
    page.click("button[data-action=newer]")
    page.wait_for_selector("body[data-ready=jobs]")
    expect(page.locator(".jobs-table tbody .job-link")).to_have_text(["paged-2", "paged-1"])
    page.click("button[data-action=newer]")
    page.wait_for_selector("body[data-ready=jobs]")
    expect(page.locator(".jobs-table tbody .job-link")).to_have_text(["paged-4", "paged-3"])

    held_job(beam_server, project, "paged-new")  # created behind the console's back: it shows up by itself
    expect(page.locator(".jobs-table tbody .job-link").first).to_have_text("paged-new", timeout=15_000)


# -- a job's page -------------------------------------------------------------------------------


def test_a_finished_jobs_page_shows_every_section(
    beam_server: Server, page: Page, project: str, tmp_path: Path
) -> None:
    job = beam_job(beam_server, project, "sections", tmp_path)
    wait_state(beam_server, job, "JOB_STATE_DONE")
    page.goto(job_url(beam_server, job))
    page.wait_for_selector("body[data-ready=job]")

    # The summary.
    info = page.locator("[data-section=summary]")
    expect(page.locator(".job-title")).to_have_text("sections")
    expect(info.locator("[data-field=id]")).to_have_text(job["id"])
    expect(info).to_contain_text("Batch")
    expect(info.locator("[data-field=engine]")).to_have_text("beam")
    expect(info.locator(".badge")).to_have_text("Done")
    for label in ("Created", "Started", "Ended", "Elapsed", "SDK"):
        expect(info.locator("dt", has_text=label)).to_have_count(1)
    expect(page.locator("[data-section=labels] .chip")).to_have_text(["team: data"])
    expect(page.locator("[data-section=options]")).to_contain_text("pipelineUrl")
    for action in ("cancel", "drain", "snapshot", "update"):  # nothing to act on once a job has ended
        expect(page.locator(f".job-actions button[data-action={action}]")).to_be_disabled()

    # The graph, with each step's count and state.
    nodes = page.locator(".graph-node")
    expect(nodes).to_have_count(len(STEPS))
    for name in STEPS:
        expect(page.locator(f".graph-node[data-step='{name}']")).to_have_count(1)
    expect(page.locator(".graph-node[data-step=Seen] .graph-count")).to_have_text("40 el.")
    expect(page.locator(".graph-node[data-step=Evens] .graph-count")).to_have_text("20 el.")
    assert set(page.locator(".graph-node").evaluate_all("ns => ns.map(n => n.dataset.state)")) == {"SUCCEEDED"}
    expect(page.locator(".graph-edge")).to_have_count(10)
    page.click(".graph-node[data-step=Seen]")
    panel = page.locator(".step-panel")
    expect(panel.locator("h3")).to_have_text("Seen")
    expect(panel).to_contain_text("demo/seen")
    expect(panel).to_contain_text("40")
    shot(page, "job-graph")

    # Execution details.
    page.click("button[data-tab=stages]")
    expect(page.locator("[data-panel=stages] tbody tr").first).to_be_visible()
    expect(page.locator("[data-panel=stages] tbody")).to_contain_text("Succeeded")
    assert "tab=stages" in page.url
    shot(page, "job-execution-details")

    # Metrics: the counters (a finished job has nothing to sample).
    page.click("button[data-tab=metrics]")
    expect(page.locator("[data-panel=metrics] tr[data-metric=seen]")).to_contain_text("40")
    expect(page.locator("[data-panel=metrics] tr[data-metric=ElementCount]").first).to_be_visible()
    expect(page.locator("[data-chart=throughput]")).to_contain_text("The job has ended")
    shot(page, "job-metrics")

    # Messages, and the importance filter (kept in the address).
    page.click("button[data-tab=messages]")
    messages = page.locator("[data-panel=messages] .message")
    expect(messages.first).to_be_visible()
    every = messages.count()
    assert page.locator(".message[data-importance=JOB_MESSAGE_WARNING]", has_text="reached 30").count() == 1
    expect(page.locator("[data-panel=messages]")).to_contain_text("is now JOB_STATE_DONE")
    shot(page, "job-messages")
    page.select_option("select[name=importance]", "JOB_MESSAGE_WARNING")
    expect(page.locator("[data-panel=messages] .message").first).to_have_attribute(
        "data-importance", "JOB_MESSAGE_WARNING"
    )
    importances = set(messages.evaluate_all("ms => ms.map(m => m.dataset.importance)"))
    assert importances <= {"JOB_MESSAGE_WARNING", "JOB_MESSAGE_ERROR"} and messages.count() < every
    assert "importance=JOB_MESSAGE_WARNING" in page.url
    shot(page, "job-messages-warnings")

    # Worker logs: everything the job's processes printed, to the end.
    page.click("button[data-tab=logs]")
    expect(page.locator("[data-panel=logs] [data-complete]")).to_be_visible()
    expect(page.locator("[data-panel=logs] .log-line").first).to_be_visible()
    expect(page.locator("[data-panel=logs] .log-lines")).to_contain_text("reached 30")
    shot(page, "job-worker-logs")

    # The state history, with who took each edge.
    page.click("button[data-tab=timeline]")
    items = page.locator(".timeline-item")
    expect(items).to_have_count(4)
    assert items.evaluate_all("xs => xs.map(x => x.dataset.to)") == [
        "JOB_STATE_STOPPED",
        "JOB_STATE_PENDING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_DONE",
    ]
    expect(items.last.locator(".actor")).to_have_text("service")
    expect(items.last).to_contain_text("the run succeeded")
    shot(page, "job-state-history")

    # Snapshots: none for a batch job, and none can be taken.
    page.click("button[data-tab=snapshots]")
    expect(page.locator("[data-panel=snapshots]")).to_contain_text("No snapshots")
    expect(page.locator("button[data-action=take-snapshot]")).to_be_disabled()
    shot(page, "job-snapshots")

    # The address keeps the tab; back goes to the list of the job's project.
    page.reload()
    page.wait_for_selector("body[data-ready=job]")
    expect(page.locator("button[data-tab=snapshots]")).to_have_class(re.compile("active"))
    page.click(".breadcrumb a")
    page.wait_for_selector("body[data-ready=jobs]")
    assert job_rows(page) == ["sections"]


def test_an_unknown_job_says_so(beam_server: Server, page: Page, project: str) -> None:
    page.goto(f"{beam_server.base}/ui/projects/{project}/locations/{LOCATION}/jobs/2026-01-01_00_00_00-1")
    page.wait_for_selector("body[data-ready=job]")
    expect(page.locator(".notice-bad")).to_contain_text("404")
    expect(page.locator(".notice-bad")).to_contain_text("2026-01-01_00_00_00-1")
    shot(page, "job-not-found")


def test_a_running_job_is_live_and_is_cancelled_after_a_confirmation(
    beam_server: Server, page: Page, project: str, tmp_path: Path
) -> None:
    job = beam_job(beam_server, project, "live", tmp_path, count=60, pause=0.25)  # two stages of 15 s
    page.goto(job_url(beam_server, job))
    page.wait_for_selector("body[data-ready=job]")
    expect(page.locator(".job-state .badge")).to_have_text("Running", timeout=60_000)
    expect(page.locator(".live")).to_be_visible()
    # The graph follows the run without a reload: the first slow stage running, then its counts, then the next.
    expect(page.locator(".graph-node[data-step=Slowly]")).to_have_attribute("data-state", "RUNNING", timeout=60_000)
    shot(page, "job-running-graph")
    expect(page.locator(".graph-node[data-step=Slowly] .graph-count")).to_have_text("60 el.", timeout=60_000)
    expect(page.locator(".graph-node[data-step=Again]")).to_have_attribute("data-state", "RUNNING")
    expect(page.locator(".job-state .badge")).to_have_text("Running")
    shot(page, "job-running-graph-second-stage")
    # The throughput chart, sampled while the page is open: the first stage's elements, counted while the job runs.
    page.click("button[data-tab=metrics]")
    expect(page.locator("[data-chart=throughput] .chart-line")).to_have_count(1)
    peak = page.locator("[data-chart=throughput] .chart-svg").get_attribute("data-max")
    assert peak is not None and float(peak) > 0, peak
    shot(page, "job-running-metrics")
    page.click(".job-actions button[data-action=cancel]")
    dialog = page.locator("dialog[open]")
    expect(dialog).to_contain_text("Cancel this job?")
    shot(page, "job-cancel-confirmation")
    dialog.locator("button[data-action=dismiss]").click()  # a change of mind changes nothing
    expect(page.locator("dialog[open]")).to_have_count(0)
    assert wait_state(beam_server, job, "JOB_STATE_RUNNING") == "JOB_STATE_RUNNING"
    page.click(".job-actions button[data-action=cancel]")
    page.locator("dialog[open] button[data-action=confirm]").click()
    expect(page.locator(".job-state .badge").first).to_have_text("Cancelled", timeout=60_000)
    expect(page.locator(".live")).to_be_hidden()
    page.click("button[data-tab=timeline]")
    cancel = page.locator(".timeline-item[data-to=JOB_STATE_CANCELLING]")  # the service's edge, on the user's request
    expect(cancel).to_contain_text("JOB_STATE_CANCELLED requested")
    expect(cancel.locator(".actor")).to_have_text("service")
    expect(page.locator(".timeline-item").last).to_have_attribute("data-to", "JOB_STATE_CANCELLED")
    shot(page, "job-cancelled-history")


def test_refused_actions_show_the_servers_reason_and_options_update(
    beam_server: Server, page: Page, project: str, tmp_path: Path
) -> None:
    job = beam_job(beam_server, project, "refusals", tmp_path, count=400, pause=0.25)
    wait_state(beam_server, job, "JOB_STATE_RUNNING")
    page.goto(job_url(beam_server, job))
    page.wait_for_selector("body[data-ready=job]")
    dialog = page.locator("dialog[open]")

    page.click(".job-actions button[data-action=drain]")
    dialog.locator("button[data-action=confirm]").click()
    error = dialog.locator(".dialog-error")
    expect(error).to_contain_text("only streaming jobs can be drained")
    expect(error).to_contain_text("400 REQUEST_NOT_ALLOWED")
    shot(page, "job-drain-refused")
    dialog.locator("button[data-action=dismiss]").click()

    page.click(".job-actions button[data-action=snapshot]")
    dialog.locator("input[name=description]").fill("before the change")
    dialog.locator("button[data-action=confirm]").click()
    expect(dialog.locator(".dialog-error")).to_contain_text("SNAPSHOT_NOT_STREAMING")
    shot(page, "job-snapshot-refused")
    dialog.locator("button[data-action=dismiss]").click()

    page.click(".job-actions button[data-action=update]")
    expect(dialog.locator("textarea[name=labels]")).to_have_value("team=data")
    dialog.locator("textarea[name=labels]").fill("team=data\nOwner=Me")
    dialog.locator("button[data-action=confirm]").click()
    expect(dialog.locator(".dialog-error")).to_contain_text("INVALID_LABELS")
    expect(dialog.locator(".dialog-error")).to_contain_text("Owner")
    shot(page, "job-update-options-refused")
    dialog.locator("textarea[name=labels]").fill("team=data\nowner=me")
    dialog.locator("button[data-action=confirm]").click()
    expect(page.locator("dialog[open]")).to_have_count(0)
    expect(page.locator("[data-section=labels] .chip")).to_have_text(["owner: me", "team: data"])  # in key order
    shot(page, "job-options-updated")
    url = f"{beam_server.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs/{job['id']}"
    assert httpx.get(url).json()["labels"] == {"team": "data", "owner": "me"}
    assert httpx.get(url).json()["currentState"] == "JOB_STATE_RUNNING"  # the refusals changed nothing else

    page.click(".job-actions button[data-action=cancel]")
    dialog.locator("button[data-action=confirm]").click()
    wait_state(beam_server, job, "JOB_STATE_CANCELLED")


def test_the_api_token_goes_with_every_call(beam_server: Server, page: Page, project: str) -> None:
    held_job(beam_server, project, "with-token")
    open_list(page, f"{beam_server.base}/ui/?project={project}")
    page.click("button[data-action=token]")
    page.locator("dialog[open] input[name=token]").fill("s3cret-token")
    shot(page, "settings-api-token")
    seen: list[dict[str, str]] = []
    page.on("request", lambda request: seen.append(request.headers) if "/v1b3/" in request.url else None)
    page.locator("dialog[open] button[data-action=confirm]").click()
    expect(page.locator("button[data-action=token]")).to_have_text(re.compile("API token set"))
    page.wait_for_selector("body[data-ready=jobs]")
    assert seen and all(headers.get("authorization") == "Bearer s3cret-token" for headers in seen)
    page.click("button[data-action=token]")
    page.locator("dialog[open] input[name=token]").fill("")
    page.locator("dialog[open] button[data-action=confirm]").click()
    expect(page.locator("button[data-action=token]")).to_have_text(re.compile(r"^\s*API token\s*$"))
    page.wait_for_selector("body[data-ready=jobs]")
    seen.clear()
    page.reload()
    page.wait_for_selector("body[data-ready=jobs]")
    assert seen and all("authorization" not in headers for headers in seen)

"""The console's routes and what it reads that v1b3 lacks (graph, projects, name prefix), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from google.protobuf import json_format

from tests.engines import ScriptedEngine
from tidegate.api.rest.app import create_app
from tidegate.engines.base import EngineState, Handle
from tidegate.jobspec import JobPb
from tidegate.lifecycle import JobState, JobType
from tidegate.model import GraphNode, JobGraph, MetricValue, NewJob, StageDetails
from tidegate.scheduler.admission import Capacity
from tidegate.scheduler.loop import Scheduler, SchedulerSettings
from tidegate.service.jobs import JobService

BASE = "/v1b3/projects/proj/locations/us-central1"
OWN = "/tidegate/v1/projects/proj/locations/us-central1"


def call(service: JobService, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://tidegate") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(run())


def test_the_console_is_served_at_ui_and_leaves_the_other_routes_alone(service: JobService) -> None:
    root = call(service, "GET", "/")
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    assert call(service, "GET", "/ui").headers["location"] == "/ui/"
    for path in ("/ui/", "/ui/projects/p/locations/us-central1/jobs/2026-01-01_00_00_00-1"):
        page = call(service, "GET", path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
        assert '<script type="module" src="/ui/assets/js/app.js">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
    script = call(service, "GET", "/ui/assets/js/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "import" in script.text and script.headers["cache-control"] == "no-cache"
    assert call(service, "GET", "/ui/assets/console.css").headers["content-type"].startswith("text/css")
    missing = call(service, "GET", "/ui/assets/js/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    assert call(service, "GET", "/healthz").json() == {"status": "ok"}
    assert call(service, "GET", "/metrics").headers["content-type"].startswith("text/plain")  # Prometheus
    assert call(service, "GET", f"{BASE}/jobs").json() == {"jobs": []}


def test_the_package_ships_every_asset_the_page_loads() -> None:
    from tidegate.api.console import STATIC

    page = (STATIC / "index.html").read_text()
    for asset in ("console.css", "favicon.svg", "js/app.js"):
        assert f"/ui/assets/{asset}" in page and (STATIC / asset).is_file()
    modules = {p.name for p in (STATIC / "js").glob("*.js")}
    for module in modules:  # every import between the modules names a file that is there
        text = (STATIC / "js" / module).read_text()
        for line in text.splitlines():
            if line.startswith("import ") and " from " in line:
                target = line.rsplit(" from ", 1)[1].strip("\"'; ")
                assert target.startswith("./") and target[2:] in modules, f"{module}: {line}"


def _steps_job(new_job: Callable[..., NewJob], **fields: object) -> NewJob:
    pb = JobPb()
    json_format.ParseDict(
        {
            "steps": [
                {"kind": "ParallelRead", "name": "s1", "properties": {"user_name": "Read"}},
                {
                    "kind": "ParallelDo",
                    "name": "s2",
                    "properties": {"user_name": "Parse", "parallel_input": {"step_name": "s1"}},
                },
            ]
        },
        pb,
    )
    return new_job(spec=pb.SerializeToString(), **fields)


def test_a_jobs_graph(service: JobService, new_job: Callable[..., NewJob]) -> None:
    job = service.create_job(_steps_job(new_job))
    for path in (f"{OWN}/jobs/{job.id}/graph", f"/tidegate/v1/projects/proj/jobs/{job.id}/graph"):
        graph = call(service, "GET", path).json()
        assert graph["jobId"] == job.id and graph["origin"] == "steps" and graph["currentState"] == "JOB_STATE_STOPPED"
        assert [(n["id"], n["name"], n["kind"]) for n in graph["nodes"]] == [
            ("s1", "Read", "ParallelRead"),
            ("s2", "Parse", "ParallelDo"),
        ]
        assert graph["edges"] == [{"from": "s1", "to": "s2"}]
        assert "elementsOut" not in graph["nodes"][0]  # no run, no counts
    plain = service.create_job(new_job())
    assert call(service, "GET", f"{OWN}/jobs/{plain.id}/graph").json()["nodes"] == []
    missing = call(service, "GET", f"{OWN}/jobs/2026-01-01_00_00_00-1/graph")
    assert missing.status_code == 404 and "JOB_NOT_FOUND" in missing.text
    elsewhere = call(service, "GET", f"/tidegate/v1/projects/proj/locations/europe-west1/jobs/{job.id}/graph")
    assert elsewhere.status_code == 404
    assert call(service, "POST", f"{OWN}/jobs/{job.id}/graph").status_code == 405


def test_the_projects_with_jobs(service: JobService, new_job: Callable[..., NewJob]) -> None:
    assert call(service, "GET", "/tidegate/v1/projects").json() == {"projects": []}
    for project in ("zeta", "alpha", "alpha", "mid"):
        service.create_job(new_job(project_id=project))
    assert call(service, "GET", "/tidegate/v1/projects").json() == {
        "projects": [{"projectId": "alpha"}, {"projectId": "mid"}, {"projectId": "zeta"}]
    }


def test_list_jobs_by_name_prefix(service: JobService, new_job: Callable[..., NewJob]) -> None:
    for name in ("alpha-1", "alpha-2", "alphabet", "beta-1", "a-b", "a1b"):
        service.create_job(new_job(name=name))
    service.create_job(new_job(name="alpha-eu", location="europe-west1"))

    def names(path: str, **params: str) -> list[str]:
        response = call(service, "GET", path, params=params)
        assert response.status_code == 200, response.text
        return sorted(j["name"] for j in response.json()["jobs"])

    assert names(f"{BASE}/jobs", namePrefix="alpha") == ["alpha-1", "alpha-2", "alphabet"]
    assert names(f"{BASE}/jobs", namePrefix="alpha-") == ["alpha-1", "alpha-2"]
    assert names("/v1b3/projects/proj/jobs:aggregated", namePrefix="alpha-") == ["alpha-1", "alpha-2", "alpha-eu"]
    assert names(f"{BASE}/jobs", namePrefix="a_b") == []  # LIKE's wildcards are taken as they are
    assert names(f"{BASE}/jobs", namePrefix="a%") == []
    assert names(f"{BASE}/jobs", namePrefix="a-b") == ["a-b"]
    first = call(service, "GET", f"{BASE}/jobs", params={"namePrefix": "alpha", "pageSize": "2"}).json()
    rest = call(
        service,
        "GET",
        f"{BASE}/jobs",
        params={"namePrefix": "alpha", "pageSize": "2", "pageToken": first["nextPageToken"]},
    ).json()
    assert sorted(j["name"] for j in first["jobs"] + rest["jobs"]) == ["alpha-1", "alpha-2", "alphabet"]


class _PlanningEngine(ScriptedEngine):
    """A scripted engine that also has a plan of each run (as Flink's engine has)."""

    def plan(self, handle: Handle) -> JobGraph | None:
        self._kept(handle)  # a released run answers no more, as in the real engines
        return JobGraph("flink-plan", (GraphNode("v1", "Source: in -> Map", steps=("Source: in", "Map")),), ())


def test_a_graph_from_the_engines_plan_is_kept_when_the_run_ends(
    service: JobService, new_job: Callable[..., NewJob], tmp_path: Path
) -> None:
    engine = _PlanningEngine()
    scheduler = Scheduler(
        service, {"beam": engine}, SchedulerSettings(work_dir=tmp_path / "runs", capacity=Capacity(max_jobs=4))
    )
    job = service.create_job(new_job(type=JobType.JOB_TYPE_STREAMING))
    path = f"{OWN}/jobs/{job.id}/graph"
    assert call(service, "GET", path).json()["nodes"] == []  # not launched: no plan yet
    scheduler.tick()
    engine.run_of(job.id).state = EngineState.RUNNING
    engine.run_of(job.id).metrics = [MetricValue("numRecordsOut", "Map", 12, "dataflow/v1b3")]
    engine.run_of(job.id).stages = [StageDetails("v1", "RUNNING", steps=("Source: in", "Map"))]
    scheduler.tick()
    live = call(service, "GET", path).json()
    assert live["origin"] == "flink-plan"
    assert [(n["name"], n["state"], n.get("elementsOut")) for n in live["nodes"]] == [
        ("Source: in -> Map", "RUNNING", 12)
    ]
    engine.run_of(job.id).state = EngineState.SUCCEEDED
    for _ in range(5):
        scheduler.tick()
    assert service.store.get_job(job.id).current_state is JobState.JOB_STATE_DONE
    engine.run_of(job.id).released = True  # its engine answers no more (its files gone): what was kept shows
    kept = call(service, "GET", path).json()
    assert [(n["name"], n["state"], n.get("elementsOut")) for n in kept["nodes"]] == [
        ("Source: in -> Map", "SUCCEEDED", 12)
    ]

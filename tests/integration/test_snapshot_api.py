"""Snapshots over REST and gRPC (the adapters), with a scheduler over a scripted engine."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.cloud import dataflow_v1beta3 as dataflow

from tests.engines import ScriptedEngine
from tidegate.api.grpc_server import PACKAGE, GrpcApi, GrpcServer
from tidegate.api.rest.app import create_app
from tidegate.engines.base import EngineState
from tidegate.errors import FailedPrecondition, NotFound
from tidegate.lifecycle import JobState, JobType
from tidegate.model import NewJob
from tidegate.scheduler.admission import Capacity
from tidegate.scheduler.loop import Scheduler, SchedulerSettings
from tidegate.service.jobs import JobService

BASE = "/v1b3/projects/proj/locations/us-central1"


class Client:
    """Calls the REST app in-process (one event loop per call)."""

    def __init__(self, service: JobService) -> None:
        self.app = create_app(service)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://tidegate") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(call())

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str) -> httpx.Response:
        return self.request("DELETE", path)


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine()


@pytest.fixture
def running_job(service: JobService, engine: ScriptedEngine, new_job: Callable[..., NewJob], tmp_path: Path) -> str:
    scheduler = Scheduler(
        service, {"beam": engine}, SchedulerSettings(work_dir=tmp_path / "runs", capacity=Capacity(max_jobs=4))
    )
    job = service.create_job(new_job(type=JobType.JOB_TYPE_STREAMING))
    scheduler.tick()
    engine.run_of(job.id).state = EngineState.RUNNING
    scheduler.tick()
    assert service.store.get_job(job.id).current_state is JobState.JOB_STATE_RUNNING
    return job.id


def test_snapshots_over_rest(service: JobService, running_job: str) -> None:
    client = Client(service)
    response = client.post(f"{BASE}/jobs/{running_job}:snapshot", json={"ttl": "120s", "description": "d"})
    assert response.status_code == 200, response.text
    snapshot = response.json()
    assert snapshot["state"] == "READY" and snapshot["ttl"] == "120s" and snapshot["sourceJobId"] == running_job
    assert int(snapshot["diskSizeBytes"]) > 0 and snapshot["creationTime"].endswith("Z")
    assert client.get(f"{BASE}/snapshots/{snapshot['id']}").json() == snapshot
    assert client.get(f"{BASE}/jobs/{running_job}/snapshots").json() == {"snapshots": [snapshot]}
    assert client.get("/v1b3/projects/proj/snapshots").json() == {"snapshots": [snapshot]}
    assert client.get(f"{BASE}/snapshots?$alt=json;enum-encoding=int").json()["snapshots"][0]["state"] == 3
    second = client.post(f"/v1b3/projects/proj/jobs/{running_job}:snapshot", json={}).json()
    assert second["ttl"] == "604800s"  # the default: 7 days
    assert client.delete(f"{BASE}/snapshots/{snapshot['id']}").json() == {}
    assert client.delete(f"/v1b3/projects/proj/snapshots?snapshotId={second['id']}").json() == {}
    assert client.delete("/v1b3/projects/proj/snapshots").status_code == 400
    missing = client.get(f"{BASE}/snapshots/{snapshot['id']}")
    assert missing.status_code == 404 and "SNAPSHOT_NOT_FOUND" in missing.text
    assert client.get(f"{BASE}/jobs/no-such-job/snapshots").status_code == 404
    bad = client.post(f"{BASE}/jobs/{running_job}:snapshot", json={"ttl": "forever"})
    assert bad.status_code == 400


def test_snapshots_over_grpc(service: JobService, running_job: str) -> None:
    api = GrpcApi(service)
    names = {m.name for m in api.methods() if m.service == "SnapshotsV1Beta3"}
    assert names == {"GetSnapshot", "DeleteSnapshot", "ListSnapshots"}
    request = dataflow.SnapshotJobRequest.pb()(project_id="proj", job_id=running_job, description="g")
    request.ttl.seconds = 60
    snapshot = api.snapshot_job(request)
    assert snapshot.state == dataflow.SnapshotState.READY and snapshot.ttl.seconds == 60
    get = dataflow.GetSnapshotRequest.pb()(project_id="proj", snapshot_id=snapshot.id)
    assert api.get_snapshot(get) == snapshot
    listed = api.list_snapshots(dataflow.ListSnapshotsRequest.pb()(project_id="proj", job_id=running_job))
    assert list(listed.snapshots) == [snapshot]
    api.delete_snapshot(dataflow.DeleteSnapshotRequest.pb()(project_id="proj", snapshot_id=snapshot.id))
    with pytest.raises(NotFound):
        api.get_snapshot(get)


def test_a_savepoint_under_way_holds_up_no_other_grpc_call(
    service: JobService, engine: ScriptedEngine, running_job: str
) -> None:
    """SnapshotJob waits for the engine off the gRPC server's event loop: GetJob answers meanwhile."""
    engine.savepoint_gate = threading.Event()
    server = GrpcServer(service, "127.0.0.1", 0)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            snapshot_job = channel.unary_unary(
                f"/{PACKAGE}.JobsV1Beta3/SnapshotJob",
                request_serializer=dataflow.SnapshotJobRequest.pb().SerializeToString,
                response_deserializer=dataflow.Snapshot.pb().FromString,
            )
            get_job = channel.unary_unary(
                f"/{PACKAGE}.JobsV1Beta3/GetJob",
                request_serializer=dataflow.GetJobRequest.pb().SerializeToString,
                response_deserializer=dataflow.Job.pb().FromString,
            )
            pending = snapshot_job.future(dataflow.SnapshotJobRequest.pb()(project_id="proj", job_id=running_job))
            assert engine.savepoint_waiting.wait(10)
            job = get_job(dataflow.GetJobRequest.pb()(project_id="proj", job_id=running_job), timeout=5)
            assert job.id == running_job
            assert not pending.done()
            engine.savepoint_gate.set()
            assert pending.result(timeout=10).state == dataflow.SnapshotState.READY
    finally:
        server.stop(grace=1)


def test_snapshot_without_engines_is_refused(service: JobService, new_job: Callable[..., NewJob]) -> None:
    job = service.create_job(new_job(type=JobType.JOB_TYPE_STREAMING))
    with pytest.raises(FailedPrecondition):  # STOPPED, and no engine at all
        service.snapshot_job("proj", None, job.id)

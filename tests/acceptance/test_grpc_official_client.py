"""The official Dataflow client over gRPC against a running ``tidegate server``.

Every test is a real call through ``JobsV1Beta3GrpcTransport`` / ``MessagesV1Beta3GrpcTransport``
on an insecure channel; each test works in a project of its own.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
import httpx
import pytest
from google.api_core import exceptions
from google.cloud import dataflow_v1beta3 as dataflow
from google.cloud.dataflow_v1beta3.services.jobs_v1_beta3.transports import JobsV1Beta3GrpcTransport
from google.cloud.dataflow_v1beta3.services.messages_v1_beta3.transports import MessagesV1Beta3GrpcTransport
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # type: ignore[import-untyped]
    ProtoReflectionDescriptorDatabase,
)

pytestmark = pytest.mark.slow

State = dataflow.JobState
Filter = dataflow.ListJobsRequest.Filter
LOCATION = "us-central1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    """The test's environment without TIDEGATE_* settings: the command line says it all."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}, "PYTHONUNBUFFERED": "1"}


def _start(data_dir: Path, *options: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = data_dir / f"server-{secrets.token_hex(3)}.log"
    command = [
        sys.executable,
        "-m",
        "tidegate.cli",
        "server",
        "--engines",
        "none",
        "--job-port",
        "0",
        "--data-dir",
        str(data_dir),
        *options,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env())
    return proc, log


def _healthy(proc: subprocess.Popen[bytes], base: str, log: Path) -> bool:
    """True once /healthz answers; False when the process died of a taken port (the caller tries others)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")
            if "already in use" in text.lower() or "cannot listen" in text:
                return False
            pytest.fail(f"tidegate server exited with {proc.returncode}:\n{text}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(f"tidegate server did not answer /healthz:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    proc.terminate()
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


@dataclass
class Server:
    """A running server: its REST base URL, a gRPC channel and the official clients on it."""

    rest: str
    channel: grpc.Channel
    jobs: dataflow.JobsV1Beta3Client
    messages: dataflow.MessagesV1Beta3Client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``tidegate server`` with its REST and gRPC ports, and official clients on the gRPC one."""
    data_dir = tmp_path_factory.mktemp("tidegate")
    for _ in range(3):
        port, grpc_port = _free_port(), _free_port()
        proc, log = _start(data_dir, "--port", str(port), "--grpc-port", str(grpc_port))
        if _healthy(proc, f"http://127.0.0.1:{port}", log):
            break
    else:
        pytest.fail(f"no free ports for tidegate server after 3 attempts:\n{log.read_text()}")
    channel = grpc.insecure_channel(f"localhost:{grpc_port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=15)
        yield Server(
            rest=f"http://127.0.0.1:{port}",
            channel=channel,
            jobs=dataflow.JobsV1Beta3Client(transport=JobsV1Beta3GrpcTransport(channel=channel)),
            messages=dataflow.MessagesV1Beta3Client(transport=MessagesV1Beta3GrpcTransport(channel=channel)),
        )
    finally:
        channel.close()
        code = _stop(proc)
    assert code == 0, f"the server did not stop cleanly ({code}):\n{log.read_text()}"


@pytest.fixture
def project() -> str:
    """A project of the test's own, so tests sharing the server never see each other's jobs."""
    return f"grpc-{secrets.token_hex(4)}"


def create(server: Server, project: str, name: str, *, location: str = LOCATION, **job: object) -> dataflow.Job:
    """A batch job held in STOPPED (``requested_state`` STOPPED), so no scheduler moves it under the test."""
    body = {"name": name, "type_": dataflow.JobType.JOB_TYPE_BATCH, "requested_state": State.JOB_STATE_STOPPED, **job}
    return server.jobs.create_job(request={"project_id": project, "location": location, "job": body})


def request_state(server: Server, project: str, job_id: str, state: int) -> dataflow.Job:
    """UpdateJob with a ``requested_state``."""
    return server.jobs.update_job(
        request={"project_id": project, "location": LOCATION, "job_id": job_id, "job": {"requested_state": state}}
    )


# -- create, get, list -------------------------------------------------------------------


def test_create_and_get(server: Server, project: str) -> None:
    job = create(server, project, "first", labels={"team": "data"})
    assert job.id and job.project_id == project and job.location == LOCATION
    assert job.current_state == State.JOB_STATE_STOPPED
    assert job.requested_state == State.JOB_STATE_STOPPED
    assert dict(job.labels) == {"team": "data"}
    got = server.jobs.get_job(request={"project_id": project, "location": LOCATION, "job_id": job.id})
    assert (got.id, got.name, got.type_, got.current_state) == (job.id, "first", job.type_, job.current_state)
    assert got.create_time == job.create_time
    # An empty location means the server's default one, as REST's legacy paths do.
    assert server.jobs.get_job(request={"project_id": project, "job_id": job.id}).id == job.id


def test_create_keeps_the_spec_for_the_full_view(server: Server, project: str) -> None:
    job = create(server, project, "spec", environment={"temp_storage_prefix": "gs://bucket/tmp"})
    summary = server.jobs.get_job(request={"project_id": project, "location": LOCATION, "job_id": job.id})
    full = server.jobs.get_job(
        request={"project_id": project, "location": LOCATION, "job_id": job.id, "view": dataflow.JobView.JOB_VIEW_ALL}
    )
    assert not summary.environment.temp_storage_prefix
    assert full.environment.temp_storage_prefix == "gs://bucket/tmp"


def test_invalid_name_is_invalid_argument(server: Server, project: str) -> None:
    with pytest.raises(exceptions.InvalidArgument) as caught:
        create(server, project, "Not_A_Name")
    assert caught.value.reason == "INVALID_JOB_NAME"
    assert caught.value.domain == "dataflow.googleapis.com"


def test_list_with_each_filter_and_paging(server: Server, project: str) -> None:
    jobs = [create(server, project, f"job-{n}") for n in range(5)]
    for job in jobs[:2]:
        request_state(server, project, job.id, State.JOB_STATE_CANCELLED)

    def ids(list_filter: int, page_size: int = 0) -> set[str]:
        request = {"project_id": project, "location": LOCATION, "filter": list_filter, "page_size": page_size}
        return {job.id for job in server.jobs.list_jobs(request=request)}

    every, ended = {j.id for j in jobs}, {j.id for j in jobs[:2]}
    assert ids(Filter.UNKNOWN) == every
    assert ids(Filter.ALL) == every
    assert ids(Filter.TERMINATED) == ended
    assert ids(Filter.ACTIVE) == every - ended
    assert ids(Filter.ALL, page_size=2) == every

    pages = list(
        server.jobs.list_jobs(
            request={"project_id": project, "location": LOCATION, "filter": Filter.ALL, "page_size": 2}
        ).pages
    )
    assert [len(page.jobs) for page in pages] == [2, 2, 1]
    assert all(page.next_page_token for page in pages[:-1]) and not pages[-1].next_page_token
    named = server.jobs.list_jobs(request={"project_id": project, "location": LOCATION, "name": "job-3"})
    assert [job.id for job in named] == [jobs[3].id]


def test_aggregated_list_spans_locations(server: Server, project: str) -> None:
    here = create(server, project, "here")
    there = create(server, project, "there", location="europe-west1")
    local = server.jobs.list_jobs(request={"project_id": project, "location": LOCATION})
    assert [job.id for job in local] == [here.id]
    default = server.jobs.list_jobs(request={"project_id": project})
    assert [job.id for job in default] == [here.id]
    everywhere = server.jobs.aggregated_list_jobs(request={"project_id": project})
    assert {(job.id, job.location) for job in everywhere} == {(here.id, LOCATION), (there.id, "europe-west1")}


def test_check_active_jobs(server: Server, project: str) -> None:
    assert not server.jobs.check_active_jobs(request={"project_id": project}).active_jobs_exist
    job = create(server, project, "active", location="asia-east1")
    assert server.jobs.check_active_jobs(request={"project_id": project}).active_jobs_exist
    server.jobs.update_job(
        request={
            "project_id": project,
            "location": "asia-east1",
            "job_id": job.id,
            "job": {"requested_state": State.JOB_STATE_CANCELLED},
        }
    )
    assert not server.jobs.check_active_jobs(request={"project_id": project}).active_jobs_exist


# -- update ------------------------------------------------------------------------------


def test_labels_update(server: Server, project: str) -> None:
    job = create(server, project, "labelled", labels={"a": "1"})
    updated = server.jobs.update_job(
        request={
            "project_id": project,
            "location": LOCATION,
            "job_id": job.id,
            "job": {"labels": {"a": "2", "b": "x"}},
            "update_mask": {"paths": ["labels"]},
        }
    )
    assert dict(updated.labels) == {"a": "2", "b": "x"}
    assert updated.current_state == State.JOB_STATE_STOPPED
    got = server.jobs.get_job(request={"project_id": project, "location": LOCATION, "job_id": job.id})
    assert dict(got.labels) == {"a": "2", "b": "x"}


def test_cancel_then_retried_cancel_then_done(server: Server, project: str) -> None:
    job = create(server, project, "cancelled")
    cancelled = request_state(server, project, job.id, State.JOB_STATE_CANCELLED)
    assert cancelled.current_state == State.JOB_STATE_CANCELLED
    assert cancelled.requested_state == State.JOB_STATE_CANCELLED
    again = request_state(server, project, job.id, State.JOB_STATE_CANCELLED)
    assert (again.current_state, again.current_state_time) == (State.JOB_STATE_CANCELLED, cancelled.current_state_time)
    with pytest.raises(exceptions.FailedPrecondition) as caught:
        request_state(server, project, job.id, State.JOB_STATE_DONE)
    assert caught.value.reason == "JOB_TERMINAL"
    assert "JOB_STATE_CANCELLED" in caught.value.message


def test_drain_of_a_batch_job_is_refused(server: Server, project: str) -> None:
    job = create(server, project, "batch")
    with pytest.raises(exceptions.FailedPrecondition) as caught:
        request_state(server, project, job.id, State.JOB_STATE_DRAINED)
    assert caught.value.reason == "REQUEST_NOT_ALLOWED"


@pytest.mark.parametrize("state", [State.JOB_STATE_PENDING, State.JOB_STATE_FAILED, State.JOB_STATE_QUEUED])
def test_service_only_state_is_invalid_argument(server: Server, project: str, state: int) -> None:
    job = create(server, project, "held")
    with pytest.raises(exceptions.InvalidArgument) as caught:
        request_state(server, project, job.id, state)
    assert caught.value.reason == "INVALID_REQUESTED_STATE"


def test_unknown_job_is_not_found(server: Server, project: str) -> None:
    with pytest.raises(exceptions.NotFound) as caught:
        server.jobs.get_job(request={"project_id": project, "location": LOCATION, "job_id": "2026-01-01_00_00_00-1"})
    assert caught.value.reason == "JOB_NOT_FOUND"
    job = create(server, project, "elsewhere")
    with pytest.raises(exceptions.NotFound):
        server.jobs.get_job(request={"project_id": project, "location": "europe-west1", "job_id": job.id})
    with pytest.raises(exceptions.NotFound):
        request_state(server, project, "2026-01-01_00_00_00-1", State.JOB_STATE_CANCELLED)


def test_a_create_with_an_active_jobs_name_answers_that_job(server: Server, project: str) -> None:
    first = create(server, project, "unique", client_request_id="req-1")
    # OK with the active job (as Dataflow), not ALREADY_EXISTS: its own clientRequestId tells it apart.
    other = create(server, project, "unique", client_request_id="req-2", labels={"team": "other"})
    assert (other.id, other.create_time, other.client_request_id) == (first.id, first.create_time, "req-1")
    assert dict(other.labels) == {}
    again = create(server, project, "unique", client_request_id="req-1")  # a retry: its own job
    assert again.id == first.id
    listed = server.jobs.list_jobs(request={"project_id": project, "location": LOCATION})
    assert [job.id for job in listed] == [first.id]


def test_snapshot_of_a_batch_job_is_refused(server: Server, project: str) -> None:
    job = create(server, project, "snap")
    with pytest.raises(exceptions.FailedPrecondition) as caught:
        server.jobs.snapshot_job(request={"project_id": project, "location": LOCATION, "job_id": job.id})
    assert caught.value.reason == "SNAPSHOT_NOT_STREAMING"
    assert "snapshot" in caught.value.message


# -- messages ----------------------------------------------------------------------------


def test_messages(server: Server, project: str) -> None:
    job = create(server, project, "talkative")
    request_state(server, project, job.id, State.JOB_STATE_CANCELLED)
    request = {"project_id": project, "location": LOCATION, "job_id": job.id}
    messages = list(server.messages.list_job_messages(request=request))
    assert messages and all(m.id and m.time and m.message_text for m in messages)
    assert any("JOB_STATE_CANCELLED" in m.message_text for m in messages)
    basic = list(
        server.messages.list_job_messages(
            request={**request, "minimum_importance": dataflow.JobMessageImportance.JOB_MESSAGE_BASIC}
        )
    )
    assert {m.message_importance for m in basic} <= {
        dataflow.JobMessageImportance.JOB_MESSAGE_BASIC,
        dataflow.JobMessageImportance.JOB_MESSAGE_WARNING,
        dataflow.JobMessageImportance.JOB_MESSAGE_ERROR,
    }
    assert any("CANCELLED requested" in m.message_text for m in basic)
    pages = list(server.messages.list_job_messages(request={**request, "page_size": 1}).pages)
    assert [m.id for page in pages for m in page.job_messages] == [m.id for m in messages]
    with pytest.raises(exceptions.NotFound):
        list(server.messages.list_job_messages(request={**request, "job_id": "2026-01-01_00_00_00-1"}))


# -- the same job over both transports ---------------------------------------------------


def test_grpc_and_rest_agree(server: Server, project: str) -> None:
    job = create(server, project, "shared", labels={"via": "grpc"})
    rest = httpx.get(f"{server.rest}/v1b3/projects/{project}/locations/{LOCATION}/jobs/{job.id}").json()
    assert rest["id"] == job.id
    assert rest["currentState"] == State(job.current_state).name
    assert rest["labels"] == {"via": "grpc"}
    assert datetime.fromisoformat(rest["createTime"]) == job.create_time
    request_state(server, project, job.id, State.JOB_STATE_CANCELLED)
    rest = httpx.get(f"{server.rest}/v1b3/projects/{project}/jobs/{job.id}").json()
    assert rest["currentState"] == "JOB_STATE_CANCELLED"
    made = httpx.post(
        f"{server.rest}/v1b3/projects/{project}/locations/{LOCATION}/jobs",
        json={"name": "from-rest", "requestedState": "JOB_STATE_STOPPED", "labels": {"via": "rest"}},
    ).json()
    got = server.jobs.get_job(request={"project_id": project, "location": LOCATION, "job_id": made["id"]})
    assert (got.name, dict(got.labels), State(got.current_state).name) == (
        "from-rest",
        {"via": "rest"},
        made["currentState"],
    )


# -- reflection --------------------------------------------------------------------------


def test_reflection_lists_and_describes_the_services(server: Server) -> None:
    database = ProtoReflectionDescriptorDatabase(server.channel)
    services = set(database.get_services())
    assert {"google.dataflow.v1beta3.JobsV1Beta3", "google.dataflow.v1beta3.MessagesV1Beta3"} <= services
    pool = descriptor_pool.DescriptorPool(database)
    jobs = pool.FindServiceByName("google.dataflow.v1beta3.JobsV1Beta3")
    names = "CreateJob GetJob UpdateJob ListJobs AggregatedListJobs CheckActiveJobs SnapshotJob"
    assert {m.name for m in jobs.methods} == set(names.split())
    assert jobs.methods_by_name["GetJob"].input_type.full_name == "google.dataflow.v1beta3.GetJobRequest"
    assert jobs.methods_by_name["GetJob"].output_type.full_name == "google.dataflow.v1beta3.Job"
    assert "current_state" in jobs.methods_by_name["GetJob"].output_type.fields_by_name
    messages = pool.FindServiceByName("google.dataflow.v1beta3.MessagesV1Beta3")
    assert [m.name for m in messages.methods] == ["ListJobMessages"]


# -- the port option ---------------------------------------------------------------------


def test_grpc_port_zero_means_no_grpc(tmp_path: Path) -> None:
    port = _free_port()
    proc, log = _start(tmp_path, "--port", str(port), "--grpc-port", "0")
    try:
        assert _healthy(proc, f"http://127.0.0.1:{port}", log)
    finally:
        assert _stop(proc) == 0
    assert "REST API" in log.read_text() and "gRPC" not in log.read_text()


def test_a_taken_grpc_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        grpc_port = taken.getsockname()[1]
        command = [sys.executable, "-m", "tidegate.cli", "server", "--port", str(_free_port())]
        done = subprocess.run(
            [*command, "--grpc-port", str(grpc_port), "--data-dir", str(tmp_path)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"cannot listen for gRPC on 127.0.0.1:{grpc_port}" in done.stderr
    assert "Traceback" not in done.stderr

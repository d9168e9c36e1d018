"""In-place rescaling through tidegate's API: a real server, a real local Flink cluster, the official client.

A streaming job starts at the parallelism its worker settings ask for (``numWorkers``
capped by ``maxNumWorkers``); UpdateJob under ``updateMask=runtime_updatable_params.…``
rescales it while it runs, over REST (the official client's REST transport, and plain HTTP
as ``gcloud dataflow jobs update-options`` sends it) and over gRPC (the official client);
the job shows the new ``runtimeUpdatableParams``, ListJobMessages its ``autoscalingEvents``,
and Flink runs it at the new parallelism, the same Flink job throughout. A batch job, a job
that is not running and values out of range are refused with the right status, and change
nothing. The cluster is the test's own, on free ports, given to the server with
``--flink-rest-url`` (a server's own local cluster takes Flink's default port when it is free).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.api_core import exceptions
from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import field_mask_pb2

from tests.flink_output import read_windows, wait_windows
from tests.integration.test_flink_engine import _flink_venv, _free_port
from tidegate.engines.flink_cluster import find_flink_home, flink_python
from tidegate.engines.flink_local import LocalFlinkCluster

from .clients import official_grpc, official_rest
from .conftest import LOCATION, Server
from .test_flink_jobs import JOBS

pytestmark = pytest.mark.slow

PROJECT = "flink-rescale"
MAX, MIN = "runtime_updatable_params.max_num_workers", "runtime_updatable_params.min_num_workers"
HINT = "runtime_updatable_params.worker_utilization_hint"
Event = dataflow.AutoscalingEvent.AutoscalingEventType


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFlinkCluster]:
    """A local Flink cluster of the test's own on free ports (the adaptive scheduler, 4 slots), stopped at the end."""
    venv = _flink_venv()
    cluster = LocalFlinkCluster(
        tmp_path_factory.mktemp("flink-cluster"),
        python=flink_python(venv),
        rest_port=_free_port(),
        rpc_port=_free_port(),
    )
    cluster.start(find_flink_home(venv))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def flink(start_server: Callable[..., Server], cluster: LocalFlinkCluster) -> Server:
    return start_server("sqlite", "beam,flink", "--max-jobs", "10", "--flink-rest-url", cluster.rest_url, grpc=True)


@pytest.fixture(scope="module")
def channel(flink: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"localhost:{flink.grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=15)
        yield channel


def _jobs(server: Server) -> str:
    return f"{server.base}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs"


def _create(server: Server, name: str, *, options: dict[str, Any], streaming: bool = True, **extra: Any) -> str:
    program = "windowed_counts.py" if streaming else "bounded_sum.py"
    own = {"engine": "flink", "program": str(JOBS / program), "args": options.pop("args", [])}
    body: dict[str, Any] = {
        "name": name,
        "type": "JOB_TYPE_STREAMING" if streaming else "JOB_TYPE_BATCH",
        "environment": {"sdkPipelineOptions": {"options": {"tidegate": own, **options}}},
        **extra,
    }
    response = httpx.post(_jobs(server), json=body, timeout=60)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _get(server: Server, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{_jobs(server)}/{job_id}", timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _wait_state(server: Server, job_id: str, wanted: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while (state := _get(server, job_id)["currentState"]) != wanted:
        assert state not in ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED"), f"job {job_id} ended {state}"
        assert time.monotonic() < deadline, f"job {job_id} still {state} after {timeout} s"
        time.sleep(0.5)


def _events(server: Server, job_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{_jobs(server)}/{job_id}/messages", params={"pageSize": 1000}, timeout=60)
    assert response.status_code == 200, response.text
    return list(response.json().get("autoscalingEvents", []))


def _flink_job(server: Server, base: str, job_id: str) -> Callable[[], tuple[str, set[int]]]:
    """The job's Flink job (named in its messages) and that Flink job's vertices' parallelism, read from Flink."""
    response = httpx.get(f"{_jobs(server)}/{job_id}/messages", params={"pageSize": 1000}, timeout=60)
    texts = " ".join(m.get("messageText", "") for m in response.json().get("jobMessages", []))
    found = re.search(r"to Flink as job ([0-9a-f]{32})", texts)
    assert found, texts
    flink_id = found.group(1)

    def read() -> tuple[str, set[int]]:
        job = httpx.get(f"{base}/jobs/{flink_id}", timeout=10).json()
        return str(job["state"]), {int(v["parallelism"]) for v in job["vertices"]}

    return read


def _wait_event(server: Server, job_id: str, kind: str, count: int, timeout: float = 600) -> list[dict[str, Any]]:
    """The job's autoscaling events once ``count`` of them are of ``kind``; fails on an ACTUATION_FAILURE."""
    deadline = time.monotonic() + timeout
    while True:
        events = _events(server, job_id)
        kinds = [e["eventType"] for e in events]
        assert "ACTUATION_FAILURE" not in kinds, events
        if kinds.count(kind) >= count:
            return events
        assert time.monotonic() < deadline, f"no {count} {kind} events after {timeout} s: {events}"
        time.sleep(0.5)


def _rest_update(server: Server, job_id: str, mask: list[str], params: dict[str, Any]) -> httpx.Response:
    """UpdateJob as ``gcloud dataflow jobs update-options`` sends it."""
    return httpx.put(
        f"{_jobs(server)}/{job_id}",
        params={"updateMask": ",".join(mask)},
        json={"runtimeUpdatableParams": params},
        timeout=60,
    )


def test_a_running_streaming_job_is_rescaled_in_place_over_rest_and_grpc(
    flink: Server, cluster: LocalFlinkCluster, channel: grpc.Channel, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    # numWorkers 3, capped by maxNumWorkers 2: Flink runs it at 2.
    job_id = _create(flink, "rescaled", options={"args": ["--out", str(out)], "numWorkers": 3, "maxNumWorkers": 2})
    held_id = _create(
        flink, "held", options={"args": ["--out", str(tmp_path / "held")]}, requestedState="JOB_STATE_STOPPED"
    )
    batch_id = _create(flink, "batch", options={"args": [str(tmp_path / "sums.txt")]}, streaming=False)
    _wait_state(flink, job_id, "JOB_STATE_RUNNING")
    wait_windows(out, 2, timeout=300)
    flink_job = _flink_job(flink, cluster.rest_url, job_id)
    assert flink_job() == ("RUNNING", {2}), "numWorkers capped by maxNumWorkers is the parallelism at submit"
    assert _events(flink, job_id) == []

    # Over REST, with the official client's REST transport (its mask goes camelCase on the wire).
    rest = official_rest(flink.base)
    asked = time.monotonic()
    updated = rest.jobs.update_job(
        request=dataflow.UpdateJobRequest(
            project_id=PROJECT,
            location=LOCATION,
            job_id=job_id,
            job=dataflow.Job(runtime_updatable_params=dataflow.RuntimeUpdatableParams(max_num_workers=3)),
            update_mask=field_mask_pb2.FieldMask(paths=[MAX]),
        )
    )
    assert updated.runtime_updatable_params.max_num_workers == 3
    assert _get(flink, job_id)["runtimeUpdatableParams"] == {"maxNumWorkers": 3}
    events = _wait_event(flink, job_id, "CURRENT_NUM_WORKERS_CHANGED", 1)
    took = time.monotonic() - asked
    assert [(e["eventType"], e.get("currentNumWorkers"), e.get("targetNumWorkers")) for e in events] == [
        ("TARGET_NUM_WORKERS_CHANGED", "2", "3"),
        ("CURRENT_NUM_WORKERS_CHANGED", "3", "3"),
    ]
    assert all(e["description"]["messageText"] and e["time"] for e in events)
    assert flink_job() == ("RUNNING", {3}), "the same Flink job, now at 3"
    print(f"\nREST UpdateJob -> 3 workers running: {took:.1f} s")
    seen = len(read_windows(out))
    wait_windows(out, seen + 2, timeout=300)  # it goes on counting

    # Refused, nothing changed: values out of range, a batch job, a job that is not running.
    for mask, params, reason in (
        ([MAX], {"maxNumWorkers": 0}, "INVALID_RUNTIME_PARAMS"),
        ([MIN, MAX], {"minNumWorkers": 3, "maxNumWorkers": 2}, "INVALID_RUNTIME_PARAMS"),
        ([HINT], {"workerUtilizationHint": 0.95}, "INVALID_RUNTIME_PARAMS"),
        ([MAX], {"maxNumWorkers": 99}, "INVALID_RUNTIME_PARAMS"),  # more than the cluster's slots
        (["runtime_updatable_params.autoscaling_tier"], {}, "INVALID_UPDATE_MASK"),
    ):
        response = _rest_update(flink, job_id, mask, params)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT", error
        assert error["details"][0]["reason"] == reason, error
    for other, reason in ((batch_id, "NOT_STREAMING"), (held_id, "JOB_NOT_RUNNING")):
        response = _rest_update(flink, other, [MAX], {"maxNumWorkers": 2})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["status"], error["details"][0]["reason"]) == ("FAILED_PRECONDITION", reason), error
        assert "runtimeUpdatableParams" not in _get(flink, other)
        assert _events(flink, other) == []
    with pytest.raises(exceptions.BadRequest):
        rest.jobs.update_job(
            request=dataflow.UpdateJobRequest(
                project_id=PROJECT,
                location=LOCATION,
                job_id=batch_id,
                job=dataflow.Job(runtime_updatable_params=dataflow.RuntimeUpdatableParams(max_num_workers=2)),
                update_mask=field_mask_pb2.FieldMask(paths=[MAX]),
            )
        )
    assert _get(flink, job_id)["runtimeUpdatableParams"] == {"maxNumWorkers": 3}
    assert len(_events(flink, job_id)) == 2

    # Over gRPC, with the official client: down to 1 (min 1, max 1), and a hint.
    grpc_clients = official_grpc(channel)
    asked = time.monotonic()
    updated = grpc_clients.jobs.update_job(
        request=dataflow.UpdateJobRequest(
            project_id=PROJECT,
            location=LOCATION,
            job_id=job_id,
            job=dataflow.Job(
                runtime_updatable_params=dataflow.RuntimeUpdatableParams(
                    max_num_workers=1, min_num_workers=1, worker_utilization_hint=0.5
                )
            ),
            update_mask=field_mask_pb2.FieldMask(paths=[MAX, MIN, HINT]),
        )
    )
    params = updated.runtime_updatable_params
    assert (params.max_num_workers, params.min_num_workers, params.worker_utilization_hint) == (1, 1, 0.5)
    _wait_event(flink, job_id, "CURRENT_NUM_WORKERS_CHANGED", 2)
    print(f"gRPC UpdateJob -> 1 worker running: {time.monotonic() - asked:.1f} s")
    assert flink_job() == ("RUNNING", {1})
    pages = grpc_clients.messages.list_job_messages(
        request=dataflow.ListJobMessagesRequest(project_id=PROJECT, location=LOCATION, job_id=job_id, page_size=1000)
    ).pages
    first = next(iter(pages))
    assert [(e.event_type, e.current_num_workers, e.target_num_workers) for e in first.autoscaling_events] == [
        (Event.TARGET_NUM_WORKERS_CHANGED, 2, 3),
        (Event.CURRENT_NUM_WORKERS_CHANGED, 3, 3),
        (Event.TARGET_NUM_WORKERS_CHANGED, 3, 1),
        (Event.CURRENT_NUM_WORKERS_CHANGED, 1, 1),
    ]
    got = grpc_clients.jobs.get_job(request={"project_id": PROJECT, "location": LOCATION, "job_id": job_id})
    assert got.runtime_updatable_params.max_num_workers == 1
    with pytest.raises(exceptions.FailedPrecondition):
        grpc_clients.jobs.update_job(
            request=dataflow.UpdateJobRequest(
                project_id=PROJECT,
                location=LOCATION,
                job_id=held_id,
                job=dataflow.Job(runtime_updatable_params=dataflow.RuntimeUpdatableParams(max_num_workers=2)),
                update_mask=field_mask_pb2.FieldMask(paths=[MAX]),
            )
        )
    with pytest.raises(exceptions.InvalidArgument):
        grpc_clients.jobs.update_job(
            request=dataflow.UpdateJobRequest(
                project_id=PROJECT,
                location=LOCATION,
                job_id=job_id,
                job=dataflow.Job(runtime_updatable_params=dataflow.RuntimeUpdatableParams(max_num_workers=99)),
                update_mask=field_mask_pb2.FieldMask(paths=[MAX]),
            )
        )
    assert _get(flink, job_id)["runtimeUpdatableParams"] == {
        "maxNumWorkers": 1,
        "minNumWorkers": 1,
        "workerUtilizationHint": 0.5,
    }

    # Drained at its new parallelism: the usual end, every window written.
    response = httpx.put(f"{_jobs(flink)}/{job_id}", json={"requestedState": "JOB_STATE_DRAINED"}, timeout=60)
    assert response.status_code == 200, response.text
    _wait_state(flink, job_id, "JOB_STATE_DRAINED")
    # A finished job is not rescaled.
    response = _rest_update(flink, job_id, [MAX], {"maxNumWorkers": 2})
    assert response.status_code == 400 and response.json()["error"]["status"] == "FAILED_PRECONDITION"
    for other in (held_id,):
        httpx.put(f"{_jobs(flink)}/{other}", json={"requestedState": "JOB_STATE_CANCELLED"}, timeout=60)

"""Beam's own PortableRunner, unmodified, submitting real pipelines to tidegate's Beam Job API.

The pipelines run from a separate environment with ``apache-beam[gcp]``
(``scripts/setup-beam-client``), as a Beam user has it. Their environments name a
process command or a Docker image that does not exist here: tidegate's Beam engine runs
every job in its own local processes, so a job that finishes proves it ran there.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.processes import members as group_members

from .conftest import LOCATION, PIPELINES, TEXT, TIDEGATE, Server, clean_env, free_port, portable_args

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class JobServer:
    """A tidegate server with its Beam Job API."""

    server: Server
    job_port: int

    def args(self, project: str, *extra: str) -> list[str]:
        """PortableRunner's options for a job in ``project``; Beam's default environment is DOCKER."""
        return portable_args(self.job_port, project, *extra)

    def jobs(self, project: str) -> list[dict[str, Any]]:
        """The project's jobs over Dataflow's REST API."""
        url = f"{self.server.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs"
        jobs: list[dict[str, Any]] = httpx.get(url).json().get("jobs", [])
        return jobs

    def history(self, project: str, job_id: str) -> list[str]:
        url = f"{self.server.base}/tidegate/v1/projects/{project}/locations/{LOCATION}/jobs/{job_id}/history"
        return [h["toState"] for h in httpx.get(url).json()["stateHistory"]]


@pytest.fixture(scope="module")
def job_server(start_server: Callable[..., Server]) -> JobServer:
    server = start_server("sqlite", "beam", job_api=True)
    return JobServer(server, server.job_port)


@pytest.fixture(scope="module")
def job_api(job_server: JobServer) -> Iterator[tuple[Any, Any]]:
    """Beam's Job API stub on the server, and Beam's ``beam_job_api_pb2`` (imported only here: it loads Beam)."""
    from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

    with grpc.insecure_channel(f"localhost:{job_server.job_port}") as channel:
        yield beam_job_api_pb2_grpc.JobServiceStub(channel), beam_job_api_pb2


def run(python: Path, script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), str(PIPELINES / script), *args], capture_output=True, text=True, timeout=timeout, env=clean_env()
    )


def last_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_group(server: Server, job_id: str) -> int:
    """The process group of the job's Beam run: the Beam engine keeps its leader's pid in the run's folder."""
    data_dir = Path(server.store_url.removeprefix("sqlite:///")).parent
    return int(json.loads((data_dir / "runs" / job_id / "process.json").read_text())["pid"])


def test_word_count_runs_to_done_with_the_direct_runners_output(
    job_server: JobServer, job_api: tuple[Any, Any], client_python: Path, tmp_path: Path, project: str
) -> None:
    source = tmp_path / "input.txt"
    source.write_text(TEXT)
    expected, got = tmp_path / "expected.txt", tmp_path / "got.txt"
    direct = last_json(run(client_python, "wordcount.py", f"--input={source}", f"--output={expected}"))
    process_env = ["--environment_type=PROCESS", "--environment_options=process_command=boot"]
    args = job_server.args(project, *process_env, "--save_main_session")  # a file to stage
    result = last_json(run(client_python, "wordcount.py", f"--input={source}", f"--output={got}", *args))
    assert result["state"] == "DONE"
    assert sorted(got.read_text().splitlines()) == sorted(expected.read_text().splitlines())
    assert result["words"] == direct["words"] == [12]  # result.metrics().query() answered
    [job] = job_server.jobs(project)
    assert job["currentState"] == "JOB_STATE_DONE"
    assert job["type"] == "JOB_TYPE_BATCH"
    assert job["name"].startswith("job-")
    assert job_server.history(project, job["id"]) == [
        "JOB_STATE_STOPPED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_DONE",
    ]  # fmt: skip
    stub, pb = job_api
    assert stub.GetState(pb.GetJobStateRequest(job_id=job["id"])).state == pb.JobState.DONE
    metrics = stub.GetJobMetrics(pb.GetJobMetricsRequest(job_id=job["id"])).metrics.committed
    counts = {m.labels["PTRANSFORM"]: m for m in metrics if m.urn == "beam:metric:element_count:v1"}
    assert counts["Split"].labels["PCOLLECTION"] == "Split.None"
    assert counts["Split"].payload == b"\x0c"  # 12 words, as a varint
    pipeline = stub.GetPipeline(pb.GetJobPipelineRequest(job_id=job["id"])).pipeline
    staged = [d for env in pipeline.components.environments.values() for d in env.dependencies]
    assert any(b"pickled_main_session" in d.role_payload for d in staged)
    assert {d.type_urn for d in staged} == {"beam:artifact:type:embedded:v1"}  # the job carries its files


def test_a_failing_pipeline_raises_with_its_error(job_server: JobServer, client_python: Path, project: str) -> None:
    outcome = last_json(run(client_python, "failing.py", *job_server.args(project)))
    assert outcome["raised"] == "RuntimeError"
    assert "failed in state FAILED" in outcome["message"]
    assert "the number three is not allowed" in outcome["message"]
    [job] = job_server.jobs(project)
    assert job["currentState"] == "JOB_STATE_FAILED"


def test_result_cancel_stops_the_job_and_its_processes(
    job_server: JobServer, job_api: tuple[Any, Any], client_python: Path, project: str
) -> None:
    stub, pb = job_api
    command = [str(client_python), str(PIPELINES / "portable_cancelled.py"), *job_server.args(project)]
    pipe = subprocess.PIPE
    with subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=pipe, text=True, env=clean_env()) as client:
        try:
            assert client.stdout is not None
            assert json.loads(client.stdout.readline() or "{}").get("running") == "RUNNING"
            [job] = job_server.jobs(project)
            group = run_group(job_server.server, job["id"])
            assert group_members(group), "the job runs, yet its process group is empty"
            with pytest.raises(grpc.RpcError) as refused:
                stub.Drain(pb.DrainJobRequest(job_id=job["id"]))
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "only streaming jobs can be drained" in str(refused.value.details())
            out, err = client.communicate("cancel\n", timeout=120)
        except BaseException:
            client.kill()
            raise
    assert json.loads(out.strip().splitlines()[-1]) == {"final": "CANCELLED", "raised": "RuntimeError"}, err[-4000:]
    assert job_server.history(project, job["id"])[-2:] == ["JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"]
    deadline = time.monotonic() + 5
    while group_members(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(group) == []
    listed = {info.job_id: info for info in stub.GetJobs(pb.GetJobsRequest()).job_info}
    assert listed[job["id"]].state == pb.JobState.CANCELLED
    assert listed[job["id"]].job_name == job["name"]


def test_unknown_jobs_are_not_found(job_api: tuple[Any, Any]) -> None:
    stub, pb = job_api
    for call, request in (
        (stub.GetState, pb.GetJobStateRequest(job_id="2020-01-01_00_00_00-1")),
        (stub.Cancel, pb.CancelJobRequest(job_id="2020-01-01_00_00_00-1")),
        (stub.Run, pb.RunJobRequest(preparation_id="never-prepared")),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call(request)
        assert error.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_streaming_pipeline_is_refused_with_a_reason(
    job_server: JobServer, client_python: Path, project: str
) -> None:
    done = run(client_python, "failing.py", *job_server.args(project, "--streaming"))
    output = done.stdout + done.stderr
    assert "INVALID_ARGUMENT" in output
    assert "cannot run Beam streaming pipelines" in output
    assert "Flink" in output
    assert job_server.jobs(project) == []


def test_a_job_name_an_active_job_has_is_already_exists(
    job_server: JobServer, client_python: Path, project: str
) -> None:
    """PortableRunner follows whatever job Run answers, so Run refuses the name rather than answer that job."""
    url = f"{job_server.server.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs"
    held = httpx.post(url, json={"name": "taken", "requestedState": "JOB_STATE_STOPPED"}).json()
    outcome = last_json(run(client_python, "failing.py", *job_server.args(project, "--job_name=taken")))
    assert "ALREADY_EXISTS" in outcome["message"], outcome
    assert f"There is already an active job named taken with id: {held['id']}" in outcome["message"]
    assert [job["id"] for job in job_server.jobs(project)] == [held["id"]]
    assert job_server.history(project, held["id"]) == ["JOB_STATE_STOPPED"]


def test_a_taken_job_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        job_port = taken.getsockname()[1]
        command = [str(TIDEGATE), "server", "--port", str(free_port()), "--grpc-port", "0", "--engines", "none"]
        done = subprocess.run(
            [*command, "--job-port", str(job_port), "--data-dir", str(tmp_path)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot listen for Beam's Job API on 127.0.0.1:{job_port}" in done.stderr
    assert "--job-port" in done.stderr
    assert "Traceback" not in done.stderr

"""Beam's own DataflowRunner, unmodified, submitting real pipelines to a running tidegate.

The pipelines run from a separate environment with ``apache-beam[gcp]``
(``scripts/setup-beam-client``), as a Dataflow user has it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import LOCATION, PIPELINES, TEXT, Server, clean_env, dataflow_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def beam_server(start_server: Callable[..., Server]) -> Server:
    return start_server("sqlite", "beam")


def run(python: Path, script: str, *args: str, timeout: float = 240) -> str:
    done = subprocess.run(
        [str(python), str(PIPELINES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1]


def test_word_count_runs_to_done_with_the_direct_runners_output(
    beam_server: Server, client_python: Path, tmp_path: Path, project: str
) -> None:
    source = tmp_path / "input.txt"
    source.write_text(TEXT)
    expected = tmp_path / "expected.txt"
    direct = json.loads(run(client_python, "wordcount.py", f"--input={source}", f"--output={expected}"))
    got = tmp_path / "got.txt"
    args = dataflow_args(beam_server, project, tmp_path / "staging")
    result = json.loads(run(client_python, "wordcount.py", f"--input={source}", f"--output={got}", *args))
    assert result["state"] == "DONE"
    assert sorted(got.read_text().splitlines()) == sorted(expected.read_text().splitlines())
    assert result["words"] == direct["words"] == [12]
    job = httpx.get(f"{beam_server.base}/v1b3/projects/{project}/locations/us-central1/jobs/{result['job_id']}").json()
    assert job["currentState"] == "JOB_STATE_DONE"
    history = httpx.get(
        f"{beam_server.base}/tidegate/v1/projects/{project}/locations/us-central1/jobs/{result['job_id']}/history"
    ).json()["stateHistory"]
    assert [h["toState"] for h in history] == [
        "JOB_STATE_STOPPED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_DONE",
    ]  # fmt: skip
    metrics = httpx.get(
        f"{beam_server.base}/v1b3/projects/{project}/locations/us-central1/jobs/{result['job_id']}/metrics"
    ).json()["metrics"]
    counts = {
        (m["name"]["context"]["step"], m["name"]["context"]["tentative"]): m["scalar"]
        for m in metrics
        if m["name"]["name"] == "ElementCount"
    }
    assert counts[("Split", "false")] == counts[("Split", "true")] == 12


def test_a_failing_pipeline_raises_with_its_error(
    beam_server: Server, client_python: Path, tmp_path: Path, project: str
) -> None:
    outcome = json.loads(run(client_python, "failing.py", *dataflow_args(beam_server, project, tmp_path / "staging")))
    assert outcome["raised"] == "DataflowRuntimeException"
    assert "the number three is not allowed" in outcome["message"]


def test_result_cancel_cancels_the_job(beam_server: Server, client_python: Path, tmp_path: Path, project: str) -> None:
    result = json.loads(run(client_python, "cancelled.py", *dataflow_args(beam_server, project, tmp_path / "staging")))
    assert result["running"] == "RUNNING"
    assert result["final"] == "CANCELLED"
    base = f"{beam_server.base}/tidegate/v1/projects/{project}/locations/us-central1/jobs/{result['job_id']}"
    states = [h["toState"] for h in httpx.get(f"{base}/history").json()["stateHistory"]]
    assert states[-2:] == ["JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"]


def test_a_streaming_pipeline_is_refused_with_a_reason(
    beam_server: Server, client_python: Path, tmp_path: Path, project: str
) -> None:
    args = [*dataflow_args(beam_server, project, tmp_path / "staging"), "--streaming"]
    done = subprocess.run(
        [str(client_python), str(PIPELINES / "failing.py"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=clean_env(),
    )
    output = done.stdout + done.stderr
    assert "cannot run Beam streaming pipelines" in output
    assert "Flink" in output
    listed = httpx.get(f"{beam_server.base}/v1b3/projects/{project}/locations/us-central1/jobs").json()
    assert listed.get("jobs", []) == []


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_job_name_an_active_job_has_raises_dataflow_job_already_exists(
    beam_server: Server,
    start_server: Callable[..., Server],
    client_python: Path,
    tmp_path: Path,
    project: str,
    dialect: str,
) -> None:
    server = beam_server if dialect == "sqlite" else start_server("postgresql")
    jobs = f"{server.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs"
    # Active (held until it is started), with a clientRequestId as every job DataflowRunner submits has:
    # Beam tells the answered job from its own by it (it takes a job with none for its own).
    body = {"name": "taken", "requestedState": "JOB_STATE_STOPPED", "clientRequestId": "20260101000000000000-1234"}
    held = httpx.post(jobs, json=body).json()
    assert held["currentState"] == "JOB_STATE_STOPPED"
    args = dataflow_args(server, project, tmp_path / "staging")
    outcome = json.loads(run(client_python, "failing.py", *args, "--job_name=taken"))
    assert outcome["raised"] == "DataflowJobAlreadyExistsError"
    assert f"There is already active job named taken with id: {held['id']}" in outcome["message"]
    assert [job["id"] for job in httpx.get(jobs).json()["jobs"]] == [held["id"]]  # nothing created
    assert httpx.get(f"{jobs}/{held['id']}").json()["currentState"] == "JOB_STATE_STOPPED"

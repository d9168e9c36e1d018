"""A server killed (kill -9) while it submits a Flink job: the job is neither lost nor run twice.

A real ``tidegate server --engines flink`` runs a first job (it starts the local cluster,
and the warm PyFlink submitter after it), then a second job is created and the server
is killed as soon as the engine's record of it names the process submitting it. That
process (the warm submitter, or ``flink run``) outlives the server, as the cluster does.
The next server on the same data directory waits for it to end, then adopts the job
Flink has, or submits it again under the same Flink job id. When the submitting
process is killed too, the job is submitted again. Either way the cluster ends up with
exactly one Flink job for it, RUNNING, and the job drains with no FAILED in its history.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidegate import processes

from ..integration.test_flink_engine import default_ports_held
from .conftest import ServerProcess
from .test_flink_jobs import _setup_flink
from .test_flink_survival import CLUSTER, _jobs, create, history, messages, wait_state

pytestmark = pytest.mark.slow

RUNS = Path("flink") / "flink-runs"


@pytest.fixture(scope="module", autouse=True)
def flink_ready() -> None:
    _setup_flink()


def _submitting(data_dir: Path, timeout: float = 180) -> dict[str, Any]:
    """The record of a run being submitted, once it names its submitting process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in (data_dir / RUNS).glob("*.json"):
            try:
                record = dict(json.loads(path.read_text(encoding="utf-8")), job_id=path.stem)
            except (OSError, ValueError):
                continue
            if not record["submitted"] and record.get("submitter", {}).get("pid"):
                return record
        time.sleep(0.02)
    raise AssertionError("no submission in flight")


def _submitter_ready(data_dir: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any(
        "submitter ready in" in log.read_text(errors="replace")
        for log in (data_dir / "flink" / "flink-submitter").glob("submitter-*.log")
    ):
        assert time.monotonic() < deadline, "no warm PyFlink submitter got ready"
        time.sleep(0.3)


def _flink_jobs(data_dir: Path) -> list[dict[str, Any]]:
    port = json.loads((data_dir / CLUSTER / "cluster.json").read_text())["rest_port"]
    return list(httpx.get(f"http://localhost:{port}/jobs/overview", timeout=30).json()["jobs"])


@pytest.mark.parametrize(
    ("submit", "kill"),
    [("warm", "server"), ("warm", "server and submitter"), ("cold", "server")],
)
def test_a_job_whose_server_was_killed_while_submitting_it_runs_once(
    server_processes: Callable[..., ServerProcess], tmp_path: Path, submit: str, kill: str
) -> None:
    data_dir = tmp_path / "server"
    flags = ["--flink-checkpoint-interval", "2", *(["--flink-cold-submit"] if submit == "cold" else [])]
    server = server_processes(data_dir, "", "flink", *flags)
    with default_ports_held():  # the next server adopts the cluster at the ports it recorded
        first = create(server, "first", tmp_path / "first")
        wait_state(server, first, "JOB_STATE_RUNNING", timeout=600)  # it starts the cluster: minutes on a busy machine
    if submit == "warm":
        _submitter_ready(data_dir)

    job_id = create(server, "killed-while-submitted", tmp_path / "out")
    record = _submitting(data_dir)
    server.kill()
    pid = int(record["submitter"]["pid"])
    if kill == "server and submitter":
        os.killpg(pid, signal.SIGKILL)  # the submitter and PyFlink's gateway: nothing more of it is submitted
    landed = record["job_id"] in {job["jid"] for job in _flink_jobs(data_dir)}
    print(f"\n{submit} submission, killed: {kill}; the job had reached Flink: {landed}")

    server = server_processes(data_dir, "", "flink", *flags)
    wait_state(server, job_id, "JOB_STATE_RUNNING", timeout=600)
    assert not processes.is_alive(pid, str(record["submitter"]["started"]))
    jobs = [job for job in _flink_jobs(data_dir) if job["jid"] == record["job_id"]]
    assert len(jobs) == 1 and jobs[0]["state"] == "RUNNING", jobs
    others = [job for job in _flink_jobs(data_dir) if job["jid"] != record["job_id"]]
    assert [job["state"] for job in others] == ["RUNNING"], others  # the first job alone: nothing ran twice
    texts = messages(server, job_id)
    assert f"Flink accepted job {record['job_id']}" in texts, texts

    response = httpx.put(f"{_jobs(server)}/{job_id}", json={"requestedState": "JOB_STATE_DRAINED"}, timeout=60)
    assert response.status_code == 200, response.text
    wait_state(server, job_id, "JOB_STATE_DRAINED")
    assert "JOB_STATE_FAILED" not in history(server, job_id)

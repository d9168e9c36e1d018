"""Flink jobs through tidegate's API: a real ``tidegate server --engines beam,flink`` and one Flink cluster.

The jobs are the Flink engine tests' programs (``tests/integration/flink_jobs``). One
server (and so one local Flink cluster, started by the first Flink job) serves the
module; the jobs are submitted together where they can be, since a Flink submission
takes 10-20 s.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.flink_output import read_seen, read_windows, wait_windows

from .conftest import LOCATION, Server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "tests" / "integration" / "flink_jobs"
PROJECT = "flink-acceptance"
TERMINAL = {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_DRAINED", "JOB_STATE_UPDATED"}


def _setup_flink() -> None:
    setup = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-flink")], capture_output=True, text=True, timeout=1200, check=False
    )
    if setup.returncode != 0:
        pytest.fail(f"scripts/setup-flink failed:\n{setup.stderr[-4000:]}")


@pytest.fixture(scope="module")
def flink(start_server: Callable[..., Server]) -> Server:
    _setup_flink()
    return start_server("sqlite", "beam,flink", "--max-jobs", "10")


def _jobs(server: Server) -> str:
    return f"{server.base}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs"


def _create(server: Server, name: str, program: str, *args: str, streaming: bool = True, **extra: Any) -> str:
    body: dict[str, Any] = {
        "name": name,
        "type": "JOB_TYPE_STREAMING" if streaming else "JOB_TYPE_BATCH",
        "environment": {
            "sdkPipelineOptions": {
                "options": {"tidegate": {"engine": "flink", "program": str(JOBS / program), "args": list(args)}}
            }
        },
        **extra,
    }
    response = httpx.post(_jobs(server), json=body, timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _get(server: Server, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{_jobs(server)}/{job_id}", timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _request(server: Server, job_id: str, state: str) -> httpx.Response:
    return httpx.put(f"{_jobs(server)}/{job_id}", json={"requestedState": state}, timeout=60)


def _messages(server: Server, job_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{_jobs(server)}/{job_id}/messages", params={"pageSize": 1000}, timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json().get("jobMessages", []))


def _wait_state(server: Server, job_id: str, wanted: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    job = _get(server, job_id)
    while job["currentState"] != wanted:
        if job["currentState"] in TERMINAL:
            texts = "\n".join(m.get("messageText", "")[:2000] for m in _messages(server, job_id))
            pytest.fail(f"job {job_id} ended {job['currentState']}, wanted {wanted}:\n{texts}")
        assert time.monotonic() < deadline, f"job {job_id} still {job['currentState']} after {timeout} s"
        time.sleep(0.5)
        job = _get(server, job_id)
    return job


def test_streaming_jobs_drain_cancel_fail_and_a_batch_job_finishes(flink: Server, tmp_path: Path) -> None:
    drained, cancelled = tmp_path / "drained", tmp_path / "cancelled"
    batch_out = tmp_path / "sums.txt"
    drain_id = _create(flink, "drained", "windowed_counts.py", "--out", str(drained), "--window-ms", "2000")
    cancel_id = _create(flink, "cancelled", "windowed_counts.py", "--out", str(cancelled))
    fail_id = _create(flink, "fails", "fails.py")
    batch_id = _create(flink, "bounded-sum", "bounded_sum.py", str(batch_out), streaming=False)
    assert _get(flink, drain_id)["currentState"] in ("JOB_STATE_STOPPED", "JOB_STATE_PENDING")

    # Drain: RUNNING → DRAINING → DRAINED, the open window fired and written.
    _wait_state(flink, drain_id, "JOB_STATE_RUNNING")
    wait_windows(drained, 3)
    response = _request(flink, drain_id, "JOB_STATE_DRAINED")
    assert response.status_code == 200, response.text
    assert response.json()["currentState"] in ("JOB_STATE_DRAINING", "JOB_STATE_DRAINED")
    _wait_state(flink, drain_id, "JOB_STATE_DRAINED", timeout=120)
    seen, windows = read_seen(drained), read_windows(drained)
    assert sum(row[2] for row in windows) == len(seen), "every element read is in a written window"
    history = [c["currentState"] for c in flink_history(flink, drain_id)]
    assert history[-2:] == ["JOB_STATE_DRAINING", "JOB_STATE_DRAINED"]

    # Cancel: RUNNING → CANCELLING → CANCELLED; nothing written after.
    _wait_state(flink, cancel_id, "JOB_STATE_RUNNING")
    wait_windows(cancelled, 1)
    assert _request(flink, cancel_id, "JOB_STATE_CANCELLED").status_code == 200
    _wait_state(flink, cancel_id, "JOB_STATE_CANCELLED", timeout=60)
    written = len(read_seen(cancelled))
    time.sleep(2)
    assert len(read_seen(cancelled)) == written

    # A failing job: FAILED, Flink's root exception as a JOB_MESSAGE_ERROR.
    _wait_state(flink, fail_id, "JOB_STATE_FAILED")
    errors = [m for m in _messages(flink, fail_id) if m.get("messageImportance") in ("JOB_MESSAGE_ERROR", 4)]
    assert any("tidegate test failure" in m["messageText"] for m in errors), errors

    # A batch job: DONE with its output; a drain of it is refused.
    _wait_state(flink, batch_id, "JOB_STATE_DONE")
    assert sorted(batch_out.read_text().split()) == ["a,4", "b,6", "c,5"]
    assert _request(flink, batch_id, "JOB_STATE_DRAINED").status_code == 400


def flink_history(server: Server, job_id: str) -> list[dict[str, Any]]:
    return [{"currentState": change.target.name} for change in server.store.history(job_id)]


def _snapshots(server: Server, suffix: str = "") -> str:
    return f"{server.base}/v1b3/projects/{PROJECT}/locations/{LOCATION}{suffix}/snapshots"


def _savepoint_folder(server: Server, snapshot_id: str) -> Path:
    """Where the snapshot's savepoint lies on this machine (the server's local Flink cluster wrote it)."""
    path = server.store.get_snapshot(snapshot_id).path
    folder = Path(path.removeprefix("file:"))
    return folder.parent if folder.name == "_metadata" else folder


def _first_totals(rows: list[tuple[int, int, int, int, str]]) -> dict[int, tuple[int, int]]:
    """Per key, the first window's (count, running total)."""
    first: dict[int, tuple[int, int]] = {}
    for key, _, count, total, _ in rows:
        first.setdefault(key, (count, total))
    return first


def test_a_snapshot_and_a_job_started_from_it(flink: Server, tmp_path: Path) -> None:
    source_out, restored_out = tmp_path / "source", tmp_path / "restored"
    source_id = _create(flink, "snapshotted", "windowed_counts.py", "--out", str(source_out))
    _wait_state(flink, source_id, "JOB_STATE_RUNNING")
    wait_windows(source_out, 3)

    response = httpx.post(
        f"{_jobs(flink)}/{source_id}:snapshot", json={"ttl": "3600s", "description": "before v2"}, timeout=180
    )
    assert response.status_code == 200, response.text
    snapshot = response.json()
    assert snapshot["state"] == "READY", snapshot
    assert snapshot["sourceJobId"] == source_id and snapshot["projectId"] == PROJECT
    assert snapshot["ttl"] == "3600s" and snapshot["description"] == "before v2"
    assert int(snapshot["diskSizeBytes"]) > 0
    assert httpx.get(f"{_snapshots(flink)}/{snapshot['id']}", timeout=30).json()["id"] == snapshot["id"]
    listed = httpx.get(_snapshots(flink, f"/jobs/{source_id}"), timeout=30).json()["snapshots"]
    assert [s["id"] for s in listed] == [snapshot["id"]]
    savepoint = _savepoint_folder(flink, snapshot["id"])
    assert (savepoint / "_metadata").is_file(), savepoint
    # One with a short time to live: the scheduler deletes it, and its savepoint, once it has expired.
    response = httpx.post(f"{_jobs(flink)}/{source_id}:snapshot", json={"ttl": "1s"}, timeout=180)
    assert response.status_code == 200 and response.json()["state"] == "READY", response.text
    short_lived = response.json()["id"]
    short_savepoint = _savepoint_folder(flink, short_lived)
    assert short_savepoint.is_dir()

    # The source stops; a new job starts from the snapshot and its running totals go on.
    assert _request(flink, source_id, "JOB_STATE_CANCELLED").status_code == 200
    _wait_state(flink, source_id, "JOB_STATE_CANCELLED", timeout=60)
    restored_id = _create(
        flink,
        "restored",
        "windowed_counts.py",
        "--out",
        str(restored_out),
        "--version",
        "v2",
        createdFromSnapshotId=snapshot["id"],
    )
    assert _get(flink, restored_id)["createdFromSnapshotId"] == snapshot["id"]
    _wait_state(flink, restored_id, "JOB_STATE_RUNNING")
    wait_windows(restored_out, 3)
    for key, (count, total) in _first_totals(read_windows(restored_out)).items():
        assert total > count, f"key {key}: the running total did not carry over ({count}, {total})"
    assert _request(flink, restored_id, "JOB_STATE_CANCELLED").status_code == 200

    # Snapshots of a job that is not running are refused; a deleted snapshot is gone.
    response = httpx.post(f"{_jobs(flink)}/{source_id}:snapshot", json={}, timeout=30)
    assert response.status_code == 400 and "SNAPSHOT_NOT_RUNNING" in response.text
    assert httpx.delete(f"{_snapshots(flink)}/{snapshot['id']}", timeout=60).status_code == 200
    assert httpx.get(f"{_snapshots(flink)}/{snapshot['id']}", timeout=30).status_code == 404
    assert not savepoint.exists() and not savepoint.parent.exists(), "the deleted snapshot's savepoint is on disk"
    deadline = time.monotonic() + 120
    while httpx.get(f"{_snapshots(flink)}/{short_lived}", timeout=30).status_code != 404:
        assert time.monotonic() < deadline, "the expired snapshot is still there"
        time.sleep(0.5)
    assert not short_savepoint.exists() and not short_savepoint.parent.exists(), "the expired savepoint is on disk"
    _wait_state(flink, restored_id, "JOB_STATE_CANCELLED", timeout=60)


UIDS = ["count-per-window", "running-total"]
"""The stateful operators of windowed_counts.py, as a program declares them for updates."""


def test_update_refused_failed_and_done(flink: Server, tmp_path: Path) -> None:
    old_out, failed_out, new_out = tmp_path / "old", tmp_path / "failed", tmp_path / "new"

    def create(
        out: Path, program: str, uids: list[str], total_uid: str = "running-total", **extra: Any
    ) -> httpx.Response:
        body = {
            "name": "updated",
            "type": "JOB_TYPE_STREAMING",
            "environment": {
                "sdkPipelineOptions": {
                    "options": {
                        "tidegate": {
                            "engine": "flink",
                            "program": str(JOBS / program),
                            "args": ["--out", str(out), "--version", out.name, "--total-uid", total_uid],
                            "uids": uids,
                        }
                    }
                }
            },
            **extra,
        }
        return httpx.post(_jobs(flink), json=body, timeout=60)

    response = create(old_out, "windowed_counts.py", UIDS)
    assert response.status_code == 200, response.text
    old_id = response.json()["id"]
    _wait_state(flink, old_id, "JOB_STATE_RUNNING")
    wait_windows(old_out, 3)

    # Incompatible: a stateful operator would lose its state. Refused; the old job runs on.
    response = create(new_out, "windowed_counts.py", UIDS[:1], replaceJobId=old_id)
    assert response.status_code == 400 and "UPDATE_INCOMPATIBLE" in response.text, response.text
    assert _get(flink, old_id)["currentState"] == "JOB_STATE_RUNNING"

    # New code that cannot start from the old state: the old job resumes from the savepoint.
    response = create(failed_out, "fails.py", UIDS, replaceJobId=old_id)
    assert response.status_code == 200, response.text
    failed_id = response.json()["id"]
    _wait_state(flink, failed_id, "JOB_STATE_FAILED", timeout=240)
    assert _get(flink, old_id)["currentState"] == "JOB_STATE_RUNNING"
    assert any("resumed from its savepoint" in m["messageText"] for m in _messages(flink, old_id))
    before = len(read_windows(old_out))
    wait_windows(old_out, before + 3, timeout=120)  # the resumed run writes again, totals going on
    rows = read_windows(old_out)
    for key in {row[0] for row in rows}:
        totals = [row[3] for row in rows if row[0] == key]
        assert totals == sorted(totals), f"key {key}: the running total went back after the resume"

    # A compatible update that renames the stateful running total (transformNameMapping onto
    # operator uids): the old job ends UPDATED, the new one continues its totals.
    renamed = ["count-per-window", "running-total-v2"]
    mapping = {"running-total": "running-total-v2"}
    response = create(new_out, "windowed_counts.py", renamed, "running-total-v2", replaceJobId=old_id)
    assert response.status_code == 400 and "running-total" in response.text, "unmapped, the rename loses state"
    response = create(
        new_out, "windowed_counts.py", renamed, "running-total-v2", replaceJobId=old_id, transformNameMapping=mapping
    )
    assert response.status_code == 200, response.text
    new_id = response.json()["id"]
    new = _wait_state(flink, new_id, "JOB_STATE_RUNNING", timeout=240)
    assert new["replaceJobId"] == old_id
    old = _wait_state(flink, old_id, "JOB_STATE_UPDATED", timeout=60)
    assert old["replacedByJobId"] == new_id
    wait_windows(new_out, 3)
    for key, (count, total) in _first_totals(read_windows(new_out)).items():
        assert total > count, f"key {key}: the running total did not carry over ({count}, {total})"
    assert _request(flink, new_id, "JOB_STATE_CANCELLED").status_code == 200
    _wait_state(flink, new_id, "JOB_STATE_CANCELLED", timeout=60)

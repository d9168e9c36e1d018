"""Cancels never take the local Flink cluster's TaskManager down (issue #14, item 5).

A cancel under load can end the TaskManager: Beam's ``DefaultJobBundleFactory.close`` (inside
the flink-python jar) drops the references of a bundle still open and one reference too many
("Reference count must not be negative"), an error in the task's cleanup that Flink takes for
fatal. Here jobs are cancelled two at a time on a real cluster and the TaskManager must stay the
same process throughout. ``benchmarks/bench_flink_cancels.py`` does the same many times on a busy
machine and counts. No configuration found so far avoids it (managed memory off for Python
workers does not, measured): the test is skipped until one does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_flink_engine import JOBS, local_engine
from tidegate.engines.base import EngineState, Handle, LaunchRequest
from tidegate.engines.flink import FlinkEngine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skip(reason="issue #14 item 5 is open: PyFlink's double release still ends the TaskManager"),
]

ROUNDS, AT_ONCE = 5, 2  # 10 cancels
DOUBLE_RELEASE = "Reference count must not be negative"
ENDED = {EngineState.SUCCEEDED, EngineState.FAILED, EngineState.CANCELLED, EngineState.DRAINED}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkEngine]:
    yield from local_engine(tmp_path_factory, {})


def _wait(engine: FlinkEngine, handle: Handle, wanted: EngineState, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    status = engine.poll(handle)
    while status.state is not wanted:
        assert status.state not in ENDED, f"run ended {status.state}, wanted {wanted}: {status.error[:3000]}"
        assert time.monotonic() < deadline, f"still {status.state} after {timeout} s, wanted {wanted}"
        time.sleep(0.3)
        status = engine.poll(handle)


def _double_releases(folder: Path) -> list[str]:
    return [
        path.name
        for path in (folder / "log").glob("*")
        if path.is_file() and DOUBLE_RELEASE in path.read_text(encoding="utf-8", errors="replace")
    ]


def test_ten_cancels_leave_the_taskmanager_running(engine: FlinkEngine, tmp_path: Path) -> None:
    cluster = engine._cluster
    assert cluster is not None
    taskmanager = cluster._members[1]
    for round_ in range(ROUNDS):
        handles = []
        for i in range(AT_ONCE):
            name = f"cancel-{round_}-{i}"
            request = LaunchRequest(
                job_id=name,
                job_name=name,
                streaming=True,
                workdir=tmp_path / name,
                program=str(JOBS / "windowed_counts.py"),
                args=("--out", str(tmp_path / f"out-{name}"), "--rate", "20"),
            )
            handles.append(engine.launch(request))
        for handle in handles:
            _wait(engine, handle, EngineState.RUNNING)
        for handle in handles:
            engine.cancel(handle)
        for handle in handles:
            _wait(engine, handle, EngineState.CANCELLED)
            engine.release(handle)
        # The same TaskManager process, never restarted by the engine, still registered.
        assert taskmanager.alive(), f"the TaskManager exited in round {round_}"
        assert cluster._members[1] is taskmanager, f"the TaskManager was started again in round {round_}"
        overview = httpx.get(f"{engine.rest_url}/overview", timeout=10).json()
        assert overview["taskmanagers"] == 1, overview
        assert not _double_releases(cluster.folder), f"'{DOUBLE_RELEASE}' logged in round {round_}"

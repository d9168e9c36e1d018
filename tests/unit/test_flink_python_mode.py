"""The Python execution mode written beside a savepoint, and read back at a restore."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tidegate import processes
from tidegate.engines.base import LaunchRequest
from tidegate.engines.flink import FlinkEngine
from tidegate.engines.flink_local import LocalFlinkCluster
from tidegate.engines.flink_runs import FlinkRun, load_run, mark_python_mode, python_mode_of


def test_the_mode_beside_a_savepoint_is_read_back_from_its_path_or_its_file_uri(tmp_path: Path) -> None:
    savepoint = tmp_path / "savepoint-1a2b3c"
    savepoint.mkdir()
    assert python_mode_of(str(savepoint)) is None  # one taken before modes were written: none
    mark_python_mode(f"file:{savepoint}", "thread")  # how Flink names a savepoint's location
    assert python_mode_of(str(savepoint)) == "thread"
    assert python_mode_of(savepoint.as_uri()) == "thread"
    mark_python_mode(str(savepoint), "process")
    assert python_mode_of(f"file:{savepoint}") == "process"


def test_a_savepoint_elsewhere_or_gone_has_no_mode_and_gets_none_written(tmp_path: Path) -> None:
    mark_python_mode(str(tmp_path / "gone"), "thread")
    assert not (tmp_path / "gone").exists()
    assert python_mode_of(str(tmp_path / "gone")) is None
    assert python_mode_of("s3://bucket/savepoints/savepoint-1") is None
    mark_python_mode(str(tmp_path), "")  # a run of a cluster given by address: its mode is the cluster's
    assert python_mode_of(str(tmp_path)) is None


def test_a_runs_record_keeps_its_mode_and_an_older_record_has_none(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text('{"tmp": "/t", "submitted": true}')
    assert load_run(path, "a" * 32).python_mode == ""
    path.write_text('{"tmp": "/t", "submitted": true, "python_mode": "thread"}')
    assert load_run(path, "a" * 32) == FlinkRun(job_id="a" * 32, tmp="/t", submitted=True, python_mode="thread")


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_the_local_cluster_builds_jobs_in_its_mode_and_thread_mode_loads_pemja_once(tmp_path: Path, mode: str) -> None:
    cluster = LocalFlinkCluster(tmp_path / "cluster", python=Path("/venv/bin/python"), python_mode=mode)
    settings = cluster.settings()
    assert settings["python.execution-mode"] == mode
    assert ("classloader.parent-first-patterns.additional" in settings) is (mode == "thread")
    home = tmp_path / "home"
    for jar in ("lib/flink-dist-2.3.0.jar", "opt/flink-python-2.3.0.jar", "opt/flink-sql-client-2.3.0.jar"):
        (home / jar).parent.mkdir(parents=True, exist_ok=True)
        (home / jar).write_bytes(b"PK")
    cluster.flink_home = home
    cluster._write_lib()  # what start puts on the cluster's classpath (FLINK_LIB_DIR)
    expected = {"flink-dist-2.3.0.jar"} | ({"flink-python-2.3.0.jar"} if mode == "thread" else set())
    assert {jar.name for jar in cluster.lib_dir.iterdir()} == expected


def test_an_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown Python execution mode 'threads'"):
        LocalFlinkCluster(tmp_path, python=Path("/venv/bin/python"), python_mode="threads")


@pytest.mark.parametrize(("recorded", "mode"), [({}, "process"), ({"python_mode": "thread"}, "thread")])
def test_an_adopted_cluster_keeps_the_mode_it_was_started_with(
    tmp_path: Path, recorded: dict[str, str], mode: str
) -> None:
    """One started before modes were recorded ran in process mode: its jobs must be built for it."""
    me = {"pid": os.getpid(), "started": processes.started(os.getpid())}  # a live process stands in for it
    state = {"cluster_id": "c1", "rest_port": 18081, "rpc_port": 16123, "flink_home": str(tmp_path / "home")}
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "cluster.json").write_text(
        json.dumps({**state, **recorded, "jobmanager": me, "taskmanager": me})
    )
    cluster = LocalFlinkCluster(tmp_path / "cluster", python=Path("/venv/bin/python"), python_mode="thread")
    assert cluster.adopt()
    assert (cluster.python_mode, cluster.rest_port) == (mode, 18081)


def _request(tmp_path: Path, restore_from: str = "") -> LaunchRequest:
    return LaunchRequest(
        job_id="j", job_name="j", streaming=True, workdir=tmp_path, program="p.py", restore_from=restore_from
    )


@pytest.mark.parametrize(
    ("asked", "marked", "expected"),
    [
        ("", None, ""),  # a cluster given by address, no mode asked: PyFlink's default, nothing set
        ("", "thread", ""),
        ("thread", None, "thread"),
        ("thread", "", "process"),  # a savepoint with no mode beside it: from before modes were written
        ("thread", "thread", "thread"),
        ("process", "thread", "thread"),  # a restore runs in the mode its state was written in
    ],
)
def test_a_remote_clusters_jobs_run_in_the_mode_asked_and_a_restore_in_its_states(
    tmp_path: Path, asked: str, marked: str | None, expected: str
) -> None:
    engine = FlinkEngine(
        state_dir=tmp_path / "state", rest_url="http://localhost:1", warm_submit=False, python_mode=asked
    )
    try:
        if marked is None:
            assert engine._python_mode(_request(tmp_path)) == expected
        else:
            savepoint = tmp_path / "savepoint-1"
            savepoint.mkdir()
            mark_python_mode(str(savepoint), marked)
            assert engine._python_mode(_request(tmp_path, f"file:{savepoint}")) == expected
    finally:
        engine.close()

"""BeamEngine's warm starts: runs handed to processes started before them, and those processes' ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

if not os.environ.get("CI"):  # a laptop without Beam skips these; CI must have it
    pytest.importorskip("apache_beam")

from apache_beam.internal.cloudpickle import cloudpickle

from tests.integration.test_beam_engine import (
    LAUNCHED,
    LINES,
    all_messages,
    assert_group_gone,
    dead,
    endless,
    idle_pair,
    launch,
    members,
    output_lines,
    recorded_pid,
    release_all,
    serialized,
    upper_case,
    wait_for,
    wait_until_ended,
    waiting_on_stdin,
    word_count,
    worker_pids,
)
from tidegate.engines.base import EngineState, RunStatus
from tidegate.engines.beam import BeamEngine

pytestmark = pytest.mark.slow

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # its lambdas travel to the worker by value


@pytest.fixture
def engine() -> Iterator[BeamEngine]:
    """A warm engine, its idle processes ready; its runs are all released after the test, whatever happened."""
    engine = BeamEngine()
    try:
        idle_pair(engine)
        yield engine
    finally:
        release_all(engine)
        engine.close()


def test_a_warm_launch_runs_on_the_idle_processes_at_once(engine: BeamEngine, tmp_path: Path) -> None:
    supervisor, pipeline = idle_pair(engine)
    handle = launch(engine, tmp_path / "run", serialized(lambda p: upper_case(p, tmp_path / "out")))
    wait_for(lambda: engine.poll(handle).state is not EngineState.STARTING, 30, "the run to start")
    assert recorded_pid(tmp_path / "run") == supervisor
    assert json.loads((tmp_path / "run" / "status.json").read_text())["pid"] == pipeline
    assert worker_pids(tmp_path / "run") in ([supervisor, pipeline], [])  # [] once it ended
    assert wait_until_ended(engine, handle, timeout=60) == RunStatus(EngineState.SUCCEEDED)
    assert output_lines(tmp_path / "out") == ["X", "Y"]
    assert any("finished" in m.text for m in all_messages(engine, handle))
    # The supervisor exits as the pipeline process did; the engine reaps it as it polls.
    wait_for(lambda: engine.poll(handle).state and members(supervisor) == [], 5, "the run's group to end")
    assert idle_pair(engine)[0] != supervisor  # the next one is ready


def test_warm_runs_in_a_row_are_independent(engine: BeamEngine, tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_text("\n".join(LINES) + "\n")
    expected = sorted(f"{word}: {n}" for word, n in Counter(" ".join(LINES).split()).items())
    runs = [
        (serialized(lambda p: word_count(p, source, tmp_path / "out-1")), tmp_path / "out-1", expected),
        (serialized(lambda p: upper_case(p, tmp_path / "out-2")), tmp_path / "out-2", ["X", "Y"]),
    ]
    groups, pipelines, texts = [], [], []
    for n, (pipeline, out, want) in enumerate(runs, start=1):
        supervisor, idle_pipeline = idle_pair(engine)
        handle = launch(engine, tmp_path / f"run-{n}", pipeline)
        assert wait_until_ended(engine, handle, timeout=60) == RunStatus(EngineState.SUCCEEDED)
        assert recorded_pid(tmp_path / f"run-{n}") == supervisor
        assert output_lines(out) == want
        wait_for(lambda h=handle, g=supervisor: engine.poll(h).state and members(g) == [], 5, "the group to end")
        groups.append(supervisor)
        pipelines.append(idle_pipeline)
        texts.append({m.text for m in all_messages(engine, handle)})
    assert groups[0] != groups[1]
    assert pipelines[0] != pipelines[1]
    assert any(t.startswith("splitting line:") for t in texts[0])
    assert not any(t.startswith("splitting line:") for t in texts[1])  # nothing of the first run in the second


def test_the_idle_processes_die_when_the_engine_closes(tmp_path: Path) -> None:
    engine = BeamEngine()
    wait_for(lambda: engine._warm is not None and engine._warm.idle_pid is not None, 10, "an idle supervisor")
    assert engine._warm is not None
    importing = engine._warm.idle_pid
    assert importing is not None
    engine.close()  # while its pipeline process still imports Beam
    wait_for(lambda: members(importing) == [], 5, "the idle group to end")

    engine = BeamEngine()
    supervisor, pipeline = idle_pair(engine)
    assert os.getpgid(pipeline) == os.getsid(pipeline) == supervisor  # a session and a group of their own
    engine.close()
    assert_group_gone(supervisor)  # reaped too: the supervisor reaps its pipeline process, the engine it
    engine.close()  # idempotent
    # Later launches start cold.
    handle = launch(engine, tmp_path / "run", serialized(lambda p: upper_case(p, tmp_path / "out")))
    try:
        assert wait_until_ended(engine, handle, timeout=60) == RunStatus(EngineState.SUCCEEDED)
        assert recorded_pid(tmp_path / "run") != supervisor
    finally:
        engine.release(handle)
        LAUNCHED.remove((engine, handle))


@pytest.mark.parametrize("when", ["ready", "importing"])
def test_the_idle_processes_die_with_the_engines_process(when: str) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from tidegate.engines.beam import BeamEngine
        engine = BeamEngine()
        while engine._warm.idle_pid is None:
            time.sleep(0.01)
        print(engine._warm.idle_pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        supervisor = int(parent.stdout.readline())
        if when == "ready":
            wait_for(lambda: any(waiting_on_stdin(p) for p in members(supervisor) if p != supervisor), 90, "Beam")
        group = members(supervisor)
        assert supervisor in group
    finally:
        parent.kill()  # SIGKILL: no close, no atexit
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    wait_for(lambda: all(dead(pid) for pid in group), 5, "the idle processes to die")
    wait_for(lambda: all(dead(pid) for pid in members(supervisor)), 5, "the idle group to die")


@pytest.mark.parametrize("victim", ["supervisor", "pipeline process"])
def test_broken_idle_processes_mean_a_cold_start(engine: BeamEngine, tmp_path: Path, victim: str) -> None:
    supervisor, pipeline = idle_pair(engine)
    os.kill(supervisor if victim == "supervisor" else pipeline, signal.SIGKILL)
    wait_for(lambda: dead(supervisor if victim == "supervisor" else pipeline), 5, "the victim to die")
    handle = launch(engine, tmp_path / "run", serialized(lambda p: upper_case(p, tmp_path / "out")))
    assert wait_until_ended(engine, handle, timeout=60) == RunStatus(EngineState.SUCCEEDED)
    assert output_lines(tmp_path / "out") == ["X", "Y"]
    # A dead supervisor: the run went to the next idle one (or a cold start); a dead pipeline process:
    # the supervisor started one cold.
    assert (recorded_pid(tmp_path / "run") == supervisor) is (victim == "pipeline process")
    assert idle_pair(engine)[0] != supervisor  # and a new pair is ready


def test_cancel_of_a_warm_launched_run_leaves_no_process(engine: BeamEngine, tmp_path: Path) -> None:
    supervisor, pipeline = idle_pair(engine)
    handle = launch(engine, tmp_path / "run", serialized(endless), num_workers=2)
    wait_for(lambda: any(m.text == "sleeper started" for m in engine.messages(handle, 0)[0]), 60, "the DoFn to run")
    assert worker_pids(tmp_path / "run") == [supervisor, pipeline]
    assert len(members(supervisor)) == 4  # the supervisor, the pipeline process and its two SDK worker processes
    everyone = members(supervisor)
    engine.cancel(handle)
    assert_group_gone(supervisor)
    assert all(not Path(f"/proc/{pid}").exists() for pid in everyone)
    assert engine.poll(handle) == RunStatus(EngineState.CANCELLED)
    assert BeamEngine(warm=False).poll(handle) == RunStatus(EngineState.CANCELLED)

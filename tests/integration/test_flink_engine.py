"""The Flink engine end to end, on a real local Flink cluster started once for the module.

Jobs go through the warm PyFlink submitter (each launch waits until one is ready, and
checks that it took the job) unless a test says otherwise; the cold ``flink run`` path
is tested by an engine without warm submission and by a submitter that died.

Needs Java and the Flink environment (``scripts/setup-flink``, which the fixture runs).
Without Java the tests skip, except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.flink_output import read_seen, read_windows, wait_windows
from tidegate.engines.base import EngineState, Handle, LaunchRequest, RunStatus
from tidegate.engines.flink import FlinkEngine
from tidegate.engines.flink_runs import python_mode_of
from tidegate.model import MessageImportance

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
JOBS = Path(__file__).resolve().parent / "flink_jobs"
WINDOW_MS = 2000
WARM_NOTE = "Submitted by the warm PyFlink submitter"
ENDED = {EngineState.SUCCEEDED, EngineState.FAILED, EngineState.CANCELLED, EngineState.DRAINED}


def _flink_venv() -> Path:
    setup = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-flink")], capture_output=True, text=True, timeout=1200, check=False
    )
    if setup.returncode != 0:
        pytest.fail(f"scripts/setup-flink failed:\n{setup.stderr[-4000:]}")
    return Path(setup.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def local_engine(tmp_path_factory: pytest.TempPathFactory, flink_conf: dict[str, str]) -> Iterator[FlinkEngine]:
    """An engine and its local cluster (four slots, free ports), stopped at the end; for a module's fixture."""
    engine = FlinkEngine(
        state_dir=tmp_path_factory.mktemp("flink-state"),
        flink_venv=_flink_venv(),
        rest_port=_free_port(),
        rpc_port=_free_port(),
        task_slots=4,
        flink_conf=flink_conf,
    )
    started = time.monotonic()
    try:
        engine.start_cluster()
        print(f"\nlocal Flink cluster ready in {time.monotonic() - started:.1f} s")
        yield engine
    finally:
        engine.stop_cluster(savepoints=False)  # the cluster outlives its engine: stop it on purpose
        engine.close()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkEngine]:
    """One engine and its local cluster for the whole module (starting one takes ~15 s and ~1.5 GB)."""
    # One restart, so that a failing job ends FAILED quickly.
    yield from local_engine(
        tmp_path_factory,
        {"restart-strategy.failure-rate.max-failures-per-interval": "1", "restart-strategy.failure-rate.delay": "1 s"},
    )


def _launch(
    engine: FlinkEngine,
    tmp_path: Path,
    program: str,
    *args: str,
    restore_from: str = "",
    streaming: bool = True,
    warm: bool = True,
) -> Handle:
    if warm:
        assert engine.warm_submitter_ready(timeout=180), "no warm PyFlink submitter got ready"
    workdir = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    request = LaunchRequest(
        job_id="job",
        job_name="job",
        streaming=streaming,
        workdir=workdir,
        program=str(JOBS / program),
        args=args,
        restore_from=restore_from,
    )
    handle = engine.launch(request)
    # launch does not wait for the submission, which takes seconds (bench_flink.py measures them)
    assert engine.poll(handle).state is EngineState.STARTING
    return handle


def _wait(engine: FlinkEngine, handle: Handle, wanted: set[EngineState], timeout: float) -> tuple[RunStatus, float]:
    started = time.monotonic()
    status = engine.poll(handle)
    while status.state not in wanted:
        assert status.state not in ENDED, f"run ended {status.state}, wanted {wanted}: {status.error[:3000]}"
        assert time.monotonic() - started < timeout, f"still {status.state} after {timeout} s, wanted {wanted}"
        time.sleep(0.3)
        status = engine.poll(handle)
    return status, time.monotonic() - started


def _start_counting(engine: FlinkEngine, tmp_path: Path, out: Path, *args: str, restore_from: str = "") -> Handle:
    handle = _launch(engine, tmp_path, "windowed_counts.py", "--out", str(out), *args, restore_from=restore_from)
    _, took = _wait(engine, handle, {EngineState.RUNNING}, timeout=120)
    print(f"submit -> RUNNING in {took:.1f} s")
    assert _warm(engine, handle), "the warm submitter did not submit the job"
    return handle


def _warm(engine: FlinkEngine, handle: Handle) -> bool:
    """Whether the warm submitter submitted the run (the engine notes it)."""
    return any(m.text.startswith(WARM_NOTE) for m in engine.messages(handle, 0)[0])


def _check_totals(rows: list[tuple[int, int, int, int, str]]) -> None:
    """Per key, windows follow each other and each running total adds the window's count."""
    for key in {row[0] for row in rows}:
        mine = [row for row in rows if row[0] == key]
        for before, after in itertools.pairwise(mine):
            assert after[1] == before[1] + WINDOW_MS, mine
            assert after[3] == before[3] + after[2], mine


def test_drain_fires_the_open_window_and_ends_drained(engine: FlinkEngine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    handle = _start_counting(engine, tmp_path, out)
    wait_windows(out, 6)
    metrics = engine.metrics(handle)
    stages = engine.stages(handle)

    engine.drain(handle)
    _, took = _wait(engine, handle, {EngineState.DRAINED}, timeout=60)
    print(f"drain -> DRAINED in {took:.1f} s")

    seen, rows = read_seen(out), read_windows(out)
    # Every element that entered was counted in a fired window: the open one fired too.
    assert sum(row[2] for row in rows) == len(seen) == len(set(seen))
    assert sorted(seen) == list(range(len(seen)))
    last_window_end = (max(seen) * 100 // WINDOW_MS + 1) * WINDOW_MS
    assert max(row[1] for row in rows) == last_window_end
    _check_totals(rows)

    assert any(m.name == "numRecordsOut" and m.value > 0 for m in metrics), metrics
    assert any(m.name == "currentOutputWatermark" for m in metrics), metrics
    assert len(stages) >= 2 and all(stage.steps for stage in stages), stages
    messages, cursor = engine.messages(handle, 0)
    texts = [m.text for m in messages]
    assert any("is RUNNING" in text for text in texts), texts
    assert any(text.startswith("Savepoint") and "completed" in text for text in texts), texts
    # Nothing is handed out twice. Flink may still report the job's end (FINISHED) after
    # the engine saw it DRAINED: that one may come now, once.
    later, _ = engine.messages(handle, cursor)
    assert not {m.text for m in later} & set(texts), later
    assert all("FINISHED" in m.text for m in later), later
    engine.release(handle)


def test_cancel_ends_cancelled_and_writes_nothing_after(engine: FlinkEngine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    handle = _start_counting(engine, tmp_path, out)
    wait_windows(out, 3)

    engine.cancel(handle)
    _, took = _wait(engine, handle, {EngineState.CANCELLED}, timeout=60)
    print(f"cancel -> CANCELLED in {took:.1f} s")
    engine.cancel(handle)  # idempotent

    sizes = [(out / name).stat().st_size for name in ("seen.txt", "windows.txt")]
    time.sleep(3)
    assert [(out / name).stat().st_size for name in ("seen.txt", "windows.txt")] == sizes
    engine.release(handle)


def _python_workers(engine: FlinkEngine) -> list[str]:
    """The Python worker processes (process mode's fn harness) the local cluster's TaskManager started."""
    assert engine._cluster is not None
    taskmanager = engine._cluster._members[1].pid
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == taskmanager and "pyflink" in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def test_a_job_runs_its_python_in_the_taskmanager_in_thread_mode(engine: FlinkEngine, tmp_path: Path) -> None:
    """The local cluster's default: no Python worker process is started, the job's Python runs all the same."""
    out = tmp_path / "out"
    handle = _start_counting(engine, tmp_path, out)
    wait_windows(out, 3)  # its Python functions (the windows' counts, the keyed totals) ran
    _check_totals(read_windows(out))
    assert _python_workers(engine) == []
    engine.cancel(handle)
    _wait(engine, handle, {EngineState.CANCELLED}, timeout=60)
    engine.release(handle)


def test_update_stops_with_a_savepoint_and_the_new_run_continues_the_totals(
    engine: FlinkEngine, tmp_path: Path
) -> None:
    first_out, second_out = tmp_path / "first", tmp_path / "second"
    first = _start_counting(engine, tmp_path, first_out, "--version", "v1")
    wait_windows(first_out, 6)

    savepoint = engine.stop_with_savepoint(first, tmp_path / "savepoints")
    assert savepoint
    assert python_mode_of(savepoint) == "thread"  # so the next job runs in the mode its state was written in
    _wait(engine, first, {EngineState.CANCELLED}, timeout=30)
    before, seen_before = read_windows(first_out), read_seen(first_out)

    second = _start_counting(engine, tmp_path, second_out, "--version", "v2", restore_from=savepoint)
    wait_windows(second_out, 6)
    engine.cancel(second)
    _wait(engine, second, {EngineState.CANCELLED}, timeout=60)

    after = read_windows(second_out)
    assert {row[4] for row in after} == {"v2"}
    # The source goes on where it stopped; each key's window and total continue where they were.
    assert min(read_seen(second_out)) == max(seen_before) + 1
    _check_totals(before + after)
    for key in {row[0] for row in before}:
        assert next(row for row in after if row[0] == key)[3] > [row for row in before if row[0] == key][-1][3]
    for handle in (first, second):
        engine.release(handle)


def _request(tmp_path: Path, program: str, *args: str, job_id: str = "job") -> LaunchRequest:
    workdir = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}"
    return LaunchRequest(
        job_id=job_id, job_name=job_id, streaming=True, workdir=workdir, program=str(JOBS / program), args=args
    )


def test_an_update_prepared_during_the_stop_is_submitted_from_its_savepoint(
    engine: FlinkEngine, tmp_path: Path
) -> None:
    """The new job's program builds its graph while the old job stops; only then is it submitted, with the state."""
    first_out, second_out = tmp_path / "first", tmp_path / "second"
    first = _start_counting(engine, tmp_path, first_out, "--version", "v1")
    wait_windows(first_out, 6)
    assert engine.warm_submitter_ready(timeout=180)
    new = _request(tmp_path, "windowed_counts.py", "--out", str(second_out), "--version", "v2", job_id="new")
    engine.prepare_launch(new)
    savepoint = engine.stop_with_savepoint(first, tmp_path / "savepoints")
    _wait(engine, first, {EngineState.CANCELLED}, timeout=30)
    before, seen_before = read_windows(first_out), read_seen(first_out)
    prepared = engine._prepared._prepared["new"]
    assert prepared.wait(120) is not None, "the program did not build its graph ahead"
    assert not engine._flink_has(prepared.job_id), "submitted before its state was given"

    second = engine.launch(replace(new, restore_from=savepoint))
    assert second.ref == prepared.job_id
    _wait(engine, second, {EngineState.RUNNING}, timeout=120)
    notes = [m.text for m in engine.messages(second, 0)[0]]
    assert f"{WARM_NOTE} (its graph built while the job it replaces stopped)" in notes
    assert engine._rest.get(f"/jobs/{second.ref}/checkpoints")["latest"]["restored"]["external_path"] in savepoint
    wait_windows(second_out, 6)
    engine.cancel(second)
    _wait(engine, second, {EngineState.CANCELLED}, timeout=60)
    after = read_windows(second_out)
    assert {row[4] for row in after} == {"v2"}
    assert min(read_seen(second_out)) == max(seen_before) + 1
    _check_totals(before + after)
    for handle in (first, second):
        engine.release(handle)


def test_a_prepared_job_that_is_forgotten_submits_nothing(engine: FlinkEngine, tmp_path: Path) -> None:
    assert engine.warm_submitter_ready(timeout=180)
    request = _request(tmp_path, "windowed_counts.py", "--out", str(tmp_path / "out"), job_id="forgotten")
    engine.prepare_launch(request)
    prepared = engine._prepared._prepared["forgotten"]
    submitter = prepared.wait(120)
    assert submitter is not None
    engine.forget_launch("forgotten")
    submitter.process.wait(10)
    assert not engine._flink_has(prepared.job_id)
    assert engine._prepared.take(replace(request, restore_from="somewhere")) is None

    # A server killed meanwhile: its end closes the submitter's stdin, which then ends with nothing sent.
    assert engine.warm_submitter_ready(timeout=180)
    orphan = replace(request, job_id="orphaned", workdir=tmp_path / "orphaned")
    engine.prepare_launch(orphan)
    prepared = engine._prepared._prepared["orphaned"]
    submitter = prepared.wait(120)
    assert submitter is not None and submitter.process.stdin is not None
    submitter.process.stdin.close()
    assert submitter.process.wait(30) == 0
    time.sleep(1)
    assert not engine._flink_has(prepared.job_id)
    engine.forget_launch("orphaned")


def test_a_program_that_submits_through_the_table_api_is_launched_as_any_job(
    engine: FlinkEngine, tmp_path: Path
) -> None:
    """Its submission cannot wait for a savepoint: nothing reaches Flink ahead, and its launch runs it as usual."""
    assert engine.warm_submitter_ready(timeout=180)
    request = _request(tmp_path, "table_insert.py", job_id="table")
    engine.prepare_launch(request)
    prepared = engine._prepared._prepared["table"]
    assert prepared.wait(120) is None
    assert not engine._flink_has(prepared.job_id)
    assert engine.warm_submitter_ready(timeout=180)  # the next one is there
    handle = engine.launch(request)
    _wait(engine, handle, {EngineState.SUCCEEDED}, timeout=120)
    engine.release(handle)


def test_a_new_run_from_a_snapshot_resumes_its_state(engine: FlinkEngine, tmp_path: Path) -> None:
    first_out, second_out = tmp_path / "first", tmp_path / "second"
    first = _start_counting(engine, tmp_path, first_out)
    wait_windows(first_out, 6)

    started = time.monotonic()
    snapshot = engine.snapshot(first, tmp_path / "snapshots")
    print(f"snapshot in {time.monotonic() - started:.1f} s: {snapshot}")
    assert engine.poll(first).state is EngineState.RUNNING
    engine.cancel(first)
    _wait(engine, first, {EngineState.CANCELLED}, timeout=60)

    second = _start_counting(engine, tmp_path, second_out, restore_from=snapshot)
    wait_windows(second_out, 3)
    engine.cancel(second)
    _wait(engine, second, {EngineState.CANCELLED}, timeout=60)

    before, after = read_windows(first_out), read_windows(second_out)
    _check_totals(after)
    for key in {row[0] for row in after}:
        _, end, count, total, _ = next(row for row in after if row[0] == key)
        # The first run had written the window just before, with the total the second run went on from.
        assert next(row for row in before if row[0] == key and row[1] == end - WINDOW_MS)[3] == total - count
    for handle in (first, second):
        engine.release(handle)


def test_a_failing_job_ends_failed_with_the_root_exception(engine: FlinkEngine, tmp_path: Path) -> None:
    handle = _launch(engine, tmp_path, "fails.py")
    status, _ = _wait(engine, handle, {EngineState.FAILED}, timeout=120)
    assert status.error.splitlines()[0] == "ValueError: tidegate test failure at element 3", status.error[:2000]
    messages, _ = engine.messages(handle, 0)
    assert any(m.importance is MessageImportance.JOB_MESSAGE_ERROR for m in messages)
    engine.release(handle)


def test_a_bounded_job_on_a_cluster_given_by_its_rest_address_succeeds(engine: FlinkEngine, tmp_path: Path) -> None:
    """With warm submission off: ``flink run``, configured for that cluster."""
    remote = FlinkEngine(
        state_dir=tmp_path / "remote-state", rest_url=engine.rest_url, flink_venv=engine.flink_venv, warm_submit=False
    )
    try:
        out = tmp_path / "sums.txt"
        handle = _launch(remote, tmp_path, "bounded_sum.py", str(out), streaming=False, warm=False)
        _wait(remote, handle, {EngineState.SUCCEEDED}, timeout=120)
        assert sorted(out.read_text().split()) == ["a,4", "b,6", "c,5"]
        assert not _warm(remote, handle)
        # An engine that did not launch the run still sees it (after a restart, or from another node).
        assert engine.poll(handle).state is EngineState.SUCCEEDED
        assert engine.stages(handle)
        remote.release(handle)
    finally:
        remote.close()


def test_a_program_that_does_not_submit_fails_with_its_error(engine: FlinkEngine, tmp_path: Path) -> None:
    program = tmp_path / "broken.py"
    program.write_text("raise RuntimeError('this program is broken on purpose')\n")
    assert engine.warm_submitter_ready(timeout=180)
    handle = engine.launch(
        LaunchRequest(job_id="j", job_name="j", streaming=True, workdir=tmp_path, program=str(program))
    )
    status, _ = _wait(engine, handle, {EngineState.FAILED}, timeout=120)
    assert "RuntimeError: this program is broken on purpose" in status.error.splitlines()[0], status.error[:2000]
    engine.release(handle)
    assert not (tmp_path / "flink").exists()


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_job_flink_took_is_reported_as_running_although_its_program_failed_after(
    engine: FlinkEngine, tmp_path: Path, warm: bool
) -> None:
    """Flink has the run's own job id, so the job is the run's: it runs, and nothing is left orphaned as FAILED."""
    submitting = engine
    if not warm:
        submitting = FlinkEngine(
            state_dir=tmp_path / "cold-state", rest_url=engine.rest_url, flink_venv=engine.flink_venv, warm_submit=False
        )
    try:
        out = tmp_path / "values.txt"
        handle = _launch(submitting, tmp_path, "submits_then_fails.py", str(out), streaming=False, warm=warm)
        _wait(submitting, handle, {EngineState.SUCCEEDED}, timeout=120)
        assert sorted(out.read_text().split()) == ["1", "2", "3"]
        texts = [m.text for m in submitting.messages(handle, 0)[0]]
        warned = [t for t in texts if t.startswith("The submission ended in an error, but Flink has job")]
        assert len(warned) == 1 and "this program fails after it submitted its job" in warned[0], texts
        assert _warm(submitting, handle) is warm
        submitting.release(handle)
    finally:
        if submitting is not engine:
            submitting.close()


def test_a_flink_sql_script_runs_as_one_job(engine: FlinkEngine, tmp_path: Path) -> None:
    out = tmp_path / "counts"
    script = tmp_path / "count.sql"
    script.write_text(f"""
        -- a comment; with a semicolon
        SET 'parallelism.default' = '1';
        CREATE TABLE counts (word STRING, n BIGINT)
            WITH ('connector' = 'filesystem', 'path' = '{out.as_uri()}', 'format' = 'csv');
        INSERT INTO counts
            SELECT word, COUNT(*) FROM (VALUES ('a;b'), ('c'), ('a;b')) AS t(word) GROUP BY word;
    """)
    handle = _launch(engine, tmp_path, str(script), streaming=False)
    _wait(engine, handle, {EngineState.SUCCEEDED}, timeout=120)
    lines = [line for part in out.rglob("*") if part.is_file() for line in part.read_text().split()]
    assert sorted(line.replace('"', "") for line in lines) == ["a;b,2", "c,1"]
    assert _warm(engine, handle)
    engine.release(handle)


@contextmanager
def default_ports_held() -> Iterator[None]:
    """Flink's default ports taken (if another holds one, all the better): a local cluster started meanwhile
    runs on free ports, never on a port another test's Flink client may use."""
    holders = []
    for port in (8081, 6123):
        holder = socket.socket()
        try:
            holder.bind(("127.0.0.1", port))
            holder.listen()
        except OSError:  # taken already: all the better
            holder.close()
            continue
        holders.append(holder)
    try:
        yield
    finally:
        for holder in holders:
            holder.close()


def test_a_local_cluster_whose_default_ports_are_taken_runs_on_others(tmp_path: Path) -> None:
    """A Flink cluster of the user's own on 8081/6123 does not stop tidegate's local one."""
    with default_ports_held():
        _run_on_other_ports(tmp_path)


def _run_on_other_ports(tmp_path: Path) -> None:
    engine = FlinkEngine(state_dir=tmp_path / "state", flink_venv=_flink_venv(), task_slots=1)
    try:
        engine.start_cluster()
        assert engine.rest_url != "http://localhost:8081"
        overview = httpx.get(f"{engine.rest_url}/overview", timeout=30).json()
        assert overview["taskmanagers"] == 1
        out = tmp_path / "sums.txt"
        handle = _launch(engine, tmp_path, "bounded_sum.py", str(out), streaming=False)
        _wait(engine, handle, {EngineState.SUCCEEDED}, timeout=180)
        assert sorted(out.read_text().split()) == ["a,4", "b,6", "c,5"]
        engine.release(handle)
    finally:
        engine.stop_cluster(savepoints=False)
        engine.close()


def test_a_taskmanager_that_exits_is_started_again(engine: FlinkEngine, tmp_path: Path) -> None:
    """PyFlink's TaskManager can end itself on a fatal error; jobs then wait for a new one, not forever."""
    cluster = engine._cluster
    assert cluster is not None
    taskmanager = cluster._members[1]
    assert taskmanager.popen is not None
    os.killpg(taskmanager.pid, signal.SIGKILL)
    taskmanager.popen.wait()
    out = tmp_path / "sums.txt"
    handle = _launch(engine, tmp_path, "bounded_sum.py", str(out), streaming=False)
    _wait(engine, handle, {EngineState.SUCCEEDED}, timeout=180)
    assert sorted(out.read_text().split()) == ["a,4", "b,6", "c,5"]
    assert cluster._members[1].pid != taskmanager.pid and cluster.running()
    engine.release(handle)


def test_a_job_whose_ready_submitter_died_is_submitted_by_the_one_that_replaces_it(
    engine: FlinkEngine, tmp_path: Path
) -> None:
    """The dead one is replaced at the launch; the job waits for the new one to get ready (never slower than cold)."""
    assert engine.warm_submitter_ready(timeout=180)
    killed = engine._warm.idle
    for idle in killed:
        os.killpg(idle.process.pid, signal.SIGKILL)  # the submitter and PyFlink's gateway
        idle.process.wait()
    out = tmp_path / "sums.txt"
    handle = _launch(engine, tmp_path, "bounded_sum.py", str(out), streaming=False, warm=False)
    _wait(engine, handle, {EngineState.SUCCEEDED}, timeout=180)
    assert sorted(out.read_text().split()) == ["a,4", "b,6", "c,5"]
    assert _warm(engine, handle)
    engine.release(handle)
    assert engine.warm_submitter_ready(timeout=180)  # and the next one is there
    assert engine._warm.idle and not {s.process.pid for s in engine._warm.idle} & {s.process.pid for s in killed}


def test_a_job_submitted_cold_is_updated_into_one_submitted_warm_with_its_state(
    engine: FlinkEngine, tmp_path: Path
) -> None:
    """Both paths give the job the same operator uids (the planner's included): state goes from one to the other."""
    cold = FlinkEngine(
        state_dir=tmp_path / "cold", rest_url=engine.rest_url, flink_venv=engine.flink_venv, warm_submit=False
    )
    out = tmp_path / "out"
    try:
        first = _launch(cold, tmp_path, "windowed_counts.py", "--out", str(out), "--version", "v1", warm=False)
        _wait(cold, first, {EngineState.RUNNING}, timeout=180)
        assert not _warm(cold, first)
        wait_windows(out, 6)
        savepoint = cold.stop_with_savepoint(first, tmp_path / "savepoints")
        _wait(cold, first, {EngineState.CANCELLED}, timeout=60)
        before = read_windows(out)
        cold.release(first)
    finally:
        cold.close()
    assert python_mode_of(savepoint) is None  # a cluster given by address: its own mode, process by default
    second = _start_counting(engine, tmp_path, out, "--version", "v2", restore_from=savepoint)
    assert _python_workers(engine), "restored from process mode's state, it runs in process mode"
    wait_windows(out, len(before) + 6)
    engine.cancel(second)
    _wait(engine, second, {EngineState.CANCELLED}, timeout=60)
    rows = read_windows(out)
    assert {row[4] for row in rows[len(before) :]} == {"v2"}
    _check_totals(rows)  # each key's total goes on from the cold job's: its state was restored
    engine.release(second)

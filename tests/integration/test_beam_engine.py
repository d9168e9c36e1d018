"""BeamEngine end to end: real pipelines, real worker processes, real process groups."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.processes import described, members

if not os.environ.get("CI"):  # a laptop without Beam skips these; CI must have it
    pytest.importorskip("apache_beam")

import apache_beam as beam
from apache_beam.internal.cloudpickle import cloudpickle
from apache_beam.metrics import Metrics
from apache_beam.transforms import environments

from tidegate.engines.base import EngineState, Handle, LaunchRequest, RunLeaseSpec, RunStatus, WorkerMessage
from tidegate.engines.beam import BeamEngine
from tidegate.errors import FailedPrecondition, Unimplemented
from tidegate.lifecycle import JobType
from tidegate.model import MessageImportance, MetricValue, NewJob, StageDetails
from tidegate.store import Store

pytestmark = pytest.mark.slow

# The worker process cannot import this test module: ship its functions and DoFns by
# value, as Beam does for a user's __main__.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

LINES = ["the quick brown fox", "jumps over the lazy dog", "the dog sleeps", "a fox jumps"]
WORDS = sum(len(line.split()) for line in LINES)


class SplitWords(beam.DoFn):
    """Splits a line into words, counting them and logging each line."""

    def __init__(self) -> None:
        self.words = Metrics.counter("wordcount", "words")

    def process(self, line: str) -> Iterator[str]:
        logging.getLogger("wordcount").info("splitting line: %s", line)
        for word in line.split():
            self.words.inc()
            yield word


def word_count(pipeline: beam.Pipeline, source: Path, target: Path) -> None:
    """Text file → words → counts → text files."""
    (
        pipeline
        | "Read" >> beam.io.ReadFromText(str(source))
        | "Split" >> beam.ParDo(SplitWords())
        | "Count" >> beam.combiners.Count.PerElement()
        | "Format" >> beam.MapTuple(lambda word, n: f"{word}: {n}")
        | "Write" >> beam.io.WriteToText(str(target))
    )


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"boom on element {x}")
    return x


def failing(pipeline: beam.Pipeline) -> None:
    pipeline | beam.Create([1, 2, 3, 4]) | "Explode" >> beam.Map(fail_on_three)


class Sleep(beam.DoFn):
    """Takes its time over every element."""

    def start_bundle(self) -> None:
        logging.getLogger("sleeper").warning("sleeper started")

    def process(self, x: int) -> Iterator[int]:
        time.sleep(0.2)
        yield x


def upper_case(pipeline: beam.Pipeline, target: Path) -> None:
    pipeline | beam.Create(["x", "y"]) | beam.Map(str.upper) | beam.io.WriteToText(str(target))


def endless(pipeline: beam.Pipeline) -> None:
    """Runs for half a minute or more: long enough to be cancelled."""
    pipeline | beam.Create(list(range(300))) | "Sleep" >> beam.ParDo(Sleep())


def serialized(build: Callable[[beam.Pipeline], None]) -> bytes:
    pipeline = beam.Pipeline()
    build(pipeline)
    return bytes(pipeline.to_runner_api().SerializeToString())


def output_lines(prefix: Path) -> list[str]:
    return sorted(line for shard in prefix.parent.glob(prefix.name + "-*") for line in shard.read_text().splitlines())


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_until_ended(engine: BeamEngine, handle: Handle, timeout: float = 90) -> RunStatus:
    deadline = time.monotonic() + timeout
    while (status := engine.poll(handle)).state not in {EngineState.SUCCEEDED, EngineState.FAILED}:
        assert status.state is not EngineState.CANCELLED
        assert time.monotonic() < deadline, f"timed out waiting for the run to end, {status}"
        time.sleep(0.05)
    return status


def all_messages(engine: BeamEngine, handle: Handle) -> list[WorkerMessage]:
    found, cursor = engine.messages(handle, 0)
    more, again = engine.messages(handle, cursor)
    assert (more, again) == ([], cursor)  # nothing new: the cursor stays put
    return found


def worker_pids(workdir: Path) -> list[int]:
    """The run's tidegate processes (the supervisor, then the pipeline process), found in /proc.

    Both work in the run's folder; a warm-started pair was started before the run, so
    its command line does not name it.
    """
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                cwd = Path(os.readlink(proc / "cwd"))
            except OSError:
                continue
            if b"tidegate.engines.beam_worker" in cmdline and cwd == workdir.resolve():
                found.append((b"--run" in cmdline or b"--warm-run" in cmdline, int(proc.name)))
    return [pid for _, pid in sorted(found)]


def group_of(workdir: Path) -> int:
    wait_for(lambda: bool(worker_pids(workdir)), 30, f"a worker process for {workdir}")
    return os.getpgid(worker_pids(workdir)[0])


def recorded_pid(workdir: Path) -> int:
    """The supervisor's pid as the engine recorded it at launch (the run's process group)."""
    return int(json.loads((workdir / "process.json").read_text())["pid"])


def assert_group_gone(pgid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert members(pgid) == []


def dead(pid: int) -> bool:
    """Gone, or a zombie: a process whose parent died is reaped by init, which need not be quick (or do it at all)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def waiting_on_stdin(pid: int) -> bool:
    """Whether the process is blocked reading its stdin (fd 0), from /proc."""
    try:
        number, fd = Path(f"/proc/{pid}/syscall").read_text().split()[:2]
        return number in ("0", "63") and fd == "0x0"  # read(0, …) on x86-64 or arm64
    except (OSError, ValueError):
        try:
            return "pipe" in Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            return False


def idle_pair(engine: BeamEngine, timeout: float = 90) -> tuple[int, int]:
    """The engine's idle supervisor and its pipeline process, once that has imported Beam and waits for a run."""
    warm = engine._warm
    assert warm is not None

    def pair() -> tuple[int, int] | None:
        supervisor = warm.idle_pid
        if supervisor is None:
            return None
        others = [pid for pid in members(supervisor) if pid != supervisor]
        return (supervisor, others[0]) if len(others) == 1 and waiting_on_stdin(others[0]) else None

    wait_for(lambda: pair() is not None, timeout, "the idle pipeline process to import Beam")
    found = pair()
    assert found is not None
    return found


LAUNCHED: list[tuple[BeamEngine, Handle]] = []


def release_all(engine: BeamEngine) -> None:
    for owner, handle in list(LAUNCHED):
        if owner is engine:
            engine.release(handle)
            LAUNCHED.remove((owner, handle))


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


@pytest.fixture
def cold_engine() -> Iterator[BeamEngine]:
    """An engine that starts every run cold."""
    engine = BeamEngine(warm=False)
    yield engine
    release_all(engine)


def launch(engine: BeamEngine, workdir: Path, pipeline: bytes, num_workers: int = 1) -> Handle:
    request = LaunchRequest(
        job_id="job-1", job_name="test", streaming=False, workdir=workdir, pipeline=pipeline, num_workers=num_workers
    )
    handle = engine.launch(request)
    LAUNCHED.append((engine, handle))
    # launch does not wait for the pipeline (benchmarks/bench_beam.py measures how soon it runs)
    assert engine.poll(handle).state in {EngineState.STARTING, EngineState.RUNNING}
    return handle


@dataclass
class WordCountRun:
    status: RunStatus
    output: list[str]
    expected: list[str]
    metrics: list[MetricValue]
    messages: list[WorkerMessage]
    stages: list[StageDetails]


@pytest.fixture(scope="module")
def direct_word_count(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The input file, and the word count that Beam's own DirectRunner makes of it in this process."""
    folder = tmp_path_factory.mktemp("direct")
    source = folder / "input.txt"
    source.write_text("\n".join(LINES) + "\n")
    with beam.Pipeline(runner="DirectRunner") as pipeline:
        word_count(pipeline, source, folder / "out")
    return source, output_lines(folder / "out")


@pytest.fixture(scope="module", params=[(1, True), (2, True), (1, False)], ids=["1-worker", "2-workers", "cold"])
def word_count_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, direct_word_count: tuple[Path, list[str]]
) -> Iterator[WordCountRun]:
    source, expected = direct_word_count
    num_workers, warm = request.param
    folder = tmp_path_factory.mktemp("engine")
    engine = BeamEngine(warm=warm)
    supervisor = idle_pair(engine)[0] if warm else None
    handle = launch(engine, folder / "run", serialized(lambda p: word_count(p, source, folder / "out")), num_workers)
    if warm:
        assert recorded_pid(folder / "run") == supervisor  # the run went to the processes started ahead
        engine.close()  # and goes on: it is the engine's idle processes that stop
    try:
        status = wait_until_ended(engine, handle)
        yield WordCountRun(
            status=status,
            output=output_lines(folder / "out"),
            expected=expected,
            metrics=engine.metrics(handle),
            messages=all_messages(engine, handle),
            stages=engine.stages(handle),
        )
    finally:
        engine.release(handle)
    assert not (folder / "run").exists()


def test_word_count_succeeds_with_the_direct_runners_output(word_count_run: WordCountRun) -> None:
    assert word_count_run.status == RunStatus(EngineState.SUCCEEDED)
    assert word_count_run.output == word_count_run.expected
    assert "the: 3" in word_count_run.output


def test_metrics_count_elements_and_user_counters(word_count_run: WordCountRun) -> None:
    counts = {(m.step, m.pcollection): m.value for m in word_count_run.metrics if m.name == "ElementCount"}
    assert counts[("Split", "Split.None")] == WORDS
    assert all(m.origin == "dataflow/v1b3" for m in word_count_run.metrics if m.name == "ElementCount")
    user = [m for m in word_count_run.metrics if m.origin == "user"]
    assert MetricValue(name="words", step="Split", value=WORDS, origin="user", namespace="wordcount") in user


def test_messages_carry_the_pipelines_log_lines(word_count_run: WordCountRun) -> None:
    texts = {m.text for m in word_count_run.messages}
    assert {f"splitting line: {line}" for line in LINES} <= texts
    splitting = [m for m in word_count_run.messages if m.text.startswith("splitting line:")]
    assert {m.importance for m in splitting} == {MessageImportance.JOB_MESSAGE_DETAILED}
    basic = [m.text for m in word_count_run.messages if m.importance == MessageImportance.JOB_MESSAGE_BASIC]
    assert any("finished" in text for text in basic)
    assert all(m.time.tzinfo is not None for m in word_count_run.messages)


def test_stages_cover_the_pipelines_steps(word_count_run: WordCountRun) -> None:
    assert word_count_run.stages
    assert {s.state for s in word_count_run.stages} == {"EXECUTION_STATE_SUCCEEDED"}
    steps = {step for stage in word_count_run.stages for step in stage.steps}
    assert "Split" in steps
    ran = [(s.start_time, s.end_time) for s in word_count_run.stages if s.start_time is not None]
    assert ran
    assert all(end is not None and end >= start for start, end in ran)


def test_a_failing_dofn_fails_the_run_with_its_traceback(engine: BeamEngine, tmp_path: Path) -> None:
    handle = launch(engine, tmp_path / "run", serialized(failing))
    status = wait_until_ended(engine, handle)
    assert status.state is EngineState.FAILED
    assert "ValueError: boom on element 3" in status.error
    assert "Traceback (most recent call last)" in status.error
    assert "fail_on_three" in status.error
    errors = [m for m in all_messages(engine, handle) if m.importance == MessageImportance.JOB_MESSAGE_ERROR]
    assert any("boom on element 3" in m.text for m in errors)
    assert "EXECUTION_STATE_FAILED" in {s.state for s in engine.stages(handle)}


def test_cancel_kills_the_whole_process_group_within_a_second(engine: BeamEngine, tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    handle = launch(engine, workdir, serialized(endless), num_workers=2)
    wait_for(lambda: any(m.text == "sleeper started" for m in engine.messages(handle, 0)[0]), 60, "the DoFn to run")
    assert engine.poll(handle).state is EngineState.RUNNING
    fresh = BeamEngine(warm=False)  # an engine that did not launch it, after a restart
    assert fresh.poll(handle).state is EngineState.RUNNING
    assert fresh.stages(handle)
    pgid = group_of(workdir)
    assert len(members(pgid)) == 4  # the supervisor, the pipeline process and its two SDK worker processes

    engine.cancel(handle)  # returns once the group is gone (bench_beam.py measures how soon)
    assert_group_gone(pgid)
    assert engine.poll(handle) == RunStatus(EngineState.CANCELLED)
    engine.cancel(handle)  # idempotent
    assert engine.poll(handle) == RunStatus(EngineState.CANCELLED)
    assert "EXECUTION_STATE_RUNNING" not in {s.state for s in engine.stages(handle)}


@pytest.mark.parametrize("start", ["warm", "still importing", "cold"])
def test_cancel_right_after_launch_leaves_nothing(tmp_path: Path, start: str) -> None:
    """Whatever the idle processes were doing when the run reached them, the cancel takes them all."""
    engine = BeamEngine(warm=start != "cold")
    if start == "warm":
        idle_pair(engine)
    elif start == "still importing":
        wait_for(lambda: engine._warm is not None and engine._warm.idle_pid is not None, 10, "an idle supervisor")
    handle = launch(engine, tmp_path / "run", serialized(endless), num_workers=2)
    assert engine.poll(handle).state in {EngineState.STARTING, EngineState.RUNNING}  # a warm start is quick
    pgid = recorded_pid(tmp_path / "run")
    assert os.getpgid(pgid) == pgid  # the supervisor leads a group of its own
    engine.cancel(handle)
    assert_group_gone(pgid)
    assert engine.poll(handle) == RunStatus(EngineState.CANCELLED)
    engine.release(handle)
    engine.close()


@pytest.mark.parametrize("victim", ["pipeline process", "SDK worker process"])
def test_a_process_killed_from_outside_fails_the_run_and_release_cleans_up(
    engine: BeamEngine, tmp_path: Path, victim: str
) -> None:
    workdir = tmp_path / "run"
    handle = launch(engine, workdir, serialized(endless), num_workers=2)
    wait_for(lambda: any(m.text == "sleeper started" for m in engine.messages(handle, 0)[0]), 60, "the DoFn to run")
    pgid = group_of(workdir)
    supervisor, pipeline = worker_pids(workdir)
    assert supervisor == pgid
    sdk_workers = [pid for pid in members(pgid) if pid not in (supervisor, pipeline)]
    os.kill(pipeline if victim == "pipeline process" else sdk_workers[0], signal.SIGKILL)  # as the OOM killer would

    status = wait_until_ended(engine, handle, timeout=20)
    assert status.state is EngineState.FAILED
    if victim == "pipeline process":
        assert "killed by SIGKILL" in status.error
    else:
        assert "SDK worker" in status.error
    # The supervisor takes the others down, then exits; the engine reaps it as it polls.
    wait_for(lambda: engine.poll(handle).state is EngineState.FAILED and members(pgid) == [], 2, "the group to end")
    assert_group_gone(pgid)
    engine.release(handle)
    assert not workdir.exists()
    engine.release(handle)  # idempotent


def test_a_pipeline_submitted_by_the_dataflow_runner_runs_here(engine: BeamEngine, tmp_path: Path) -> None:
    """Docker environments and Dataflow's options (ints among them) run on local SDK workers."""
    pipeline = beam.Pipeline()
    upper_case(pipeline, tmp_path / "out")
    image = environments.DockerEnvironment.from_container_image("apache/beam_python3.11_sdk:2.77.0")
    proto = pipeline.to_runner_api(default_environment=image)
    assert {env.urn for env in proto.components.environments.values()} == {"beam:env:docker:v1"}
    options = {
        "runner": "DataflowRunner",
        "project": "local-project",
        "job_name": "upper",
        "num_workers": 2,
        "max_num_workers": 3,
        "save_main_session": True,
        "experiments": ["use_runner_v2"],
    }
    request = LaunchRequest(
        job_id="job-2",
        job_name="upper",
        streaming=False,
        workdir=tmp_path / "run",
        pipeline=proto.SerializeToString(),
        options=options,
        num_workers=2,
    )
    handle = engine.launch(request)
    LAUNCHED.append((engine, handle))
    assert wait_until_ended(engine, handle, timeout=60) == RunStatus(EngineState.SUCCEEDED)
    assert output_lines(tmp_path / "out") == ["X", "Y"]


def test_batch_runs_cannot_be_drained_snapshotted_or_streamed(cold_engine: BeamEngine, tmp_path: Path) -> None:
    engine = cold_engine
    handle = Handle(engine.name, str(tmp_path))
    with pytest.raises(FailedPrecondition):
        engine.drain(handle)
    with pytest.raises(Unimplemented):
        engine.snapshot(handle, tmp_path / "snapshot")
    with pytest.raises(Unimplemented):
        engine.launch(LaunchRequest(job_id="j", job_name="s", streaming=True, workdir=tmp_path, pipeline=b"x"))


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_supervisor_keeps_its_runs_lease_and_stops_the_run_once_it_is_lost(
    engine: BeamEngine, tmp_path: Path, make_store: Callable[[str], Store], dialect: str
) -> None:
    """The lease outlives any scheduler; once the run is no longer the job's, nothing of it is left running."""
    store = make_store(dialect)
    job, _ = store.create_job(
        NewJob(project_id="proj", location="us-central1", name="fenced", type=JobType.JOB_TYPE_BATCH, spec=b""),
        "job-1",
        datetime.now(UTC),
    )
    started = datetime.now(UTC)
    assert store.claim_run(job.id, "beam", "a-server", started + timedelta(seconds=2))
    store.set_run_token(job.id, "token-1")
    request = LaunchRequest(
        job_id=job.id,
        job_name="fenced",
        streaming=False,
        workdir=tmp_path / "run",
        pipeline=serialized(endless),
        lease=RunLeaseSpec(store.url, "token-1", 1.5),
    )
    handle = engine.launch(request)
    LAUNCHED.append((engine, handle))
    wait_for(lambda: any(m.text == "sleeper started" for m in engine.messages(handle, 0)[0]), 60, "the DoFn to run")
    time.sleep(2.5)  # past the lease the run was claimed with: no scheduler renews it, its supervisor does
    lease = store.get_run(job.id)
    assert lease is not None and lease.lease_until > datetime.now(UTC)
    assert engine.poll(handle).state is EngineState.RUNNING
    pgid = group_of(tmp_path / "run")

    store.update_run(job.id, "a-server", release=True)  # the job ended elsewhere: the run is no longer the job's
    status = wait_until_ended(engine, handle, timeout=10)
    assert status.state is EngineState.FAILED
    assert "lease was taken" in status.error
    # The engine reaps its supervisor when it polls the run (a zombie still counts as a member of
    # the group): the run can read FAILED a moment before its supervisor exits, so poll on.
    try:
        wait_for(lambda: engine.poll(handle).state is EngineState.FAILED and members(pgid) == [], 20, "the run to end")
    except AssertionError:
        raise AssertionError(f"still in the run's group: {described(members(pgid))}") from None

"""A fault test: a workload of Beam batch jobs, Flink streaming jobs and racing requests, under random kill -9.

For about ``FAULT_SECONDS`` (90 by default; ``TIDEGATE_FAULT_SECONDS`` sets it), Beam
batch jobs are submitted (a few at a time, each writing 40 numbers slowly) while a
thread sends cancels and DONEs at random jobs, and every few seconds something is
killed with SIGKILL: the server (started again at once on its data directory), a Beam
run's supervisor (its whole process group), or the local Flink cluster's TaskManager (at
most once in ``TASKMANAGER_KILLS_APART`` seconds: more often, Flink's restart strategy ends the
streaming jobs FAILED, as it should).
Two Flink streaming jobs (keyed running totals) run throughout and are drained at the
end. Then:

- every job is where its requests and its pipeline put it: an accepted cancel in
  CANCELLED, an accepted DONE in DONE, a Beam job left alone in DONE with its whole
  output, FAILED only a job whose processes were killed, the Flink jobs DRAINED;
- the Flink per-key totals continue through every restart without a reset;
- every history is made of legal edges;
- no process of the test's server, runs or cluster is left once all is stopped.

It prints how many kills, jobs and requests it survived. The seed is printed too
(``TIDEGATE_FAULT_SEED`` replays a run's choices).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

pytest.importorskip("apache_beam")

import apache_beam as beam
from apache_beam.internal.cloudpickle import cloudpickle

from tests.flink_output import read_windows, wait_windows
from tests.processes import mentioning
from tidegate import processes
from tidegate.lifecycle import JobState, is_legal
from tidegate.store import Store

from .conftest import LOCATION, ServerProcess, flink_stop
from .test_flink_jobs import JOBS, _setup_flink

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker cannot import this module

PROJECT = "faults"
COUNT = 40
FAULT_SECONDS = float(os.environ.get("TIDEGATE_FAULT_SECONDS", "90"))
SERVER_FLAGS = ("beam,flink", "--flink-checkpoint-interval", "2", "--max-jobs", "8")
TASKMANAGER_KILLS_APART = 30.0
"""The local cluster lets a job fail 3 times a minute before it ends FAILED, and a TaskManager killed
as its jobs restart costs them two or three failures: the TaskManager's kills come this far apart."""
TERMINAL = {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_DRAINED", "JOB_STATE_UPDATED"}


def _slowly(value: int) -> int:
    time.sleep(0.1)
    return value


def staged_pipeline(folder: Path, target: Path) -> Path:
    """A runner-API pipeline writing 0 … COUNT-1 into ``target`` (about 4 s), staged as DataflowRunner does."""
    pipeline = beam.Pipeline()
    _ = (
        pipeline
        | beam.Create(list(range(COUNT)))
        | "Slowly" >> beam.Map(_slowly)
        | beam.Map(str)
        | beam.io.WriteToText(str(target), shard_name_template="")
    )
    staged = folder / f"{target.stem}.pb"
    staged.write_bytes(pipeline.to_runner_api().SerializeToString())
    return staged


@dataclass
class Workload:
    """What the test did, and what each job must end as."""

    server: ServerProcess
    beam_jobs: dict[str, Path] = field(default_factory=dict)
    """Beam job id → its output file."""
    flink_jobs: dict[str, Path] = field(default_factory=dict)
    accepted: dict[str, str] = field(default_factory=dict)
    """Job id → the first request answered 200 (the one it must end by)."""
    killed_runs: set[str] = field(default_factory=set)
    kills: dict[str, int] = field(default_factory=lambda: {"server": 0, "supervisor": 0, "taskmanager": 0})
    taskmanager_killed: float = -TASKMANAGER_KILLS_APART
    """When the TaskManager was last killed (monotonic)."""
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "") -> str:
        return f"{self.server.base}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs{path}"


def create(work: Workload, body: dict[str, object]) -> str:
    for _ in range(100):  # the server may be down for a moment: a create is retried with its request id
        try:
            response = httpx.post(work.url(), json=body, timeout=30)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        assert response.status_code == 200, response.text
        return str(response.json()["id"])
    pytest.fail("the server did not come back")


def state_of(work: Workload, job_id: str) -> str:
    for _ in range(300):
        try:
            return str(httpx.get(work.url(f"/{job_id}"), timeout=30).json()["currentState"])
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail("the server did not come back")


def racing_requests(work: Workload, rng: random.Random, stop: threading.Event) -> None:
    """A cancel and a DONE sent at once at about half the Beam jobs, at a random moment of their lives.

    At most one of the two is answered 200 (the lifecycle serialises them); the job must end by it.
    """
    raced: set[str] = set()
    while not stop.wait(rng.uniform(0.2, 1.5)):
        with work.lock:
            candidates = [j for j in work.beam_jobs if j not in raced]
        if not candidates:
            continue
        job_id = rng.choice(candidates)
        raced.add(job_id)
        if rng.random() < 0.5:
            continue  # left alone: it must run to DONE (or FAIL if its processes are killed)
        answers: dict[str, int] = {}

        def send(wanted: str, job_id: str = job_id, answers: dict[str, int] = answers) -> None:
            try:
                response = httpx.put(work.url(f"/{job_id}"), json={"requestedState": wanted}, timeout=30)
            except httpx.TransportError:
                return  # the server is down: not answered, so not promised
            assert response.status_code in (200, 400), response.text  # 400: FAILED_PRECONDITION, nothing changed
            answers[wanted] = response.status_code

        senders = [threading.Thread(target=send, args=(w,)) for w in ("JOB_STATE_CANCELLED", "JOB_STATE_DONE")]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        won = [wanted for wanted, code in answers.items() if code == 200]
        assert len(won) <= 1, f"job {job_id}: both {won} were answered 200"
        with work.lock:
            work.requests += len(answers)
            if won:
                work.accepted[job_id] = won[0]


def supervisor(data_dir: Path, job_id: str) -> int | None:
    try:
        return int(json.loads((data_dir / "runs" / job_id / "process.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def taskmanager(data_dir: Path) -> int | None:
    try:
        state = json.loads((data_dir / "flink" / "flink-cluster" / "cluster.json").read_text())
    except (OSError, ValueError):
        return None
    pid, started = int(state["taskmanager"]["pid"]), str(state["taskmanager"]["started"])
    return pid if processes.is_alive(pid, started) else None


def kill_something(work: Workload, rng: random.Random, start: Callable[[], ServerProcess]) -> None:
    what = rng.choice(["server", "supervisor", "supervisor", "taskmanager"])
    data_dir = work.server.data_dir
    if what == "server":
        work.server.kill()
        time.sleep(rng.uniform(0, 2))
        work.server = start()
    elif what == "supervisor":
        with work.lock:
            running = [j for j in work.beam_jobs if j not in work.killed_runs]
        pids = [(j, pid) for j in running if (pid := supervisor(data_dir, j)) and processes.started(pid)]
        if not pids:
            return
        job_id, pid = rng.choice(pids)
        with work.lock:
            work.killed_runs.add(job_id)
        os.killpg(pid, signal.SIGKILL)
    else:
        pid = taskmanager(data_dir)
        if pid is None or time.monotonic() - work.taskmanager_killed < TASKMANAGER_KILLS_APART:
            return
        os.killpg(pid, signal.SIGKILL)
        work.taskmanager_killed = time.monotonic()
    work.kills[what] += 1


@pytest.fixture
def seed() -> Iterator[int]:
    value = int(os.environ.get("TIDEGATE_FAULT_SEED", str(random.SystemRandom().randrange(1 << 30))))
    print(f"\nfault test seed: {value} (TIDEGATE_FAULT_SEED={value} replays it)")
    yield value


def test_jobs_end_where_their_requests_and_pipelines_put_them_under_random_kills(
    server_processes: Callable[..., ServerProcess], tmp_path: Path, seed: int
) -> None:
    _setup_flink()
    rng = random.Random(seed)
    data_dir = tmp_path / "server"

    def start() -> ServerProcess:
        return server_processes(data_dir, "", *SERVER_FLAGS)

    work = Workload(start())
    for n in range(2):
        out = tmp_path / f"flink-{n}"
        program = {"engine": "flink", "program": str(JOBS / "windowed_counts.py"), "args": ["--out", str(out)]}
        options = {"sdkPipelineOptions": {"options": {"tidegate": program}}}
        job_id = create(work, {"name": f"stream-{n}", "type": "JOB_TYPE_STREAMING", "environment": options})
        work.flink_jobs[job_id] = out
    for out in work.flink_jobs.values():
        wait_windows(out, 3, timeout=180)

    stop = threading.Event()
    requester = threading.Thread(target=racing_requests, args=(work, random.Random(seed + 1), stop), daemon=True)
    requester.start()
    deadline, next_kill, submitted = time.monotonic() + FAULT_SECONDS, time.monotonic() + 5, 0
    ended: set[str] = set()
    try:
        while time.monotonic() < deadline:
            with work.lock:
                known = [j for j in work.beam_jobs if j not in ended]
            ended.update(j for j in known if state_of(work, j) in TERMINAL)
            if len(known) - len(ended & set(known)) < 3:
                target = tmp_path / f"beam-{submitted}.txt"
                options = {"pipelineUrl": str(staged_pipeline(tmp_path, target))}
                body = {
                    "name": f"batch-{submitted}",
                    "type": "JOB_TYPE_BATCH",
                    "clientRequestId": f"batch-{submitted}",
                    "environment": {"sdkPipelineOptions": {"options": options}},
                }
                job_id = create(work, body)
                with work.lock:
                    work.beam_jobs[job_id] = target
                submitted += 1
            if time.monotonic() >= next_kill:
                kill_something(work, rng, start)
                next_kill = time.monotonic() + rng.uniform(3, 8)
            time.sleep(0.2)
    finally:
        stop.set()
        requester.join(30)

    # Every Beam job ends; then the streaming jobs are drained.
    for job_id in work.beam_jobs:
        end = time.monotonic() + 120
        while state_of(work, job_id) not in TERMINAL:
            assert time.monotonic() < end, f"Beam job {job_id} did not end"
            time.sleep(0.3)
    written = {job_id: len(read_windows(out)) for job_id, out in work.flink_jobs.items()}
    for job_id, out in work.flink_jobs.items():
        wait_windows(out, written[job_id] + 3, timeout=180)  # running again after the last kill
        response = httpx.put(work.url(f"/{job_id}"), json={"requestedState": "JOB_STATE_DRAINED"}, timeout=60)
        assert response.status_code == 200, response.text
    for job_id in work.flink_jobs:
        end = time.monotonic() + 120
        while (state := state_of(work, job_id)) not in TERMINAL:
            assert time.monotonic() < end, f"Flink job {job_id} did not drain"
            time.sleep(0.3)
        assert state == "JOB_STATE_DRAINED", state

    store = Store(f"sqlite:///{data_dir / 'tidegate.db'}")
    try:
        for job_id in [*work.beam_jobs, *work.flink_jobs]:
            changes = store.history(job_id)
            for change in changes[1:]:
                assert change.source is not None and is_legal(change.source, change.target, change.actor), change
        for job_id, target in work.beam_jobs.items():
            state = store.get_job(job_id).current_state
            wanted = work.accepted.get(job_id)
            if wanted is not None:
                assert state.name == wanted, (job_id, state, wanted)
            elif state is JobState.JOB_STATE_FAILED:
                assert job_id in work.killed_runs, f"Beam job {job_id} FAILED, but nothing of it was killed"
            else:
                assert state is JobState.JOB_STATE_DONE, (job_id, state)
                assert sorted(int(x) for x in target.read_text().split()) == list(range(COUNT)), job_id
    finally:
        store.close()
    for out in work.flink_jobs.values():
        totals: dict[int, int] = {}
        for key, _end, count, total, _version in read_windows(out):
            if key in totals:
                assert total > count, f"key {key}'s running total was reset ({total} after {totals[key]})"
            totals[key] = total

    work.server.terminate()
    stopped = flink_stop(data_dir)
    assert stopped.returncode == 0, stopped.stderr
    end = time.monotonic() + 30
    while mentioning(data_dir) and time.monotonic() < end:
        time.sleep(0.5)
    assert mentioning(data_dir) == []
    kills = sum(work.kills.values())
    print(
        f"fault test survived {kills} kills ({work.kills['server']} of the server, {work.kills['supervisor']} of Beam"
        f" supervisors, {work.kills['taskmanager']} of the TaskManager), {len(work.beam_jobs)} Beam and"
        f" {len(work.flink_jobs)} Flink jobs, {work.requests} racing requests ({len(work.accepted)} accepted)"
    )

"""Recovery times: runs taken back by a restarted server, adopted by another server, streaming jobs resumed.

    .venv/bin/python benchmarks/bench_recovery.py [--reps 3] [--flink-reps 2] [--runs 3] [--seconds 30]
        [--poll 0.02] [--checkpoint-interval 2] [--database-url URL] [--only restart,adopt,resume]

Three scenarios, each with real ``tidegate server`` processes (free ports, ``--grpc-port 0
--job-port 0``) in temporary data directories:

- restart: ``--runs`` Beam batch runs RUNNING (``tests/acceptance/beam_pipelines/slow_count.py``
  submitted with Beam's own DataflowRunner from the Beam client environment, each running
  ``--seconds``), ``kill -9`` of the server, the same command started again on the same
  data directory (SQLite): the time from the kill until every run carries the restarted
  server's "Taken back by server" message (its time stamp, read from the store: the
  ``job_runs`` rows keep the same worker id across a restart, so only the message marks the
  take-back), and until the restarted server's ``/healthz`` answers. Baseline, in the same
  run: the same command started on the same data directory with no run to take back, until
  its ``/healthz`` answers (what a restart cannot beat); ratio taken back / baseline. The
  baseline comes before the runs in odd repetitions and after them in even ones.
- adopt: two servers A and B on one PostgreSQL database (a fresh schema per repetition,
  dropped after), the runs on A, ``kill -9`` of A: the time from the kill until every run
  carries B's "Adopted by server" message. On one machine B sees at once that A's process
  is gone; it looks for servers that are gone at most once a second, at its scheduler's
  ticks (printed with the figures): that period, not A's 30 s lease, bounds the delay.
- resume: ``tests/integration/flink_jobs/windowed_counts.py`` on the server's local Flink
  cluster (``--flink-checkpoint-interval``), one retained checkpoint waited for, then
  ``kill -9`` of the server and of the cluster's processes (each a session leader, as a
  reboot would lose them), and the server started again: the time from its start until
  Flink runs the job again (every task RUNNING, on the new cluster's uncached
  ``/jobs/overview``) and until the job writes again (new lines in ``seen.txt``, records
  entering the job, and in ``windows.txt``, fired windows; tailed every 5 ms). Baseline,
  in the same run: the same job's own first start, a fresh submission on a fresh server
  and cluster, from the server's start to the same events; ratio resume / fresh. Each
  repetition measures its baseline and then its resume, back to back; its lines also say
  when, by the job messages' time stamps, the engine noticed the lost cluster and when
  Flink accepted the job (the rest is the cluster's start and the ``flink run`` client).

Prints a line per repetition, then per figure its median and worst and the ratios of
medians (and of worsts) against the baselines. There is no target, so no verdict.
Everything started is stopped, even when a step fails: Beam runs are cancelled (and their
process groups killed if still there), servers stopped, local Flink clusters stopped.

The defaults (3 repetitions of restart and adopt, 2 of resume, 3 runs of 30 s) take about
3.5 minutes on a 2-core machine: a repetition of restart and adopt together about 20 s,
one of resume about 75 s. How many make the medians stable (an estimate from where the
spread comes from, not from repeated runs): restart, 5 repetitions (its spread is the
server's start, tenths of a second); adopt, whose figure is where the kill falls in B's
look-up period (roughly uniform over 0 to 1.25 s), settles slowly: 5 repetitions put its
median within about 0.25 s, 20 within 0.1 s; resume, 3 or more (a Flink cluster's start
and a PyFlink submission vary by seconds on a shared machine). ``--reps 5 --flink-reps 3``
takes about 6 minutes.

Needs the Beam client environment (``scripts/setup-beam-client``), the Flink environment
(``scripts/setup-flink``) and a PostgreSQL server (``--database-url``, default
``$TIDEGATE_TEST_POSTGRES_URL`` or what ``scripts/ensure-postgres`` finds).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_flink import Tail, until
from bench_rest import free_port

from tidegate import processes
from tidegate.engines.flink_cluster import flink_python
from tidegate.engines.flink_local import LocalFlinkCluster
from tidegate.model import MessageImportance
from tidegate.scheduler.loop import SchedulerSettings
from tidegate.store import Store

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / ".beam-client-venv" / "bin" / "python"
SLOW_COUNT = ROOT / "tests" / "acceptance" / "beam_pipelines" / "slow_count.py"
PROGRAM = ROOT / "tests" / "integration" / "flink_jobs" / "windowed_counts.py"
PROJECT, LOCATION = "bench", "us-central1"
JOBS = f"/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs"
TERMINAL = {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_DRAINED", "JOB_STATE_UPDATED"}
CLUSTER = Path("flink") / "flink-cluster"
ROLES = ("jobmanager", "taskmanager")
TAKEN_BACK, ADOPTED, RESUMING = "Taken back by server", "Adopted by server", "resuming it from its latest state"
SCENARIOS = ("restart", "adopt", "resume")

RESTART_TAKEN = "restart: kill -> every run taken back"
RESTART_HEALTH = "restart: kill -> restarted /healthz"
RESTART_BASE = "baseline: server start -> /healthz"
ADOPT = "adopt: kill of A -> every run adopted by B"
RESUME_RUNNING = "resume: server start -> Flink RUNNING"
RESUME_RECORD = "resume: server start -> first new record"
RESUME_WINDOW = "resume: server start -> first new window"
FRESH_RUNNING = "fresh: server start -> Flink RUNNING"
FRESH_RECORD = "fresh: server start -> first record"
FRESH_WINDOW = "fresh: server start -> first window"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without TIDEGATE_* settings (the command line says it all), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


class Server:
    """One ``tidegate server`` command on a data directory: started, killed and started again as it is."""

    def __init__(self, data_dir: Path, *flags: str, database_url: str = "", env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.command = [sys.executable, "-m", "tidegate.cli", "server", "--port", str(self.port)]
        self.command += ["--grpc-port", "0", "--job-port", "0", "--max-jobs", "0", "--data-dir", str(data_dir), *flags]
        # what the runs stage (a temp folder beside the data directory) and the Flink program
        self.command += ["--staging-root", str(data_dir.parent), "--staging-root", str(PROGRAM.parent)]
        self.command += ["--database-url", database_url] if database_url else []
        self.env = env or clean_env()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / f"server-{self.starts}.log"

    def spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers; raises when the process has ended."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"tidegate server exited with {self.proc.returncode}: {self.tail()}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def start(self, poll: float) -> float:
        """Start the command and wait for ``/healthz``; the seconds from the start to its answer."""
        started = time.perf_counter()
        self.spawn()
        until(self.healthy, poll, 60, "the server's /healthz")
        return time.perf_counter() - started

    def kill(self) -> float:
        """SIGKILL: nothing of the server's shutdown runs; the moment of the signal (``time.time()``)."""
        assert self.proc is not None
        moment = time.time()
        self.proc.kill()
        self.proc.wait()
        return moment

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 30 s), if it runs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, size: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def state(self, job: str) -> str:
        response = httpx.get(f"{self.base}{JOBS}/{job}", timeout=30)
        response.raise_for_status()
        return str(response.json()["currentState"])

    def messages(self, job: str) -> list[str]:
        response = httpx.get(f"{self.base}{JOBS}/{job}/messages", params={"pageSize": 1000}, timeout=30)
        return [m.get("messageText", "") for m in response.json().get("jobMessages", [])]


# -- Beam runs ------------------------------------------------------------------------------


def submit_runs(server: Server, work: Path, count: int, seconds: float) -> list[str]:
    """Submit ``count`` slow_count.py runs with Beam's DataflowRunner, all at once; their job ids."""
    procs = []
    try:
        for n in range(count):
            staging = work / f"staging-{n}"
            staging.mkdir(parents=True, exist_ok=True)
            command = [str(CLIENT), str(SLOW_COUNT), f"--output={work / f'out-{n}.txt'}", "--count=40"]
            command += [f"--seconds={seconds}", "--runner=DataflowRunner", f"--dataflow_endpoint={server.base}"]
            command += ["--no_auth", f"--project={PROJECT}", f"--region={LOCATION}", f"--temp_location={staging}"]
            procs.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), cwd=work)
            )
        jobs = []
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"DataflowRunner's submission failed: {err.decode(errors='replace')[-2000:]}")
            jobs.append(str(json.loads(out.decode().strip().splitlines()[-1])["job_id"]))
        return jobs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def wait_running(server: Server, jobs: list[str], poll: float) -> None:
    def running() -> bool:
        states = [server.state(job) for job in jobs]
        if ended := [(job, s) for job, s in zip(jobs, states, strict=True) if s in TERMINAL]:
            raise RuntimeError(f"run {ended[0][0]} ended {ended[0][1]} before the kill: {server.messages(ended[0][0])}")
        return all(s == "JOB_STATE_RUNNING" for s in states)

    until(running, max(poll, 0.1), 180, "the runs to be RUNNING")


def cancel_runs(server: Server, jobs: list[str]) -> None:
    """Cancel the runs through ``server`` and wait until they ended (cleanup: failures are left to kill_runs)."""
    with suppress(httpx.HTTPError, RuntimeError, TimeoutError):
        for job in jobs:
            body = {"requestedState": "JOB_STATE_CANCELLED"}
            httpx.put(f"{server.base}{JOBS}/{job}", json=body, timeout=30)
        until(lambda: all(server.state(job) in TERMINAL for job in jobs), 0.2, 60, "the runs to end")


def kill_runs(data_dir: Path) -> None:
    """Kill the process group of every Beam run of a data directory that still runs (``runs/*/process.json``)."""
    for record in data_dir.glob("runs/*/process.json"):
        try:
            info = json.loads(record.read_text())
            pid, ticks = int(info.get("pid", 0)), str(info.get("start_ticks", ""))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        if processes.is_alive(pid, ticks):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def message_time(store: Store, job: str, prefix: str, since: datetime) -> float | None:
    """When (``time.time()`` scale) the job got its first message starting with ``prefix`` since ``since``."""
    page = store.list_messages(job, MessageImportance.JOB_MESSAGE_DEBUG, since, None, 1000)
    return next((m.time.timestamp() for m in page.items if m.text.startswith(prefix)), None)


def await_messages(
    store: Store, jobs: list[str], prefix: str, after: float, poll: float, also: Callable[[], bool] | None = None
) -> tuple[list[float], float]:
    """Seconds from ``after`` to each job's ``prefix`` message (by its time stamp), and until ``also`` is true."""
    since = datetime.fromtimestamp(after, UTC)
    found: dict[str, float] = {}
    also_at = 0.0 if also is None else -1.0
    deadline = time.time() + 120
    while len(found) < len(jobs) or also_at < 0:
        if also_at < 0 and also is not None and also():
            also_at = time.time() - after
        for job in jobs:
            if job not in found and (at := message_time(store, job, prefix, since)) is not None:
                found[job] = at - after
        if time.time() > deadline:
            raise TimeoutError(f"{len(found)} of {len(jobs)} runs got a message {prefix!r} within 120 s")
        time.sleep(poll)
    return [found[job] for job in jobs], also_at


def restart_rep(work: Path, rep: int, args: argparse.Namespace, results: dict[str, list[float]]) -> None:
    """Runs on a server, kill -9, the same command again: until every run is taken back. And the baseline."""
    data = work / f"restart-{rep}"
    server = Server(data, "--engines", "beam")
    store: Store | None = None
    jobs: list[str] = []
    baseline, baseline_first = 0.0, rep % 2 == 0
    try:
        server.start(args.poll)  # the data directory's database and worker id exist from here on
        if baseline_first:
            server.stop()
            baseline = server.start(args.poll)  # the same command again; it serves the runs
        jobs = submit_runs(server, data, args.runs, args.seconds)
        wait_running(server, jobs, args.poll)
        store = Store(f"sqlite:///{data / 'tidegate.db'}")
        killed = server.kill()
        server.spawn()
        taken, health = await_messages(store, jobs, TAKEN_BACK, killed, args.poll, also=server.healthy)
        cancel_runs(server, jobs)
        if not baseline_first:
            server.stop()
            baseline = server.start(args.poll)
        results[RESTART_TAKEN].append(max(taken))
        results[RESTART_HEALTH].append(health)
        results[RESTART_BASE].append(baseline)
        print(
            f"  rep {rep + 1} restart: {len(jobs)} runs taken back {min(taken):5.2f} to {max(taken):5.2f} s after "
            f"the kill, its /healthz {health:5.2f} s; baseline start to /healthz {baseline:5.2f} s "
            f"({'before' if baseline_first else 'after'} the runs)",
            flush=True,
        )
    finally:
        if store is not None:
            store.close()
        if server.proc is not None and server.proc.poll() is None:
            cancel_runs(server, jobs)
        server.stop()
        kill_runs(data)


def adopt_rep(work: Path, rep: int, args: argparse.Namespace, results: dict[str, list[float]]) -> None:
    """Runs on server A, a server B on the same database, kill -9 of A: until B adopted every run."""
    import psycopg

    schema = f"bench_recovery_{secrets.token_hex(6)}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{args.database_url}{'&' if '?' in args.database_url else '?'}options=-csearch_path%3D{schema}"
    first = Server(work / f"adopt-{rep}-a", "--engines", "beam", database_url=url)
    second = Server(work / f"adopt-{rep}-b", "--engines", "beam", database_url=url)
    store = Store(url)
    jobs: list[str] = []
    try:
        first.start(args.poll)
        second.start(args.poll)
        jobs = submit_runs(first, first.data_dir, args.runs, args.seconds)
        wait_running(first, jobs, args.poll)
        # B schedules jobs too: only the runs A holds are A's to lose.
        worker_a = (first.data_dir / "worker-id").read_text().strip()
        held = [job for job in jobs if (run := store.get_run(job)) is not None and run.worker == worker_a]
        if not held:
            print(f"  rep {rep + 1} adopt:   B runs all {len(jobs)} jobs itself: nothing to adopt", flush=True)
            return
        killed = first.kill()
        adopted, _ = await_messages(store, held, ADOPTED, killed, args.poll)
        results[ADOPT].append(max(adopted))
        others = "" if len(held) == len(jobs) else f" (B ran {len(jobs) - len(held)} itself)"
        print(
            f"  rep {rep + 1} adopt:   {len(held)} runs{others} adopted by B"
            f" {min(adopted):5.2f} to {max(adopted):5.2f} s after A's kill",
            flush=True,
        )
    finally:
        store.close()
        if second.proc is not None and second.proc.poll() is None:
            cancel_runs(second, jobs)
        second.stop()
        first.stop()
        kill_runs(first.data_dir)
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# -- Flink ------------------------------------------------------------------------------------


def cluster_state(data: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((data / CLUSTER / "cluster.json").read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def flink_running(data: Path, not_cluster: str) -> bool:
    """Whether a local cluster other than ``not_cluster`` runs a job with every task RUNNING."""
    state = cluster_state(data)
    if state is None or state.get("cluster_id") == not_cluster:
        return False
    try:
        jobs = httpx.get(f"http://localhost:{state['rest_port']}/jobs/overview", timeout=1).json()["jobs"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return any(
        j["state"] == "RUNNING" and 0 < j["tasks"]["running"] + j["tasks"]["finished"] == j["tasks"]["total"]
        for j in jobs
    )


def lose_cluster(data: Path) -> str:
    """kill -9 every process of the local cluster (each leads a session of its own); the cluster's id."""
    state = cluster_state(data)
    if state is None:
        raise RuntimeError("no cluster.json: the local cluster is not running")
    pids = [int(state[role]["pid"]) for role in ROLES if processes.is_alive(state[role]["pid"], state[role]["started"])]
    for pid in pids:
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    until(lambda: not any(processes.started(pid) for pid in pids), 0.05, 15, "the cluster's processes to die")
    return str(state.get("cluster_id", ""))


def stop_cluster(data: Path, venv: Path) -> None:
    """Stop the local cluster a server left in ``data`` (its groups SIGTERMed, then SIGKILLed), whatever is left."""
    cluster = LocalFlinkCluster(data / CLUSTER, python=flink_python(venv))
    if cluster.adopt():
        cluster.stop()
        return
    state = cluster_state(data) or {}
    for role in ROLES:
        member = state.get(role) or {}
        if processes.is_alive(int(member.get("pid", 0)), str(member.get("started", ""))):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(int(member["pid"]), signal.SIGKILL)


def create_flink_job(server: Server, out: Path) -> str:
    program = {"engine": "flink", "program": str(PROGRAM), "args": ["--out", str(out)]}
    body = {
        "name": "bench-recovery",
        "type": "JOB_TYPE_STREAMING",
        "environment": {"sdkPipelineOptions": {"options": {"tidegate": program}}},
    }
    response = httpx.post(f"{server.base}{JOBS}", json=body, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"CreateJob answered {response.status_code}: {response.text}")
    return str(response.json()["id"])


def milestones(data: Path, job: str, since: float, before: float | None = None) -> str:
    """Where the time went, by the job's messages' time stamps: seconds from ``since`` to the engine's notes."""
    store = Store(f"sqlite:///{data / 'tidegate.db'}")
    try:
        after, end = (None if t is None else datetime.fromtimestamp(t, UTC) for t in (since, before))
        texts = store.list_messages(job, MessageImportance.JOB_MESSAGE_DEBUG, after, end, 1000).items
        found = []
        for phrase, label in ((RESUMING, "lost cluster noticed"), ("Flink accepted job", "Flink accepted it")):
            at = next((m.time.timestamp() - since for m in texts if phrase in m.text), None)
            found += [f"{label} at {at:.1f} s"] if at is not None else []
        return ", ".join(found)
    except Exception as error:  # only a comment on the figures: never the reason a repetition fails
        return f"no milestones: {error}"
    finally:
        store.close()


def until_events(
    server: Server, job: str, data: Path, not_cluster: str, tails: tuple[Tail, Tail], started: float, poll: float
) -> tuple[float, float, float]:
    """Seconds from ``started`` until Flink runs the job, and until each tail has a new line."""
    running = -1.0
    checked = time.perf_counter()
    deadline = started + 300
    while running < 0 or not all(tail.since(started) for tail in tails):
        if running < 0 and flink_running(data, not_cluster):
            running = time.perf_counter() - started
        if time.perf_counter() - checked > 1 and server.proc is not None:
            checked = time.perf_counter()
            if server.healthy() and (state := server.state(job)) in TERMINAL:
                raise RuntimeError(f"the Flink job ended {state}: {server.messages(job)[-3:]}")
        if time.perf_counter() > deadline:
            raise TimeoutError("the Flink job did not run and write within 300 s")
        time.sleep(poll)
    firsts = [next(at for at in tail.arrivals if at > started) - started for tail in tails]
    return running, firsts[0], firsts[1]


def resume_rep(work: Path, rep: int, args: argparse.Namespace, venv: Path, results: dict[str, list[float]]) -> None:
    """A fresh job on a fresh server and cluster (the baseline); checkpoint; server and cluster lost; resumed."""
    data, out = work / f"resume-{rep}", work / f"resume-{rep}-out"
    flags = ["--engines", "flink", "--flink-checkpoint-interval", f"{args.checkpoint_interval:g}"]
    server = Server(data, *flags, env=clean_env(TIDEGATE_FLINK_VENV=str(venv)))
    tails: list[Tail] = []
    try:
        tails = [Tail(out / "seen.txt"), Tail(out / "windows.txt")]
        started, first_start = time.perf_counter(), time.time()
        server.start(args.poll)
        job = create_flink_job(server, out)
        fresh = until_events(server, job, data, "", (tails[0], tails[1]), started, args.poll)
        until(
            lambda: bool(list((data / CLUSTER / "checkpoints").glob("*/chk-*/_metadata"))),
            0.1,
            120,
            "a retained checkpoint",
        )
        server.kill()
        old_cluster = lose_cluster(data)
        for tail in tails:
            tail.close()
        time.sleep(0.2)  # the last lines written before the loss are counted before the restart
        tails = [Tail(out / "seen.txt"), Tail(out / "windows.txt")]
        time.sleep(0.2)
        started, second_start = time.perf_counter(), time.time()
        server.spawn()
        resumed = until_events(server, job, data, old_cluster, (tails[0], tails[1]), started, args.poll)
        said = [text for text in server.messages(job) if RESUMING in text]
        if not said:
            raise RuntimeError(f"no job message says {RESUMING!r}: {server.messages(job)[-3:]}")
        source = "from a checkpoint" if "chk-" in said[-1] else "NOT from a checkpoint"
        for name, value in zip((FRESH_RUNNING, FRESH_RECORD, FRESH_WINDOW), fresh, strict=True):
            results[name].append(value)
        for name, value in zip((RESUME_RUNNING, RESUME_RECORD, RESUME_WINDOW), resumed, strict=True):
            results[name].append(value)
        print(
            f"  rep {rep + 1} resume:  fresh: Flink RUNNING {fresh[0]:5.1f} s, first record {fresh[1]:5.1f} s, "
            f"first window {fresh[2]:5.1f} s ({milestones(data, job, first_start, second_start)})\n"
            f"{'':23}resumed {source}: Flink RUNNING {resumed[0]:5.1f} s, first new record {resumed[1]:5.1f} s, "
            f"first new window {resumed[2]:5.1f} s ({milestones(data, job, second_start)})",
            flush=True,
        )
    finally:
        for tail in tails:
            tail.close()
        server.stop()
        stop_cluster(data, venv)


# -- the report -------------------------------------------------------------------------------


def row(name: str, values: list[float]) -> None:
    if not values:
        print(f"{name:<46}no measurement")
        return
    print(f"{name:<46}{statistics.median(values):8.2f} s{max(values):8.2f} s{len(values):6}")


def ratio(name: str, values: list[float], baseline: list[float]) -> None:
    if not values or not baseline:
        return
    medians = statistics.median(values) / statistics.median(baseline)
    print(f"{name:<46}{medians:8.2f}  {max(values) / max(baseline):8.2f}")


def report(results: dict[str, list[float]], scenarios: list[str]) -> None:
    print(f"\n{'':<46}{'median':>10}{'worst':>10}{'runs':>6}")
    if "restart" in scenarios:
        for name in (RESTART_TAKEN, RESTART_HEALTH, RESTART_BASE):
            row(name, results[name])
        ratio("  ratio taken back / baseline (median, worst)", results[RESTART_TAKEN], results[RESTART_BASE])
        ratio("  ratio restarted /healthz / baseline", results[RESTART_HEALTH], results[RESTART_BASE])
    if "adopt" in scenarios:
        row(ADOPT, results[ADOPT])
        settings = SchedulerSettings(work_dir=Path())
        every = min(timedelta(seconds=1), settings.lease / 3).total_seconds()  # as Leases.adopt
        print(
            f"  B looks for servers that are gone at most every {every:.2f} s, at its scheduler's ticks "
            f"(every {settings.tick:.2f} s); its lease {settings.lease.total_seconds():.0f} s (not waited for on "
            "one machine: A's process is seen gone)"
        )
    if "resume" in scenarios:
        for name in (RESUME_RUNNING, RESUME_RECORD, RESUME_WINDOW, FRESH_RUNNING, FRESH_RECORD, FRESH_WINDOW):
            row(name, results[name])
        ratio("  ratio resume / fresh: Flink RUNNING", results[RESUME_RUNNING], results[FRESH_RUNNING])
        ratio("  ratio resume / fresh: first record", results[RESUME_RECORD], results[FRESH_RECORD])
        ratio("  ratio resume / fresh: first window", results[RESUME_WINDOW], results[FRESH_WINDOW])


def database_url(given: str) -> str:
    if given or (given := os.environ.get("TIDEGATE_TEST_POSTGRES_URL", "")):
        return given
    found = subprocess.run(["bash", str(ROOT / "scripts" / "ensure-postgres")], check=True, capture_output=True)
    return found.stdout.decode().strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="repetitions of restart and of adopt")
    parser.add_argument("--flink-reps", type=int, default=2, help="repetitions of resume (each about 75 s)")
    parser.add_argument("--runs", type=int, default=3, help="Beam runs RUNNING at the kill (K)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each Beam run would run")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between polls of /healthz, store, Flink")
    parser.add_argument("--checkpoint-interval", type=float, default=2.0, help="--flink-checkpoint-interval")
    parser.add_argument("--database-url", default="", help="PostgreSQL for adopt (a schema of its own each time)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated: restart, adopt, resume")
    args = parser.parse_args()
    scenarios = [s for s in SCENARIOS if s in args.only.split(",")]
    venv = Path()
    if "restart" in scenarios or "adopt" in scenarios:
        subprocess.run(["bash", str(ROOT / "scripts" / "setup-beam-client")], check=True)
    if "adopt" in scenarios:
        args.database_url = database_url(args.database_url)
    if "resume" in scenarios:
        setup = subprocess.run(["bash", str(ROOT / "scripts" / "setup-flink")], check=True, capture_output=True)
        venv = Path(setup.stdout.decode().strip().splitlines()[-1])
    print(
        f"bench_recovery {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {args.reps} repetitions "
        f"of restart and adopt ({args.runs} Beam runs of {args.seconds:g} s), {args.flink_reps} of resume "
        f"(checkpoints every {args.checkpoint_interval:g} s), polling every {args.poll} s",
        flush=True,
    )
    names = (RESTART_TAKEN, RESTART_HEALTH, RESTART_BASE, ADOPT)
    names += (RESUME_RUNNING, RESUME_RECORD, RESUME_WINDOW, FRESH_RUNNING, FRESH_RECORD, FRESH_WINDOW)
    results: dict[str, list[float]] = {name: [] for name in names}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as folder:
        work = Path(folder)
        steps: list[tuple[str, int, Callable[[], None]]] = []
        for rep in range(max(args.reps, args.flink_reps)):  # the scenarios take turns
            if "restart" in scenarios and rep < args.reps:
                steps.append(("restart", rep, lambda rep=rep: restart_rep(work, rep, args, results)))
            if "adopt" in scenarios and rep < args.reps:
                steps.append(("adopt", rep, lambda rep=rep: adopt_rep(work, rep, args, results)))
            if "resume" in scenarios and rep < args.flink_reps:
                steps.append(("resume", rep, lambda rep=rep: resume_rep(work, rep, args, venv, results)))
        for name, rep, step in steps:
            try:
                step()
            except Exception as error:  # a shared machine's trouble: say so, go on (cleaned up by then)
                text = (str(error).splitlines() or [""])[0][:300]
                print(f"  rep {rep + 1} {name}: FAILED: {type(error).__name__}: {text}", flush=True)
    report(results, scenarios)
    print(f"(the benchmark took {(time.perf_counter() - began) / 60:.1f} min)")


if __name__ == "__main__":
    main()

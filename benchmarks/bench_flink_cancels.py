"""Cancels of streaming PyFlink jobs on the local Flink cluster: does the TaskManager survive them?

    .venv/bin/python benchmarks/bench_flink_cancels.py [--cancels 50] [--in-flight 2] [--minutes M]
        [--python-mode thread|process] [--set KEY=VALUE ...]

Starts the Flink engine's local cluster (free ports, a temporary folder), then ``--cancels``
times: a streaming PyFlink job (``tests/integration/flink_jobs/windowed_counts.py``, three
Python operators; in process mode they share their slot's Python environment) launched through
``FlinkEngine.launch``, polled until RUNNING (every task runs), cancelled with
``FlinkEngine.cancel`` and polled until CANCELLED. ``--in-flight`` cycles overlap (each
job takes a slot of its own; the cluster has four), which keeps a busy machine busier and
the benchmark shorter.

Counts, over the whole run, how the TaskManager fared:

- exits: the TaskManager process found gone (checked every poll), and its restarts by the
  engine (the TaskManager pid recorded in the cluster's ``cluster.json`` changing);
- ``/overview`` answers with no TaskManager registered;
- lines "Reference count must not be negative" in the cluster's logs (``log/``);
- cycles that did not end CANCELLED (with the state they ended in).

Prints per cycle submit -> RUNNING and cancel -> CANCELLED, then their median and p90.
``--python-mode`` is the cluster's (``thread``, its default, or ``process``, where the
TaskManager could end itself on a cancel). ``--set KEY=VALUE`` (repeatable) adds Flink
configuration to the cluster's, to compare candidates; ``--minutes`` starts no new cycle
after that long (the figures are the cycles done). Each cycle's job is also cancelled on
Flink's REST API at its end, in case the engine took an accepted submission for failed.
Exits 1 if the TaskManager exited or a cycle did not end CANCELLED.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rest import free_port

from tidegate import processes
from tidegate.engines.base import EngineState, Handle, LaunchRequest
from tidegate.engines.flink import FlinkEngine
from tidegate.errors import TidegateError, Unavailable

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "tests" / "integration" / "flink_jobs" / "windowed_counts.py"
DOUBLE_RELEASE = "Reference count must not be negative"
ENDED = {EngineState.SUCCEEDED, EngineState.FAILED, EngineState.CANCELLED, EngineState.DRAINED}


@dataclass
class Watch:
    """What became of the TaskManager, seen from the benchmark's polls."""

    cluster: Path
    rest_url: str
    pids: list[int] = field(default_factory=list)
    found_dead: int = 0
    no_taskmanager: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self) -> None:
        try:
            state = json.loads((self.cluster / "cluster.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        pid, started = int(state["taskmanager"]["pid"]), str(state["taskmanager"]["started"])
        alive = processes.is_alive(pid, started)
        try:
            registered = int(httpx.get(f"{self.rest_url}/overview", timeout=5.0).json().get("taskmanagers", 0))
        except (httpx.HTTPError, ValueError):
            registered = -1
        with self.lock:
            if not self.pids or self.pids[-1] != pid:
                self.pids.append(pid)
            if not alive:
                self.found_dead += 1
            if registered == 0:
                self.no_taskmanager += 1

    def restarts(self) -> int:
        return len(self.pids) - 1

    def double_releases(self) -> int:
        count = 0
        for path in (self.cluster / "log").glob("*"):
            if path.is_file():
                count += path.read_text(encoding="utf-8", errors="replace").count(DOUBLE_RELEASE)
        return count


@dataclass
class Cycle:
    number: int
    to_running: float = 0.0
    to_cancelled: float = 0.0
    ended: str = ""


def _wait(engine: FlinkEngine, handle: Handle, wanted: EngineState, watch: Watch, timeout: float) -> EngineState:
    deadline = time.monotonic() + timeout
    while True:
        state = engine.poll(handle).state
        watch.check()
        if state is wanted or state in ENDED or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def _cycle(engine: FlinkEngine, number: int, work: Path, watch: Watch, rate: int) -> Cycle:
    cycle = Cycle(number)
    out = work / f"out-{number}"
    request = LaunchRequest(
        job_id=f"cancel-{number}",
        job_name=f"cancel-{number}",
        streaming=True,
        workdir=work / f"run-{number}",
        program=str(PROGRAM),
        args=("--out", str(out), "--rate", str(rate)),
    )
    started = time.monotonic()
    handle = engine.launch(request)
    try:
        state = _wait(engine, handle, EngineState.RUNNING, watch, timeout=600)
        cycle.to_running = time.monotonic() - started
        if state is not EngineState.RUNNING:
            cycle.ended = f"{state.name} before RUNNING: {engine.poll(handle).error[:300]}"
            return cycle
        time.sleep(1.0)  # let records flow through the Python operators first
        cancelled = time.monotonic()
        engine.cancel(handle)
        state = _wait(engine, handle, EngineState.CANCELLED, watch, timeout=600)
        cycle.to_cancelled = time.monotonic() - cancelled
        cycle.ended = state.name
        return cycle
    finally:
        engine.cancel(handle)
        # Also when the engine took the submission for failed (e.g. the CLI's ask timed out on a
        # busy machine) though Flink accepted the job: it must not hold its slot for the next cycles.
        with contextlib.suppress(TidegateError):
            engine._rest.cancel(handle.ref)
        engine.release(handle)


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cancels", type=int, default=50, help="how many jobs to launch and cancel")
    parser.add_argument("--in-flight", type=int, default=2, help="cycles that overlap (at most the 4 slots)")
    parser.add_argument("--minutes", type=float, default=0, help="start no cycle after this long (0: no limit)")
    parser.add_argument("--rate", type=int, default=20, help="records a second the job's source emits")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Flink configuration to add")
    parser.add_argument("--flink-venv", type=Path, default=ROOT / ".flink-venv")
    parser.add_argument(
        "--python-mode", choices=("thread", "process"), default="thread", help="how the jobs' Python runs"
    )
    options = parser.parse_args()
    settings = dict(item.split("=", 1) for item in options.set)
    in_flight = max(1, min(4, options.in_flight))

    with tempfile.TemporaryDirectory(prefix="bench-flink-cancels-") as tmp:
        work = Path(tmp)
        engine = FlinkEngine(
            state_dir=work / "state",
            flink_venv=options.flink_venv,
            rest_port=free_port(),
            rpc_port=free_port(),
            task_slots=4,
            flink_conf=settings,
            python_mode=options.python_mode,
        )
        begun = time.monotonic()
        cycles: list[Cycle] = []
        try:
            for attempt in range(3):  # a busy machine can take longer than the cluster's start timeout
                try:
                    engine.start_cluster()
                    break
                except Unavailable:
                    if attempt == 2:
                        raise
                    print("the cluster did not start in time; trying again", flush=True)
            watch = Watch(work / "state" / "flink-cluster", engine.rest_url)
            watch.check()
            print(
                f"cluster ready in {time.monotonic() - begun:.1f} s; Python in {options.python_mode} mode;"
                f" extra settings: {settings or 'none'}"
            )
            numbers = iter(range(1, options.cancels + 1))
            stop_at = begun + options.minutes * 60 if options.minutes > 0 else float("inf")
            numbers_lock, cycles_lock = threading.Lock(), threading.Lock()

            def worker() -> None:
                while True:
                    with numbers_lock:
                        number = next(numbers, None) if time.monotonic() < stop_at else None
                    if number is None:
                        return
                    try:
                        cycle = _cycle(engine, number, work, watch, options.rate)
                    except Exception as error:  # a cycle's failure is counted, not raised
                        cycle = Cycle(number, ended=f"error: {error}")
                    with cycles_lock:
                        cycles.append(cycle)
                    print(
                        f"cycle {cycle.number:3d}: submit -> RUNNING {cycle.to_running:6.1f} s, "
                        f"cancel -> CANCELLED {cycle.to_cancelled:5.2f} s, {cycle.ended}; "
                        f"TaskManager restarts so far {watch.restarts()}",
                        flush=True,
                    )

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(in_flight)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            watch.check()
        finally:
            engine.stop_cluster(savepoints=False)
            engine.close()
        doubles = watch.double_releases()

    cancelled = [c for c in cycles if c.ended == "CANCELLED"]
    others = [c for c in cycles if c.ended != "CANCELLED"]
    print()
    print(
        f"cycles: {len(cycles)} in {time.monotonic() - begun:.0f} s ({in_flight} in flight);"
        f" {options.python_mode} mode; settings: {settings}"
    )
    print(f"ended CANCELLED: {len(cancelled)}; otherwise: {len(others)}")
    for cycle in others:
        print(f"  cycle {cycle.number}: {cycle.ended}")
    print(f"TaskManager restarts (pid changed): {watch.restarts()}; polls that found it gone: {watch.found_dead}")
    print(f"/overview with no TaskManager: {watch.no_taskmanager}; '{DOUBLE_RELEASE}' in logs: {doubles}")
    for name, values in (
        ("submit -> RUNNING", [c.to_running for c in cancelled]),
        ("cancel -> CANCELLED", [c.to_cancelled for c in cancelled]),
    ):
        if values:
            print(f"{name}: median {statistics.median(values):.2f} s, p90 {_p90(values):.2f} s")
    exited = watch.restarts() > 0 or watch.found_dead > 0 or doubles > 0
    return 1 if exited or others else 0


if __name__ == "__main__":
    sys.exit(main())

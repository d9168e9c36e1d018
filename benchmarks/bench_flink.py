"""Flink streaming jobs through tidegate, against Flink driven directly, on one Flink cluster in one run.

    .venv/bin/python benchmarks/bench_flink.py [--reps 4] [--poll 0.05] [--rate 20] [--quick] [--cold-submit]
        [--update-after 2] [--timelines]
        [--python-mode thread|process] [--remote]

One local Flink cluster (from the Flink environment of ``scripts/setup-flink``) serves
both sides:

- tidegate: a ``tidegate server --engines flink`` whose local cluster it is; jobs are
  created, drained, cancelled and updated through the Dataflow REST API (v1b3) and
  their state is read through it;
- directly: Flink's own ``flink run --detached --python`` from the Flink environment,
  with the same client configuration tidegate's engine writes (so the two submit paths
  differ only by what tidegate adds), and Flink's REST API (stop with a drain savepoint,
  cancel, stop with a savepoint then ``flink run -s`` from it); state polled on Flink's
  REST API.

Both sides poll their API every ``--poll`` seconds. RUNNING means the same on both
sides: Flink says RUNNING and every task runs (tidegate's "workers are processing
data"). The direct side reads Flink's uncached endpoints (``/jobs/overview``,
``/jobs/:id/status``), as tidegate's engine does: ``/jobs/:id`` answers from a cache
refreshed every ``web.refresh-interval`` (3 s). The program is the acceptance tests' keyed windowed job
(``tests/integration/flink_jobs/windowed_counts.py``), whose source emits ``--rate``
records a second; the update's gap is the longest interval between two consecutive
records it writes across the switch (old and new job write to the same file, which the
benchmark tails every 5 ms).

Each repetition on each side: a job submitted and drained; a job submitted, updated and
its replacement cancelled; a job submitted and cancelled (two cancels a repetition: a
cancel's time is mostly Flink's own, which varies from 0.2 to 0.6 s). Each cancel's line
splits its time by Flink's clock: until Flink's job is CANCELLING, until it is CANCELED,
and until the side saw it; each drain's line likewise: until Flink triggered the drain's
savepoint, until its last task acknowledged it, until the job was FINISHED, and until the
side saw it.

Prints, per metric, median and worst for both sides and the ratio tidegate/direct of the
medians against its target (``TARGETS``: submit 0.4, update gap 0.5, drain and cancel
1.0). The sides take turns, tidegate first in odd repetitions and Flink first in even ones,
so a shared machine's noise falls on both.

Both sides' jobs run their Python in ``--python-mode`` (``thread``, the local cluster's
default, or ``process``), on a cluster started in that mode. The cluster is where tidegate's
server keeps its local cluster, which the server adopts as its own, as a user's tidegate
would run: in thread mode it ships no ``flink-python`` jar with a job, where ``flink run``
ships it (42 MB) every time. ``--remote`` gives tidegate the cluster by address instead
(``--flink-rest-url``): it then ships the jar too.

tidegate submits through its warm PyFlink submitter when one is ready, else with
``flink run`` (``--cold-submit``: always with ``flink run``, as before warm submission).
Each tidegate submission (the updates' new jobs included) is counted as warm or cold
from the job's messages, and the warm ones are set against the direct side's submissions
(target: at most 0.4). An update's new job whose program built its graph while the old
job stopped is counted as "prepared" (its time from create to RUNNING holds the stop).
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rest import free_port

from tidegate.engines.flink import CLIENT_JVM_OPTIONS
from tidegate.engines.flink_cluster import find_flink_home, flink_python, write_config
from tidegate.engines.flink_local import LocalFlinkCluster, stop_group

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "tests" / "integration" / "flink_jobs" / "windowed_counts.py"
UIDS = ["count-per-window", "running-total"]
TARGETS = {
    "submit -> RUNNING": 0.4,
    "drain -> DRAINED": 1.0,
    "cancel -> CANCELLED": 1.0,
    "update: longest output gap": 0.5,
}
"""The issue's targets: each metric's median ratio tidegate/direct at most this."""
WARM_TARGET = 0.4
WARM_NOTE = "Submitted by the warm PyFlink submitter"
PREPARED_NOTE = f"{WARM_NOTE} (its graph built while the job it replaces stopped)"
JOBS = "/v1b3/projects/bench/locations/us-central1/jobs"
TERMINAL = {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_DRAINED", "JOB_STATE_UPDATED"}
METRICS = ("submit -> RUNNING", "drain -> DRAINED", "cancel -> CANCELLED", "update: longest output gap")


def until(check: Callable[[], bool], interval: float, timeout: float, what: str) -> None:
    """Call ``check`` every ``interval`` seconds until it is true."""
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


class Tail:
    """Tails a file of one record per line, noting when each line appeared (every 5 ms)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen = 0
        while not self._stop.is_set():
            try:
                lines = self.path.read_bytes().count(b"\n")
            except OSError:
                lines = 0
            if lines > seen:
                self.arrivals += [time.perf_counter()] * (lines - seen)
                seen = lines
            time.sleep(0.005)

    def count(self) -> int:
        return len(self.arrivals)

    def since(self, moment: float) -> int:
        return sum(1 for at in self.arrivals if at > moment)

    def longest_gap(self, after: float) -> float:
        """The longest interval between consecutive records, of those ending after ``after``."""
        times = self.arrivals
        return max((b - a for a, b in itertools.pairwise(times) if b > after), default=0.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class Side(Protocol):
    name: str

    def submit(self, out: Path, version: str) -> tuple[str, float]:
        """Start the program writing into ``out``; its id and the seconds to RUNNING."""

    def drain(self, job: str) -> float:
        """Seconds from the drain request to DRAINED (Flink: FINISHED)."""

    def cancel(self, job: str) -> float:
        """Seconds from the cancel request to CANCELLED."""

    def update(self, job: str, out: Path, version: str) -> tuple[str, float]:
        """Replace the job by a new one from its state; the new id and the seconds until it runs."""

    def flink_job(self, job: str) -> str:
        """The Flink job id behind ``job``."""


class Tidegate:
    """Jobs through tidegate's Dataflow REST API."""

    name = "tidegate"

    def __init__(self, base: str, poll: float, rate: int, timelines: bool = False) -> None:
        self.client = httpx.Client(base_url=base, timeout=120)
        self.poll, self.rate, self.timelines = poll, rate, timelines
        self.submits: dict[str, list[float]] = {"warm": [], "cold": [], "prepared": []}
        """Seconds from create to RUNNING of every job (updates' new jobs too), by how it was submitted."""

    def _body(self, out: Path, version: str, **extra: Any) -> dict[str, Any]:
        options = {
            "engine": "flink",
            "program": str(PROGRAM),
            "args": ["--out", str(out), "--version", version, "--rate", str(self.rate)],
            "uids": UIDS,
        }
        return {
            "name": f"bench-{version}",
            "type": "JOB_TYPE_STREAMING",
            "environment": {"sdkPipelineOptions": {"options": {"tidegate": options}}},
            **extra,
        }

    def _state(self, job: str) -> str:
        response = self.client.get(f"{JOBS}/{job}")
        response.raise_for_status()
        return str(response.json()["currentState"])

    def _wait(self, job: str, wanted: str, timeout: float = 300) -> None:
        def reached() -> bool:
            state = self._state(job)
            if state != wanted and state in TERMINAL:
                raise RuntimeError(f"tidegate job {job} ended {state}, wanted {wanted}: {self._errors(job)}")
            return state == wanted

        until(reached, self.poll, timeout, f"tidegate job {job} to {wanted}")

    def _errors(self, job: str) -> str:
        messages = self.client.get(f"{JOBS}/{job}/messages", params={"pageSize": 1000}).json().get("jobMessages", [])
        return "\n".join(m.get("messageText", "")[:1500] for m in messages[-5:])

    def _create(self, body: dict[str, Any]) -> str:
        response = self.client.post(JOBS, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"CreateJob answered {response.status_code}: {response.text}")
        return str(response.json()["id"])

    def submit(self, out: Path, version: str) -> tuple[str, float]:
        start = time.perf_counter()
        job = self._create(self._body(out, version))
        self._wait(job, "JOB_STATE_RUNNING")
        took = time.perf_counter() - start
        self._count(job, took)
        return job, took

    def _count(self, job: str, took: float) -> None:
        messages = self.client.get(f"{JOBS}/{job}/messages", params={"pageSize": 1000}).json().get("jobMessages", [])
        said = [str(m.get("messageText")) for m in messages]
        path = "prepared" if PREPARED_NOTE in said else "warm" if any(t.startswith(WARM_NOTE) for t in said) else "cold"
        self.submits[path].append(took)

    def _timeline(self, asked: datetime, old: str, new: str) -> None:
        """Both jobs' messages since the update was asked, by seconds since then (``--timelines``)."""
        said = []
        for job, who in ((old, "old"), (new, "new")):
            params = {"pageSize": 1000, "minimumImportance": "JOB_MESSAGE_DEBUG"}
            for m in self.client.get(f"{JOBS}/{job}/messages", params=params).json().get("jobMessages", []):
                when = datetime.fromisoformat(str(m["time"]).replace("Z", "+00:00"))
                if when >= asked:
                    said.append(((when - asked).total_seconds(), who, str(m.get("messageText", ""))[:110]))
        for seconds, who, text in sorted(said):
            print(f"{'':22}{seconds:6.2f} s  {who}  {text}", flush=True)

    def _request(self, job: str, state: str) -> float:
        start = time.perf_counter()
        self.client.put(f"{JOBS}/{job}", json={"requestedState": state}).raise_for_status()
        self._wait(job, state)
        return time.perf_counter() - start

    def drain(self, job: str) -> float:
        return self._request(job, "JOB_STATE_DRAINED")

    def cancel(self, job: str) -> float:
        return self._request(job, "JOB_STATE_CANCELLED")

    def update(self, job: str, out: Path, version: str) -> tuple[str, float]:
        start = time.perf_counter()
        asked = datetime.now(UTC)
        new = self._create(self._body(out, version, replaceJobId=job))
        created = time.perf_counter()
        self._wait(new, "JOB_STATE_RUNNING")
        self._count(new, time.perf_counter() - created)
        if self.timelines:
            self._timeline(asked, job, new)
        return new, time.perf_counter() - start

    def recorded(self, job: str) -> float:
        """When the job entered its current state, by tidegate's clock (seconds since the epoch)."""
        when = str(self.client.get(f"{JOBS}/{job}").json()["currentStateTime"])
        return datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()

    def flink_job(self, job: str) -> str:
        """From the job's messages ("Flink accepted job ...")."""
        messages = self.client.get(f"{JOBS}/{job}/messages", params={"pageSize": 1000}).json().get("jobMessages", [])
        accepted = [m["messageText"].split()[-1] for m in messages if m["messageText"].startswith("Flink accepted job")]
        return accepted[-1] if accepted else ""


class Direct:
    """Jobs with Flink's CLI and REST API, as a script driving Flink itself would."""

    name = "direct"

    def __init__(self, rest_url: str, venv: Path, work: Path, poll: float, rate: int, python_mode: str) -> None:
        self.rest = httpx.Client(base_url=rest_url, timeout=120)
        self.venv, self.work, self.poll, self.rate = venv, work, poll, rate
        self.home = find_flink_home(venv)
        self.conf = work / "direct-client-conf"
        url = httpx.URL(rest_url)
        settings = {
            "rest.address": url.host,
            "rest.port": str(url.port),
            "execution.target": "remote",
            "python.client.executable": str(flink_python(venv)),
            "env.java.opts.client": CLIENT_JVM_OPTIONS,
            "python.execution-mode": python_mode,
        }
        write_config(self.conf, settings, self.home)
        self.clis: list[subprocess.Popen[bytes]] = []

    def _run(self, out: Path, version: str, savepoint: str = "") -> str:
        job = os.urandom(16).hex()
        command = [str(self.home / "bin" / "flink"), "run", "--detached", f"-D$internal.pipeline.job-id={job}"]
        command += ["--fromSavepoint", savepoint] if savepoint else []
        command += ["--python", str(PROGRAM), "--out", str(out), "--version", version, "--rate", str(self.rate)]
        env = dict(os.environ, FLINK_CONF_DIR=str(self.conf), FLINK_LOG_DIR=str(self.work / "direct-log"))
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        log = open(self.work / f"direct-{job}.log", "wb")  # noqa: SIM115 (the CLI writes it while it runs)
        self.clis.append(
            subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        )
        log.close()
        return job

    def _status(self, job: str) -> str:
        """The job's state now (``/jobs/:id`` would answer from Flink's cache, up to 3 s late)."""
        response = self.rest.get(f"/jobs/{job}/status")
        if response.status_code == 500 and "FlinkJobNotFoundException" in response.text:
            return ""  # not submitted yet
        response.raise_for_status()
        return str(response.json()["status"])

    def _wait_running(self, job: str) -> None:
        cli = self.clis[-1]

        def running() -> bool:
            jobs = {j["jid"]: j for j in self.rest.get("/jobs/overview").json()["jobs"]}
            found = jobs.get(job)
            if found is None:
                if cli.poll() not in (None, 0):
                    log = (self.work / f"direct-{job}.log").read_text(errors="replace")
                    raise RuntimeError(f"flink run failed:\n{log[-4000:]}")
                return False
            if found["state"] in ("FAILED", "CANCELED", "FINISHED"):
                raise RuntimeError(f"Flink job {job} ended {found['state']}")
            tasks = found["tasks"]
            return found["state"] == "RUNNING" and 0 < tasks["running"] + tasks["finished"] == tasks["total"]

        until(running, self.poll, 300, f"Flink job {job} to RUNNING")

    def _wait_state(self, job: str, wanted: str) -> None:
        until(lambda: self._status(job) == wanted, self.poll, 300, f"Flink job {job} to {wanted}")

    def submit(self, out: Path, version: str) -> tuple[str, float]:
        start = time.perf_counter()
        job = self._run(out, version)
        self._wait_running(job)
        return job, time.perf_counter() - start

    def drain(self, job: str) -> float:
        start = time.perf_counter()
        body = {"drain": True, "targetDirectory": str(self.work / "direct-savepoints"), "formatType": "CANONICAL"}
        self.rest.post(f"/jobs/{job}/stop", json=body).raise_for_status()
        self._wait_state(job, "FINISHED")
        return time.perf_counter() - start

    def cancel(self, job: str) -> float:
        start = time.perf_counter()
        self.rest.patch(f"/jobs/{job}?mode=cancel").raise_for_status()
        self._wait_state(job, "CANCELED")
        return time.perf_counter() - start

    def update(self, job: str, out: Path, version: str) -> tuple[str, float]:
        start = time.perf_counter()
        body = {"drain": False, "targetDirectory": str(self.work / "direct-savepoints"), "formatType": "CANONICAL"}
        trigger = self.rest.post(f"/jobs/{job}/stop", json=body).json()["request-id"]
        location = ""

        def saved() -> bool:
            nonlocal location
            answer = self.rest.get(f"/jobs/{job}/savepoints/{trigger}").json()
            if answer.get("status", {}).get("id") != "COMPLETED":
                return False
            location = str((answer.get("operation") or {}).get("location") or "")
            if not location:
                raise RuntimeError(f"the savepoint of Flink job {job} failed: {str(answer)[:2000]}")
            return True

        until(saved, self.poll, 300, f"the savepoint of Flink job {job}")
        new = self._run(out, version, savepoint=location)
        self._wait_running(new)
        return new, time.perf_counter() - start

    def flink_job(self, job: str) -> str:
        return job

    def close(self) -> None:
        for cli in self.clis:
            if cli.poll() is None:
                stop_group(cli, 2.0)
            cli.wait()
        self.rest.close()


def scenario(
    side: Side,
    flink: httpx.Client,
    work: Path,
    rep: int,
    rate: int,
    results: dict[str, dict[str, list[float]]],
    update_after: float = 2.0,
) -> None:
    """One repetition on one side: submit and drain; submit, update and cancel; submit and cancel."""
    mine = results[side.name]
    first = work / f"{side.name}-{rep}-drained"
    tail = Tail(first / "seen.txt")
    job, took = side.submit(first, "v1")
    mine["submit -> RUNNING"].append(took)
    until(lambda: tail.count() >= rate, 0.05, 120, "output of the first job")
    tail.close()
    drained, drain_line = drain(side, flink, job, mine)

    second = work / f"{side.name}-{rep}-updated"
    tail = Tail(second / "seen.txt")
    job, took = side.submit(second, "v1")
    mine["submit -> RUNNING"].append(took)
    until(lambda: tail.count() >= update_after * rate, 0.05, 120, "output of the job to update")
    asked = time.perf_counter()
    new, new_running = side.update(job, second, "v2")
    resumed = time.perf_counter()
    until(lambda: tail.since(resumed) >= rate, 0.05, 120, "output of the updated job")  # a second of output again
    tail.close()
    gap = tail.longest_gap(asked)
    mine["update: longest output gap"].append(gap)
    cancels = [cancel(side, flink, new, mine)]

    third = work / f"{side.name}-{rep}-cancelled"
    tail = Tail(third / "seen.txt")
    job, _ = side.submit(third, "v1")
    until(lambda: tail.count() >= rate, 0.05, 120, "output of the job to cancel")
    tail.close()
    cancels.append(cancel(side, flink, job, mine))
    print(
        f"  rep {rep + 1} {side.name:<8}  submit {' '.join(f'{t:5.2f}' for t in mine['submit -> RUNNING'][-2:])} s   "
        f"drain {drained:5.2f} s   update gap {gap:6.2f} s (new job running {new_running:6.2f} s)\n"
        + f"{'':22}{drain_line}\n"
        + "".join(f"{'':22}{line}\n" for line in cancels),
        end="",
        flush=True,
    )


def drain(side: Side, flink: httpx.Client, job: str, mine: dict[str, list[float]]) -> tuple[float, str]:
    """Drain ``job``, note the seconds it took; where the time went, by Flink's clock (its savepoint's statistics)."""
    asked = time.time()
    took = side.drain(job)
    mine["drain -> DRAINED"].append(took)
    seen, flink_job = asked + took, side.flink_job(job)
    found: dict[str, Any] = {}

    def recorded() -> bool:  # both answer from Flink's REST cache, refreshed every 3 s
        nonlocal found
        points = flink.get(f"/jobs/{flink_job}/checkpoints").json().get("history", [])
        saves = [p for p in points if p.get("is_savepoint") and p.get("status") == "COMPLETED"]
        finished = flink.get(f"/jobs/{flink_job}").json().get("timestamps", {}).get("FINISHED")
        found = {"save": saves[-1], "finished": finished} if saves and finished else {}
        return bool(found)

    try:
        until(recorded, 0.2, 10, "Flink's savepoint statistics")
    except (TimeoutError, httpx.HTTPError, ValueError):
        return took, f"drain {took:5.2f} s"
    triggered, acked = found["save"]["trigger_timestamp"] / 1000, found["save"]["latest_ack_timestamp"] / 1000
    finished = found["finished"] / 1000
    return took, (
        f"drain {took:5.2f} s: to the savepoint's trigger {triggered - asked:5.3f} s, to its last ack "
        f"{acked - triggered:5.3f} s, to FINISHED {finished - acked:5.3f} s, until seen {seen - finished:5.3f} s"
    )


def cancel(side: Side, flink: httpx.Client, job: str, mine: dict[str, list[float]]) -> str:
    """Cancel ``job``, note the seconds it took; where the time went, by Flink's clock."""
    asked = time.time()
    took = side.cancel(job)
    mine["cancel -> CANCELLED"].append(took)
    seen, flink_job = asked + took, side.flink_job(job)
    stamps: dict[str, int] = {}

    def stamped() -> bool:  # /jobs/:id answers from a cache that Flink refreshes every 3 s
        nonlocal stamps
        stamps = flink.get(f"/jobs/{flink_job}").json().get("timestamps", {})
        return bool(stamps.get("CANCELED"))

    try:
        until(stamped, 0.2, 10, "Flink's timestamps")
    except (TimeoutError, httpx.HTTPError, ValueError):
        return f"cancel {took:5.2f} s"
    cancelling, cancelled = stamps["CANCELLING"] / 1000, stamps["CANCELED"] / 1000
    recorded = side.recorded(job) if isinstance(side, Tidegate) else None
    until_seen = f"until seen {seen - cancelled:5.3f} s"
    if recorded is not None:  # split: until tidegate's CANCELLED (its currentStateTime), then until the client saw it
        until_seen = f"to tidegate's CANCELLED {recorded - cancelled:5.3f} s, until seen {seen - recorded:5.3f} s"
    return (
        f"cancel {took:5.2f} s: to Flink's CANCELLING {cancelling - asked:5.3f} s, "
        f"to its CANCELED {cancelled - cancelling:5.3f} s, {until_seen}"
    )


@contextmanager
def tidegate_server(work: Path, rest_url: str, cold_submit: bool, python_mode: str, remote: bool) -> Iterator[str]:
    """tidegate on the benchmark's cluster: as its own local cluster (adopted), or given by address (``remote``)."""
    port = free_port()
    command = [sys.executable, "-m", "tidegate.cli", "server", "--engines", "flink", "--flink-python-mode", python_mode]
    command += ["--flink-rest-url", rest_url] if remote else []
    command += ["--flink-cold-submit"] if cold_submit else []
    command += ["--port", str(port), "--grpc-port", "0", "--job-port", "0", "--max-jobs", "0"]
    command += ["--data-dir", str(work / "tidegate"), "--staging-root", str(PROGRAM.parent)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_") or k == "TIDEGATE_FLINK_VENV"}
    with open(work / "tidegate.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        until(lambda: _answers(base) or proc.poll() is not None, 0.05, 60, "tidegate server")
        if proc.poll() is not None:
            raise RuntimeError(f"tidegate server exited:\n{(work / 'tidegate.log').read_text()}")
        yield base
    finally:
        proc.terminate()
        proc.wait(60)


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def report(results: dict[str, dict[str, list[float]]]) -> bool:
    print(f"\n{'':<28}{'tidegate':>18}{'direct':>18}{'ratio tidegate/direct':>28}")
    print(f"{'':<28}{'median   worst':>18}{'median   worst':>18}{'median':>12}{'worst':>8}")
    passed = True
    for metric in METRICS:
        tg, direct = results["tidegate"][metric], results["direct"][metric]
        if not tg or not direct:
            print(f"{metric:<28}no measurement on one side")
            passed = False
            continue
        ratio = statistics.median(tg) / statistics.median(direct)
        worst = max(tg) / max(direct)
        ok = ratio <= TARGETS[metric]
        passed = passed and ok
        print(
            f"{metric:<28}{statistics.median(tg):8.2f} {max(tg):7.2f} s{statistics.median(direct):8.2f} "
            f"{max(direct):7.2f} s{ratio:10.2f}{worst:9.2f}   {'pass' if ok else 'FAIL'} <= {TARGETS[metric]}"
            f"  ({len(tg)} runs each)"
        )
    print(f"targets (median ratio): {'all met' if passed else 'NOT all met'}")
    return passed


def report_submits(submits: dict[str, list[float]], direct: list[float]) -> None:
    """tidegate's submissions by path (warm submitter or ``flink run``) against the direct side's ``flink run``."""
    print(f"\ntidegate's submissions by path (direct flink run: median {statistics.median(direct or [0]):.2f} s)")
    for path, times in submits.items():
        if not times or not direct:
            print(f"  {path:<8} none")
            continue
        ratio = statistics.median(times) / statistics.median(direct)
        verdict = f"   target <= {WARM_TARGET}: {'pass' if ratio <= WARM_TARGET else 'FAIL'}" if path == "warm" else ""
        print(
            f"  {path:<8} {len(times):2} submissions: median {statistics.median(times):5.2f} s, "
            f"worst {max(times):5.2f} s, ratio to direct {ratio:4.2f}{verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=4, help="repetitions per side (each: 4 Flink submissions)")
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between state polls, on both sides")
    parser.add_argument("--rate", type=int, default=20, help="records a second the job's source emits")
    parser.add_argument(
        "--update-after",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds of the job's output before it is updated (2: right after its start; a job updated after"
        " minutes finds tidegate's submitters ready, as with --update-after 15)",
    )
    parser.add_argument("--quick", action="store_true", help="one repetition per side")
    parser.add_argument("--timelines", action="store_true", help="print each tidegate update's job messages in time")
    parser.add_argument("--cold-submit", action="store_true", help="tidegate submits every job with flink run")
    parser.add_argument(
        "--python-mode", choices=("thread", "process"), default="thread", help="how both sides' jobs run their Python"
    )
    parser.add_argument(
        "--remote", action="store_true", help="tidegate is given the cluster by address (--flink-rest-url)"
    )
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    setup = subprocess.run(["bash", str(ROOT / "scripts" / "setup-flink")], check=True, capture_output=True, text=True)
    venv = Path(setup.stdout.strip().splitlines()[-1])
    print(
        f"bench_flink {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {reps} repetitions per side, "
        f"polling every {args.poll} s, source at {args.rate} records/s, Python in {args.python_mode} mode",
        flush=True,
    )
    results: dict[str, dict[str, list[float]]] = {side: {m: [] for m in METRICS} for side in ("tidegate", "direct")}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        # Where tidegate's server (data directory work/tidegate) keeps its local cluster, with the
        # settings its engine gives it: the server adopts it as its own (unless --remote).
        cluster = LocalFlinkCluster(
            work / ("flink-cluster" if args.remote else "tidegate/flink/flink-cluster"),
            python=flink_python(venv),
            rest_port=free_port(),
            rpc_port=free_port(),
            python_mode=args.python_mode,
            settings={"env.java.opts.client": CLIENT_JVM_OPTIONS},
        )
        started = time.perf_counter()
        cluster.start(find_flink_home(venv))
        print(f"  one Flink cluster at {cluster.rest_url}, ready in {time.perf_counter() - started:.1f} s", flush=True)
        direct = Direct(cluster.rest_url, venv, work, args.poll, args.rate, args.python_mode)
        tidegate: Tidegate | None = None
        try:
            with tidegate_server(work, cluster.rest_url, args.cold_submit, args.python_mode, args.remote) as base:
                tidegate = Tidegate(base, args.poll, args.rate, args.timelines)
                sides: list[Side] = [tidegate, direct]
                for rep in range(reps):
                    for side in sides if rep % 2 == 0 else sides[::-1]:
                        # PyFlink's can end itself when a job is cancelled (process mode); tidegate's engine
                        # starts it again itself when the cluster is its own.
                        if args.remote and cluster.revive_taskmanager():
                            print("  the TaskManager had exited; started it again", flush=True)
                            until(lambda: bool(direct.rest.get("/taskmanagers").json()["taskmanagers"]), 0.2, 120, "TM")
                        try:
                            scenario(side, direct.rest, work, rep, args.rate, results, args.update_after)
                        except (RuntimeError, TimeoutError) as error:  # a shared machine's trouble: say so, go on
                            print(f"  rep {rep + 1} {side.name:<8}  FAILED: {str(error).splitlines()[0][:300]}")
        finally:
            direct.close()
            cluster.stop()
    report(results)
    if tidegate is not None:
        report_submits(tidegate.submits, results["direct"]["submit -> RUNNING"])


if __name__ == "__main__":
    main()

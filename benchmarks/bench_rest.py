"""REST throughput and list latency on SQLite.

    .venv/bin/python benchmarks/bench_rest.py [--seconds 5] [--clients 32] [--jobs 100000]

Prints, from one run:
- GetJob and CreateJob requests/s with 32 concurrent clients, next to the same server
  framework's rate for an endpoint doing no work (GET and POST), and their ratios
  (targets, issue "The control plane at full speed": GetJob at least 0.7 of the empty
  endpoint, CreateJob at least 0.3 of the empty POST);
- the latency of a ListJobs page (first page and a deep page, per filter) with 1,000
  and with 100,000 jobs stored, and their ratio (target: at most 1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen

from tidegate.lifecycle import JobState, JobType
from tidegate.model import NewJob
from tidegate.service.jobs import JobService
from tidegate.store import Store

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BASE = "/v1b3/projects/bench/locations/us-central1/jobs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(*args: str, port: int, health: str) -> Iterator[None]:
    proc = subprocess.Popen([PYTHON, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            try:
                httpx.get(f"http://127.0.0.1:{port}{health}", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def tidegate(data_dir: Path) -> Iterator[int]:
    port = free_port()
    args = ["-m", "tidegate.cli", "server", "--engines", "none", "--grpc-port", "0", "--job-port", "0"]
    args += ["--port", str(port)]
    args += ["--data-dir", str(data_dir)]
    with process(*args, port=port, health="/healthz"):
        yield port


def throughput(seconds: float, clients: int, rounds: int = 5) -> dict[str, float]:
    """Requests/s per endpoint; both servers run at once and take turns, ``rounds`` times each.

    Taking turns in short windows lets the noise of a shared machine fall on each endpoint
    alike; each rate is the total of its requests over the total of its windows.
    """
    totals: dict[str, list[float]] = {}
    port = free_port()
    with (
        process(str(ROOT / "benchmarks" / "empty_app.py"), str(port), port=port, health="/empty"),
        tempfile.TemporaryDirectory() as folder,
        tidegate(Path(folder)) as tg_port,
    ):
        job = httpx.post(f"http://127.0.0.1:{tg_port}{BASE}", json={"name": "probe", "type": "JOB_TYPE_BATCH"}).json()
        body = lambda n: json.dumps({"name": f"job-{n}", "type": 1, "labels": {"bench": "yes"}}).encode()  # noqa: E731
        cases = {
            "empty GET": (port, loadgen.get("/empty")),
            "GetJob": (tg_port, loadgen.get(f"{BASE}/{job['id']}?%24alt=json%3Benum-encoding%3Dint")),
            "empty POST": (port, loadgen.post("/empty", lambda n: b'{"name": "x"}')),
            "CreateJob": (tg_port, loadgen.post(BASE, body)),
        }
        window = seconds / rounds
        for n in range(rounds):
            for name, (target, factory) in cases.items():
                # a round's CreateJob windows must not repeat names: offset the counter per round
                made = factory if name != "CreateJob" else (lambda f, k: lambda i: f(i + k * 1_000_000))(factory, n)
                rate, errors = loadgen.rate(target, made, clients, window)
                assert errors == 0, f"{errors} {name} errors"
                totals.setdefault(name, []).append(rate)
    return {name: statistics.fmean(rates) for name, rates in totals.items()}


def fill(data_dir: Path, count: int) -> None:
    """Store ``count`` jobs, one in four of them ended, through the service."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{data_dir / 'tidegate.db'}")
    store.migrate()
    service = JobService(store)
    for n in range(count):
        job = service.create_job(NewJob("bench", "us-central1", f"job-{n}", JobType.JOB_TYPE_BATCH, b""))
        if n % 4 == 0:
            service.update_job("bench", None, job.id, requested_state=JobState.JOB_STATE_CANCELLED)
    store.close()


def page_params(client: httpx.Client, list_filter: str, deep: bool) -> dict[str, str]:
    """The query of one page of 50: the first, or the fifth (four page tokens in)."""
    params = {"filter": list_filter, "pageSize": "50"}
    if deep:
        for _ in range(4):
            params["pageToken"] = client.get(BASE, params=params).json()["nextPageToken"]
    return params


def timed_page(client: httpx.Client, params: dict[str, str]) -> float:
    start = time.perf_counter()
    response = client.get(BASE, params=params)
    elapsed = (time.perf_counter() - start) * 1000
    assert response.status_code == 200 and len(response.json()["jobs"]) == 50
    return elapsed


def list_latency(small: int, large: int, samples: int = 200) -> dict[str, tuple[float, float]]:
    """Median ms per page, per case, for ``small`` and ``large`` jobs stored.

    Both servers run at once and the samples alternate between them, so the noise of a
    shared machine falls on both sides alike.
    """
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for count in (small, large):
            started = time.perf_counter()
            fill(Path(folder) / str(count), count)
            print(f"  stored {count} jobs in {time.perf_counter() - started:.1f} s", flush=True)
        with (
            tidegate(Path(folder) / str(small)) as small_port,
            tidegate(Path(folder) / str(large)) as large_port,
            httpx.Client(base_url=f"http://127.0.0.1:{small_port}") as small_client,
            httpx.Client(base_url=f"http://127.0.0.1:{large_port}") as large_client,
        ):
            for list_filter in ("ALL", "ACTIVE", "TERMINATED"):
                for deep in (False, True):
                    small_params = page_params(small_client, list_filter, deep)
                    large_params = page_params(large_client, list_filter, deep)
                    small_ms, large_ms = [], []
                    for _ in range(samples):
                        small_ms.append(timed_page(small_client, small_params))
                        large_ms.append(timed_page(large_client, large_params))
                    key = f"{list_filter} {'deep' if deep else 'first'}"
                    results[key] = (statistics.median(small_ms), statistics.median(large_ms))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    print(f"bench_rest {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {args.clients} clients")

    rates = throughput(args.seconds, args.clients)
    print("\nthroughput (requests/s)")
    for name, value in rates.items():
        print(f"  {name:<11} {value:9.0f}")
    for call, empty, target in (("GetJob", "empty GET", 0.7), ("CreateJob", "empty POST", 0.3)):
        ratio = rates[call] / rates[empty]
        verdict = "met" if ratio >= target else "MISSED"
        print(f"  {call + ' / ' + empty:<22} = {ratio:.2f}  (target >= {target:.2f}: {verdict})")

    print(f"\nListJobs page of 50, median ms: 1,000 vs {args.jobs:,} jobs stored")
    worst = 0.0
    for key, (small, large) in list_latency(1_000, args.jobs).items():
        ratio = large / small
        worst = max(worst, ratio)
        print(f"  {key:<16} {small:7.2f} {large:7.2f}  ratio {ratio:.2f}")
    print(f"  worst ratio = {worst:.2f}  (target <= 1.50: {'met' if worst <= 1.5 else 'MISSED'})")


if __name__ == "__main__":
    main()

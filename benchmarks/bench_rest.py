"""REST throughput and list latency on SQLite.

    .venv/bin/python benchmarks/bench_rest.py [--seconds 5] [--clients 32] [--jobs 100000]

Prints, from one run:
- GetJob and CreateJob requests/s with 32 concurrent clients, next to the same server
  framework's rate for an endpoint doing no work (GET and POST), and their ratios
  (target: GetJob at least 0.5 of the empty endpoint);
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
from tidegate.service import JobService
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
    args = ["-m", "tidegate.cli", "server", "--engines", "none", "--grpc-port", "0", "--port", str(port)]
    args += ["--data-dir", str(data_dir)]
    with process(*args, port=port, health="/healthz"):
        yield port


def throughput(seconds: float, clients: int) -> dict[str, float]:
    results: dict[str, float] = {}
    port = free_port()
    with process(str(ROOT / "benchmarks" / "empty_app.py"), str(port), port=port, health="/empty"):
        results["empty GET"], _ = loadgen.rate(port, loadgen.get("/empty"), clients, seconds)
        results["empty POST"], _ = loadgen.rate(
            port, loadgen.post("/empty", lambda n: b'{"name": "x"}'), clients, seconds
        )
    with tempfile.TemporaryDirectory() as folder, tidegate(Path(folder)) as port:
        job = httpx.post(f"http://127.0.0.1:{port}{BASE}", json={"name": "probe", "type": "JOB_TYPE_BATCH"}).json()
        results["GetJob"], errors = loadgen.rate(
            port, loadgen.get(f"{BASE}/{job['id']}?%24alt=json%3Benum-encoding%3Dint"), clients, seconds
        )
        assert errors == 0, f"{errors} GetJob errors"
        body = lambda n: json.dumps({"name": f"job-{n}", "type": 1, "labels": {"bench": "yes"}}).encode()  # noqa: E731
        results["CreateJob"], errors = loadgen.rate(port, loadgen.post(BASE, body), clients, seconds)
        assert errors == 0, f"{errors} CreateJob errors"
    return results


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


def page_latency(port: int, list_filter: str, deep: bool, samples: int = 30) -> float:
    """Median milliseconds to fetch one page of 50 (the first, or the fifth)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        params = {"filter": list_filter, "pageSize": "50"}
        if deep:
            for _ in range(4):
                params["pageToken"] = client.get(BASE, params=params).json()["nextPageToken"]
        timings = []
        for _ in range(samples):
            start = time.perf_counter()
            response = client.get(BASE, params=params)
            timings.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200 and len(response.json()["jobs"]) == 50
        return statistics.median(timings)


def list_latency(small: int, large: int) -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for count in (small, large):
            started = time.perf_counter()
            fill(Path(folder) / str(count), count)
            print(f"  stored {count} jobs in {time.perf_counter() - started:.1f} s", flush=True)
        cases = [(f, d) for f in ("ALL", "ACTIVE", "TERMINATED") for d in (False, True)]
        measured: dict[int, dict[str, float]] = {}
        for count in (small, large):
            with tidegate(Path(folder) / str(count)) as port:
                measured[count] = {f"{f} {'deep' if d else 'first'}": page_latency(port, f, d) for f, d in cases}
        for key in measured[small]:
            results[key] = (measured[small][key], measured[large][key])
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
    get_ratio = rates["GetJob"] / rates["empty GET"]
    create_ratio = rates["CreateJob"] / rates["empty POST"]
    print(f"  GetJob / empty GET     = {get_ratio:.2f}  (target >= 0.50: {'met' if get_ratio >= 0.5 else 'MISSED'})")
    print(f"  CreateJob / empty POST = {create_ratio:.2f}")

    print(f"\nListJobs page of 50, median ms: 1,000 vs {args.jobs:,} jobs stored")
    worst = 0.0
    for key, (small, large) in list_latency(1_000, args.jobs).items():
        ratio = large / small
        worst = max(worst, ratio)
        print(f"  {key:<16} {small:7.2f} {large:7.2f}  ratio {ratio:.2f}")
    print(f"  worst ratio = {worst:.2f}  (target <= 1.50: {'met' if worst <= 1.5 else 'MISSED'})")


if __name__ == "__main__":
    main()

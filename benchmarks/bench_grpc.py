"""GetJob and CreateJob throughput over gRPC against REST, in the same run, on one server.

    .venv/bin/python benchmarks/bench_grpc.py [--seconds 5] [--clients 32] [--channels 4]

Starts one ``tidegate server`` (SQLite) with both APIs and measures each call over
each transport with ``--clients`` concurrent clients: REST with the HTTP/1.1 load
generator (one keep-alive connection per client), gRPC with ``grpc.aio`` stubs
(``--clients`` concurrent tasks spread over ``--channels`` HTTP/2 channels). Prints
requests/s, the gRPC/REST ratio, and the server's CPU time per request (from
``/proc``), which stays meaningful when the load generator competes for the cores.

Baselines, measured the same way: an endpoint doing no work on each framework (the
REST one of ``empty_app.py``; a gRPC ``GetJob`` answering a constant job on the same
``grpc.aio`` server tidegate uses, served by this script with ``--serve-empty``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
from google.cloud import dataflow_v1beta3 as dataflow

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen
from bench_rest import PYTHON, ROOT, free_port

PROJECT, LOCATION = "bench", "us-central1"
BASE = f"/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs"
JOBS = "/google.dataflow.v1beta3.JobsV1Beta3"
JobPb: Any = dataflow.Job.pb()
GetJobRequestPb: Any = dataflow.GetJobRequest.pb()
CreateJobRequestPb: Any = dataflow.CreateJobRequest.pb()


@dataclass(frozen=True)
class Server:
    """A running ``tidegate server``: its process id and ports."""

    pid: int
    port: int
    grpc_port: int


def _wait_http(proc: subprocess.Popen[bytes], url: str) -> None:
    for _ in range(400):
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")


@contextmanager
def started(args: list[str], health: str = "", grpc_port: int = 0) -> Iterator[int]:
    """A Python process, once it answers ``health`` over HTTP and its gRPC port is ready; yields its pid."""
    proc = subprocess.Popen([PYTHON, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if health:
            _wait_http(proc, health)
        if grpc_port:
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=15)
        yield proc.pid
    finally:
        proc.terminate()
        proc.wait(15)


@contextmanager
def tidegate(data_dir: Path) -> Iterator[Server]:
    """A ``tidegate server`` with REST and gRPC, ready for both."""
    port, grpc_port = free_port(), free_port()
    args = ["-m", "tidegate.cli", "server", "--engines", "none", "--port", str(port), "--grpc-port", str(grpc_port)]
    args += ["--job-port", "0"]
    with started([*args, "--data-dir", str(data_dir)], f"http://127.0.0.1:{port}/healthz", grpc_port) as pid:
        yield Server(pid, port, grpc_port)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Result:
    """One measurement."""

    rate: float
    """Requests per second."""
    server_cpu_us: float
    """Server CPU microseconds per request."""
    client_cpu_us: float
    """Load generator CPU microseconds per request."""


def measure(pid: int, run: Callable[[], tuple[float, int, float]], what: str) -> Result:
    """Run one measurement: ``run()`` gives (requests/s, errors, seconds)."""
    server_before, client_before = cpu_seconds(pid), time.process_time()
    rate, errors, seconds = run()
    server_cpu, client_cpu = cpu_seconds(pid) - server_before, time.process_time() - client_before
    assert errors == 0, f"{errors} errors in {what}"
    count = max(rate * seconds, 1.0)
    return Result(rate, server_cpu / count * 1e6, client_cpu / count * 1e6)


# -- REST --------------------------------------------------------------------------------


def rest(port: int, factory: loadgen.RequestFactory, clients: int, seconds: float) -> tuple[float, int, float]:
    """REST load: (requests/s, errors, seconds)."""
    rate, errors = loadgen.rate(port, factory, clients, seconds)
    return rate, errors, seconds


# -- gRPC --------------------------------------------------------------------------------

Call = Callable[[int], Awaitable[Any]]


async def _grpc_worker(call: Call, deadline: float, wid: int, counter: list[int], errors: list[int]) -> None:
    n = wid * 10_000_000
    while time.perf_counter() < deadline:
        try:
            await call(n)
        except grpc.aio.AioRpcError:
            errors[0] += 1
        n += 1
        counter[0] += 1


async def _grpc_run(
    grpc_port: int, make: Callable[[grpc.aio.Channel], Call], clients: int, channels: int, seconds: float
) -> tuple[float, int, float]:
    opened = [grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") for _ in range(channels)]
    try:
        calls = [make(channel) for channel in opened]
        counter, errors = [0], [0]
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(_grpc_worker(calls[i % channels], deadline, i, counter, errors) for i in range(clients)))
        elapsed = time.perf_counter() - start
        return counter[0] / elapsed, errors[0], elapsed
    finally:
        for channel in opened:
            await channel.close()


def grpc_get(job_id: str) -> Callable[[grpc.aio.Channel], Call]:
    """GetJob of one job, over a channel."""
    request = GetJobRequestPb(project_id=PROJECT, location=LOCATION, job_id=job_id)

    def make(channel: grpc.aio.Channel) -> Call:
        stub = channel.unary_unary(
            f"{JOBS}/GetJob",
            request_serializer=GetJobRequestPb.SerializeToString,
            response_deserializer=JobPb.FromString,
        )
        return lambda n: stub(request)

    return make


def grpc_create(channel: grpc.aio.Channel) -> Call:
    """CreateJob of a new batch job (a fresh name each call), over a channel."""
    stub = channel.unary_unary(
        f"{JOBS}/CreateJob",
        request_serializer=CreateJobRequestPb.SerializeToString,
        response_deserializer=JobPb.FromString,
    )

    def call(n: int) -> Awaitable[Any]:
        job = JobPb(name=f"grpc-{n}", type_=1, labels={"bench": "yes"})
        return stub(CreateJobRequestPb(project_id=PROJECT, location=LOCATION, job=job))  # type: ignore[no-any-return]

    return call


def grpc_load(
    grpc_port: int, make: Callable[[grpc.aio.Channel], Call], clients: int, channels: int, seconds: float
) -> Callable[[], tuple[float, int, float]]:
    """gRPC load: ``clients`` concurrent tasks over ``channels`` channels; gives (requests/s, errors, seconds)."""
    return lambda: asyncio.run(_grpc_run(grpc_port, make, clients, channels, seconds))


# -- the baselines -----------------------------------------------------------------------


def serve_empty(port: int) -> None:
    """A gRPC server whose GetJob does no work: the framework's own cost per call."""

    async def get_job(request: Any, context: grpc.aio.ServicerContext) -> Any:
        return JobPb(id=request.job_id)

    async def serve() -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            get_job, request_deserializer=GetJobRequestPb.FromString, response_serializer=JobPb.SerializeToString
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(JOBS[1:], {"GetJob": handler})])
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


def baselines(seconds: float, clients: int, channels: int) -> dict[str, Result]:
    """Requests/s and CPU of the endpoints doing no work, REST and gRPC."""
    results: dict[str, Result] = {}
    port = free_port()
    with started([str(ROOT / "benchmarks" / "empty_app.py"), str(port)], f"http://127.0.0.1:{port}/empty") as pid:
        empty = loadgen.get("/empty")
        rest(port, empty, clients, 0.5)
        results["REST"] = measure(pid, lambda: rest(port, empty, clients, seconds), "empty GET")
    port = free_port()
    with started([__file__, "--serve-empty", str(port)], grpc_port=port) as pid:
        grpc_load(port, grpc_get("x"), clients, channels, 0.5)()
        results["gRPC"] = measure(pid, grpc_load(port, grpc_get("x"), clients, channels, seconds), "empty gRPC")
    return results


# -- the run -----------------------------------------------------------------------------


def run(seconds: float, clients: int, channels: int) -> dict[str, dict[str, Result]]:
    """GetJob and CreateJob over REST and gRPC against one tidegate server."""
    results: dict[str, dict[str, Result]] = {"GetJob": {}, "CreateJob": {}}
    with tempfile.TemporaryDirectory() as folder, tidegate(Path(folder)) as server:
        probe = httpx.post(f"http://127.0.0.1:{server.port}{BASE}", json={"name": "probe", "type": "JOB_TYPE_BATCH"})
        job_id = probe.json()["id"]
        rest_get = loadgen.get(f"{BASE}/{job_id}?%24alt=json%3Benum-encoding%3Dint")
        rest_body = lambda n: f'{{"name": "rest-{n}", "type": 1, "labels": {{"bench": "yes"}}}}'.encode()  # noqa: E731
        rest_create = loadgen.post(BASE, rest_body)
        # Warm both paths up (connections, caches, the thread pool) before measuring.
        rest(server.port, rest_get, clients, 0.5)
        grpc_load(server.grpc_port, grpc_get(job_id), clients, channels, 0.5)()
        pid = server.pid
        results["GetJob"]["REST"] = measure(pid, lambda: rest(server.port, rest_get, clients, seconds), "REST GetJob")
        results["GetJob"]["gRPC"] = measure(
            pid, grpc_load(server.grpc_port, grpc_get(job_id), clients, channels, seconds), "gRPC GetJob"
        )
        results["CreateJob"]["REST"] = measure(
            pid, lambda: rest(server.port, rest_create, clients, seconds), "REST CreateJob"
        )
        results["CreateJob"]["gRPC"] = measure(
            pid, grpc_load(server.grpc_port, grpc_create, clients, channels, seconds), "gRPC CreateJob"
        )
    return results


def _row(call: str, transport: str, result: Result) -> str:
    return (
        f"  {call:<10} {transport:<9} {result.rate:8.0f} {result.server_cpu_us:12.0f} us"
        f" {result.client_cpu_us:12.0f} us"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels the clients share")
    parser.add_argument("--serve-empty", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_empty:
        serve_empty(args.serve_empty)
        return
    print(
        f"bench_grpc {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {args.clients} clients"
        f" ({args.channels} gRPC channels), {args.seconds:g} s per measurement, SQLite"
    )
    results = run(args.seconds, args.clients, args.channels)
    empty = baselines(args.seconds, args.clients, args.channels)
    print(f"\n  {'call':<10} {'transport':<9} {'req/s':>8} {'server CPU/req':>15} {'client CPU/req':>15}")
    for call, by_transport in results.items():
        for transport, result in by_transport.items():
            print(_row(call, transport, result))
    for transport, result in empty.items():
        print(_row("empty", transport, result))
    print()
    for call, by_transport in results.items():
        grpc_, rest_ = by_transport["gRPC"], by_transport["REST"]
        print(
            f"  {call:<10} gRPC/REST: requests/s {grpc_.rate / rest_.rate:.2f},"
            f" server CPU per request {grpc_.server_cpu_us / rest_.server_cpu_us:.2f}"
        )
    for transport in ("REST", "gRPC"):
        get = results["GetJob"][transport]
        print(
            f"  GetJob / empty endpoint, {transport:<4}: requests/s {get.rate / empty[transport].rate:.2f},"
            f" server CPU per request {get.server_cpu_us / empty[transport].server_cpu_us:.2f}"
        )


if __name__ == "__main__":
    main()

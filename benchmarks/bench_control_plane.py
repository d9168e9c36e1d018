"""The control plane's transitions per second and latency, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/bench_control_plane.py [--seconds 4] [--clients 1,8,32] [--database-url URL]

Each client runs rounds of two transitions over REST, as a user's script would: a
CreateJob held in STOPPED (the create's STOPPED edge), then a cancel (STOPPED →
CANCELLED). ``tidegate server --engines none`` serves it, on SQLite (its data directory)
and on PostgreSQL (a fresh schema), at 1, 8 and 32 clients, and with two servers
sharing one PostgreSQL database (the clients split between them). Printed next to each:
the same server's empty endpoint (``/healthz``) in the same run, at the same clients,
which is what the framework alone costs. Sides take turns in short windows, so the noise
of a shared machine falls on all alike.

Targets (issue "The control plane at full speed"): at 32 clients, at least 3,500
transitions/s on SQLite and 2,000 on PostgreSQL, with a p99 under 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvloop

ROOT = Path(__file__).resolve().parent.parent
BASE = "/v1b3/projects/bench/locations/us-central1/jobs"
TARGETS = {"sqlite": 3500.0, "postgresql": 2000.0}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(data_dir: Path, database_url: str = "") -> Iterator[int]:
    port = free_port()
    command = [sys.executable, "-m", "tidegate.cli", "server", "--engines", "none", "--grpc-port", "0"]
    command += ["--job-port", "0", "--port", str(port), "--data-dir", str(data_dir)]
    command += ["--database-url", database_url] if database_url else []
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(400):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        yield port
    finally:
        proc.terminate()
        proc.wait(20)


@contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    import psycopg

    schema = f"tg_bench_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@dataclass
class Tally:
    """What one window measured: completed operations and each one's latency (seconds)."""

    done: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return int(head[9:12]), body


def _request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _transitions(port: int, wid: int, deadline: float, tally: Tally) -> None:
    """Rounds of a held create and a cancel: two transitions, each timed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while time.perf_counter() < deadline:
            n += 1
            name = f"w{wid}-{n}-{secrets.token_hex(3)}"
            create = json.dumps({"name": name, "type": 1, "requestedState": 1}).encode()
            started = time.perf_counter()
            status, body = await _exchange(reader, writer, _request("POST", f"{BASE}?%24alt=json", create))
            tally.latencies.append(time.perf_counter() - started)
            if status != 200:
                tally.errors += 1
                continue
            job_id = json.loads(body)["id"]
            started = time.perf_counter()
            cancel = b'{"requestedState": 5}'
            status, _ = await _exchange(reader, writer, _request("PUT", f"{BASE}/{job_id}?%24alt=json", cancel))
            tally.latencies.append(time.perf_counter() - started)
            tally.done += 2 if status == 200 else 1
            tally.errors += status != 200
    finally:
        writer.close()


async def _empty(port: int, wid: int, deadline: float, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, _ = await _exchange(reader, writer, request)
            tally.latencies.append(time.perf_counter() - started)
            tally.done += 1
            tally.errors += status != 200
    finally:
        writer.close()


def window(kind: str, ports: list[int], clients: int, seconds: float) -> Tally:
    """One window of ``clients`` connections spread over ``ports``."""
    tally = Tally()
    work = _transitions if kind == "transitions" else _empty

    async def run() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(work(ports[i % len(ports)], i, deadline, tally) for i in range(clients)))

    started = time.perf_counter()
    uvloop.run(run())
    tally.seconds = time.perf_counter() - started
    return tally


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def measure(name: str, ports: list[int], clients: list[int], seconds: float, rounds: int) -> list[str]:
    rows = []
    for count in clients:
        kept: dict[str, Tally] = {"transitions": Tally(), "empty": Tally()}
        for _ in range(rounds):  # the two sides take turns
            for kind in kept:
                got = window(kind, ports, count, seconds / rounds)
                kept[kind].done += got.done
                kept[kind].errors += got.errors
                kept[kind].latencies += got.latencies
                kept[kind].seconds += got.seconds
        moves, empty = kept["transitions"], kept["empty"]
        rate, empty_rate = moves.done / moves.seconds, empty.done / empty.seconds
        p50, p99 = percentile(moves.latencies, 0.5) * 1000, percentile(moves.latencies, 0.99) * 1000
        verdict = ""
        if count == 32 and name.split()[0] in TARGETS:
            met = rate >= TARGETS[name.split()[0]] and p99 < 20
            verdict = f"  target {TARGETS[name.split()[0]]:,.0f}/s, p99 < 20 ms: {'met' if met else 'MISSED'}"
        rows.append(
            f"  {name:<22} {count:>3} clients  {rate:8.0f} transitions/s  p50 {p50:6.2f} ms  p99 {p99:7.2f} ms"
            f"   empty endpoint {empty_rate:8.0f} req/s  (ratio {rate / empty_rate:.2f})"
            f"{'  ERRORS ' + str(moves.errors + empty.errors) if moves.errors + empty.errors else ''}{verdict}"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="per case and side, split into --rounds windows")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--database-url", default=os.environ.get("TIDEGATE_TEST_POSTGRES_URL", ""))
    parser.add_argument("--only", default="sqlite,postgresql,two-servers")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    only = set(args.only.split(","))
    url = (
        args.database_url
        or subprocess.run(
            ["bash", str(ROOT / "scripts" / "ensure-postgres")], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    print(
        f"bench_control_plane {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores,"
        f" {args.seconds:g} s per case and side in {args.rounds} windows",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as folder:
        if "sqlite" in only:
            with server(Path(folder) / "sqlite") as port:
                measure("sqlite", [port], clients, args.seconds, args.rounds)
        if "postgresql" in only:
            with postgres_schema(url) as schema_url, server(Path(folder) / "pg", schema_url) as port:
                measure("postgresql", [port], clients, args.seconds, args.rounds)
        if "two-servers" in only:
            with postgres_schema(url) as schema_url, ExitStack() as stack:
                ports = [stack.enter_context(server(Path(folder) / f"pg-{i}", schema_url)) for i in range(2)]
                measure("postgresql, 2 servers", ports, clients, args.seconds, args.rounds)


if __name__ == "__main__":
    main()

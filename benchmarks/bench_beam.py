"""Beam batch jobs through tidegate, against Beam run directly, in one run.

    .venv/bin/python benchmarks/bench_beam.py [--lines 400000] [--rounds 2] [--latency-runs 20] [--gap 2]

Prints:
- a word count of at least 10 seconds: its wall time run directly with Beam (the
  DirectRunner, in the client environment) and submitted to tidegate with Beam's own
  DataflowRunner (from submission to DONE), and their ratio (target: at most 1.15);
- create-to-RUNNING and cancel-to-CANCELLED latencies over REST, median and worst of 20,
  with jobs a few seconds apart and back to back (a job that follows another at once
  may find the next warm Beam process still importing Beam).
Needs the client environment of ``scripts/setup-beam-client``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rest import free_port, process

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / ".beam-client-venv" / "bin" / "python"
WORDCOUNT = ROOT / "tests" / "acceptance" / "beam_pipelines" / "wordcount.py"
WORDS = [f"w{n}" for n in range(5000)]


def write_text(path: Path, lines: int) -> None:
    rng = random.Random(7)
    with path.open("w") as out:
        for _ in range(lines):
            out.write(" ".join(rng.choices(WORDS, k=12)) + "\n")


def timed(command: list[str]) -> tuple[float, datetime, str]:
    """Wall seconds of a command, when it started (UTC), and the last line it printed."""
    started = datetime.now(UTC)
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=1800)
    return time.perf_counter() - start, started, done.stdout.strip().splitlines()[-1]


def done_at(base: str, job_id: str) -> datetime:
    """When tidegate put the job in JOB_STATE_DONE."""
    path = f"{base}/tidegate/v1/projects/bench/locations/us-central1/jobs/{job_id}/history"
    history = httpx.get(path).json()["stateHistory"]
    assert history[-1]["toState"] == "JOB_STATE_DONE", history[-1]
    return datetime.fromisoformat(history[-1]["time"])


def slow_pipeline(path: Path) -> None:
    """A one-element pipeline that sleeps: it is RUNNING until cancelled."""
    import apache_beam as beam

    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([1]) | "Sleep" >> beam.Map(lambda x: time.sleep(600))
    path.write_bytes(pipeline.to_runner_api().SerializeToString())


def wait_for(client: httpx.Client, path: str, state: str, timeout: float = 120) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if client.get(path).json().get("currentState") == state:
            return
        time.sleep(0.01)
    raise TimeoutError(f"{path} did not reach {state}")


def latencies(base: str, staged: Path, runs: int, gap: float = 0.0) -> tuple[list[float], list[float]]:
    """Create-to-RUNNING and cancel-to-CANCELLED seconds of ``runs`` jobs, one after another, ``gap`` s apart."""
    to_running: list[float] = []
    to_cancelled: list[float] = []
    jobs = "/v1b3/projects/bench/locations/us-central1/jobs"
    options = {"options": {"pipelineUrl": str(staged)}}
    with httpx.Client(base_url=base, timeout=30) as client:
        for n in range(runs):
            start = time.perf_counter()
            body = {"name": f"latency-{n}", "type": "JOB_TYPE_BATCH", "environment": {"sdkPipelineOptions": options}}
            job = client.post(jobs, json=body).json()
            wait_for(client, f"{jobs}/{job['id']}", "JOB_STATE_RUNNING")
            to_running.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.put(f"{jobs}/{job['id']}", json={"requestedState": "JOB_STATE_CANCELLED"})
            wait_for(client, f"{jobs}/{job['id']}", "JOB_STATE_CANCELLED")
            to_cancelled.append(time.perf_counter() - start)
            time.sleep(gap)
    return to_running, to_cancelled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=400_000)
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--gap", type=float, default=2.0, help="seconds between latency runs (then none)")
    parser.add_argument("--rounds", type=int, default=2, help="word counts each way, taking turns")
    args = parser.parse_args()
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-beam-client")], check=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = work / "input.txt"
        write_text(source, args.lines)
        port = free_port()
        server = [
            "-m", "tidegate.cli", "server", "--port", str(port), "--grpc-port", "0", "--job-port", "0",
            "--data-dir", str(work / "data"), "--max-jobs", "0", "--staging-root", str(work),
        ]  # fmt: skip
        with process(*server, port=port, health="/healthz"):
            (work / "staging").mkdir()
            dataflow = [
                "--runner=DataflowRunner", f"--dataflow_endpoint=http://localhost:{port}", "--no_auth",
                "--project=bench", "--region=us-central1", f"--temp_location={work / 'staging'}",
            ]  # fmt: skip
            directs: list[float] = []
            throughs: list[float] = []
            seen: list[float] = []
            same = True
            for n in range(args.rounds):  # taking turns: a shared machine's noise falls on both sides
                direct_out, tg_out = work / f"direct-{n}.txt", work / f"tg-{n}.txt"
                direct, _, _ = timed([str(CLIENT), str(WORDCOUNT), f"--input={source}", f"--output={direct_out}"])
                command = [str(CLIENT), str(WORDCOUNT), f"--input={source}", f"--output={tg_out}", *dataflow]
                seen_by_client, started, last = timed(command)
                through = (done_at(f"http://127.0.0.1:{port}", json.loads(last)["job_id"]) - started).total_seconds()
                same = same and sorted(direct_out.read_text().splitlines()) == sorted(tg_out.read_text().splitlines())
                print(f"  round {n + 1}: direct {direct:6.2f} s, through tidegate {through:6.2f} s", flush=True)
                directs.append(direct)
                throughs.append(through)
                seen.append(seen_by_client)
            slow_pipeline(work / "slow.pb")
            base = f"http://127.0.0.1:{port}"
            spaced = latencies(base, work / "slow.pb", args.latency_runs, gap=args.gap)
            back_to_back = latencies(base, work / "slow.pb", args.latency_runs)
    direct, through = statistics.fmean(directs), statistics.fmean(throughs)
    ratio = through / direct
    print(f"word count of {args.lines:,} lines, mean of {args.rounds} rounds (outputs equal: {same})")
    print(f"  Beam directly (DirectRunner)                        {direct:7.2f} s")
    print(f"  through tidegate: client start to the job's DONE    {through:7.2f} s")
    client_saw = statistics.fmean(seen)
    print(f"  through tidegate: as the client saw it              {client_saw:7.2f} s  (it polls every 5 s)")
    verdict = "met" if ratio <= 1.15 else "MISSED"
    print(f"  ratio {ratio:.2f}  (target <= 1.15: {verdict}; the direct run took >= 10 s: {min(directs) >= 10})")
    for series, (running, cancelled) in ((f"{args.gap:g} s apart", spaced), ("back to back", back_to_back)):
        for name, values in (("create -> RUNNING", running), ("cancel -> CANCELLED", cancelled)):
            median, worst = statistics.median(values), max(values)
            print(f"{name:<20} {series:<13} median {median:6.3f} s   worst {worst:6.3f} s   ({len(values)} runs)")


if __name__ == "__main__":
    main()

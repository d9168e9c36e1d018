"""In-place rescaling through tidegate (UpdateJob) against Flink's own REST API, on one Flink cluster in one run.

    .venv/bin/python benchmarks/bench_rescale.py [--reps 2] [--poll 0.1] [--rate 20]

One local Flink cluster (adaptive scheduler, 4 slots) serves both sides, with the keyed
windowed job of ``bench_flink`` started at parallelism 1 on each:

- tidegate: UpdateJob with ``updateMask=runtime_updatable_params.max_num_workers`` through
  the Dataflow REST API, then ListJobMessages until its ``autoscalingEvents`` hold the
  CURRENT_NUM_WORKERS_CHANGED event (what a Dataflow client can see);
- directly: ``PUT /jobs/:id/resource-requirements`` with the same bounds, then Flink's REST
  API until every vertex has the new parallelism and every task runs.

Each repetition on each side rescales 1 -> 3, then 3 -> 1, then cancels. Besides each
side's own view, the Flink-side time (every vertex at the target, every task running,
polled on Flink's REST API by the benchmark) is printed for both, so the two differ only by
what tidegate adds. Most of the time is Flink's: it restarts the job from its latest
checkpoint at the new parallelism once it has the slots.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_flink import JOBS, ROOT, Direct, Tidegate, tidegate_server, until
from bench_rest import free_port

from tidegate.engines.flink_cluster import find_flink_home, flink_python
from tidegate.engines.flink_local import LocalFlinkCluster

METRICS = ("1 -> 3", "3 -> 1")


def at_parallelism(rest: httpx.Client, flink_job: str, wanted: int) -> bool:
    """Every vertex of the Flink job at ``wanted`` and every task running (Flink's uncached overview)."""
    job = rest.get(f"/jobs/{flink_job}").json()
    if {int(v["parallelism"]) for v in job.get("vertices", [])} != {wanted}:
        return False
    for found in rest.get("/jobs/overview").json()["jobs"]:
        if found["jid"] == flink_job:
            tasks = found["tasks"]
            return bool(found["state"] == "RUNNING" and 0 < tasks["running"] == tasks["total"])
    return False


def rescale_tidegate(
    side: Tidegate, rest: httpx.Client, job: str, flink_job: str, wanted: int, poll: float
) -> tuple[float, float]:
    """UpdateJob, then (seconds until Flink runs it at ``wanted``, seconds until tidegate's event says so)."""
    events = len(side.client.get(f"{JOBS}/{job}/messages").json().get("autoscalingEvents", []))
    start = time.perf_counter()
    response = side.client.put(
        f"{JOBS}/{job}",
        params={"updateMask": "runtime_updatable_params.max_num_workers,runtime_updatable_params.min_num_workers"},
        json={"runtimeUpdatableParams": {"maxNumWorkers": wanted, "minNumWorkers": 1}},
    )
    if response.status_code != 200:
        raise RuntimeError(f"UpdateJob answered {response.status_code}: {response.text}")
    flink_seen = 0.0

    def reached() -> bool:
        nonlocal flink_seen
        if not flink_seen and at_parallelism(rest, flink_job, wanted):
            flink_seen = time.perf_counter() - start
        got = side.client.get(f"{JOBS}/{job}/messages").json().get("autoscalingEvents", [])[events:]
        failed = [e for e in got if e["eventType"] == "ACTUATION_FAILURE"]
        if failed:
            raise RuntimeError(f"tidegate recorded {failed}")
        return any(e["eventType"] == "CURRENT_NUM_WORKERS_CHANGED" for e in got)

    until(reached, poll, 300, f"tidegate job {job} at {wanted} workers")
    return flink_seen or time.perf_counter() - start, time.perf_counter() - start


def rescale_direct(rest: httpx.Client, flink_job: str, wanted: int, poll: float) -> float:
    start = time.perf_counter()
    vertices = [v["id"] for v in rest.get(f"/jobs/{flink_job}").json()["vertices"]]
    body = {v: {"parallelism": {"lowerBound": 1, "upperBound": wanted}} for v in vertices}
    rest.put(f"/jobs/{flink_job}/resource-requirements", json=body).raise_for_status()
    until(lambda: at_parallelism(rest, flink_job, wanted), poll, 300, f"Flink job {flink_job} at {wanted}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=2, help="repetitions per side (each: one job, two rescales)")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between polls, on both sides")
    parser.add_argument("--rate", type=int, default=20, help="records a second the job's source emits")
    args = parser.parse_args()
    setup = subprocess.run(["bash", str(ROOT / "scripts" / "setup-flink")], check=True, capture_output=True, text=True)
    venv = Path(setup.stdout.strip().splitlines()[-1])
    print(
        f"bench_rescale {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {args.reps} repetitions"
        f" per side, polling every {args.poll} s",
        flush=True,
    )
    seen: dict[str, dict[str, list[float]]] = {
        name: {m: [] for m in METRICS} for name in ("tidegate (event)", "tidegate (Flink)", "direct (Flink)")
    }
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        cluster = LocalFlinkCluster(
            work / "flink-cluster", python=flink_python(venv), rest_port=free_port(), rpc_port=free_port()
        )
        cluster.start(find_flink_home(venv))
        direct = Direct(cluster.rest_url, venv, work, args.poll, args.rate)
        try:
            with tidegate_server(work, cluster.rest_url) as base:
                tidegate = Tidegate(base, args.poll, args.rate)
                for rep in range(args.reps):
                    for name in ("tidegate", "direct") if rep % 2 == 0 else ("direct", "tidegate"):
                        out = work / f"out-{name}-{rep}"
                        try:
                            if name == "tidegate":
                                job, _ = tidegate.submit(out, f"t{rep}")
                                flink_job = tidegate.flink_job(job)
                                for metric, wanted in zip(METRICS, (3, 1), strict=True):
                                    flink, event = rescale_tidegate(
                                        tidegate, direct.rest, job, flink_job, wanted, args.poll
                                    )
                                    seen["tidegate (Flink)"][metric].append(flink)
                                    seen["tidegate (event)"][metric].append(event)
                                    print(
                                        f"  rep {rep + 1} tidegate {metric}: Flink {flink:.1f} s, event {event:.1f} s"
                                    )
                                tidegate.cancel(job)
                            else:
                                flink_job, _ = direct.submit(out, f"d{rep}")
                                for metric, wanted in zip(METRICS, (3, 1), strict=True):
                                    took = rescale_direct(direct.rest, flink_job, wanted, args.poll)
                                    seen["direct (Flink)"][metric].append(took)
                                    print(f"  rep {rep + 1} direct   {metric}: Flink {took:.1f} s")
                                direct.cancel(flink_job)
                        except (RuntimeError, TimeoutError) as error:  # a shared machine's trouble: say so, go on
                            print(f"  rep {rep + 1} {name:<8}  FAILED: {str(error).splitlines()[0][:300]}")
        finally:
            direct.close()
            cluster.stop()
    print(f"\n{'':<20}" + "".join(f"{m:>20}" for m in METRICS))
    for name, metrics in seen.items():
        cells = [f"{statistics.median(v):8.1f} {max(v):6.1f} s" if v else f"{'no runs':>17}" for v in metrics.values()]
        print(f"{name:<20}" + "".join(f"{c:>20}" for c in cells))
    print("(median, worst; seconds from the request)")


if __name__ == "__main__":
    main()

"""In-place rescaling through Flink's adaptive scheduler, on a real local Flink cluster.

The REST calls tidegate's rescale is built on (``PUT``/``GET /jobs/:id/resource-requirements``),
with the bounds :mod:`tidegate.engines.flink_scaling` computes from ``runtimeUpdatableParams``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flink_output import read_windows, wait_windows
from tests.integration.test_flink_engine import _start_counting, _wait, local_engine
from tidegate.engines.base import EngineState
from tidegate.engines.flink import FlinkEngine
from tidegate.engines.flink_cluster import FlinkRestClient
from tidegate.engines.flink_scaling import RuntimeParams, resource_requirements

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlinkEngine]:
    """A local cluster with the adaptive scheduler and four slots (room to rescale 1 -> 3)."""
    yield from local_engine(tmp_path_factory, {"jobmanager.scheduler": "adaptive"})


def _wait_parallelism(rest: FlinkRestClient, job_id: str, wanted: int, timeout: float) -> float:
    started = time.monotonic()
    while True:
        now = rest.vertex_parallelism(job_id)
        if now and all(value == wanted for value in now.values()) and rest.tasks_running(job_id):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"parallelism {now}, wanted {wanted} after {timeout} s"
        time.sleep(0.2)


def test_a_running_job_is_rescaled_in_place(engine: FlinkEngine, tmp_path: Path) -> None:
    out = tmp_path / "out"
    handle = _start_counting(engine, tmp_path, out)
    wait_windows(out, 2)
    rest = FlinkRestClient(engine.rest_url)
    try:
        vertices = list(rest.vertex_parallelism(handle.ref))
        assert vertices
        before = rest.vertex_parallelism(handle.ref)

        body = resource_requirements(vertices, RuntimeParams(min_num_workers=1, max_num_workers=3), current=1)
        rest.set_resource_requirements(handle.ref, body)
        asked = rest.resource_requirements(handle.ref)
        assert {v: r["parallelism"]["upperBound"] for v, r in asked.items()} == dict.fromkeys(vertices, 3)
        took = _wait_parallelism(rest, handle.ref, 3, timeout=120)
        print(f"\nrescale {before} -> 3 in {took:.1f} s")
        assert engine.poll(handle).state is EngineState.RUNNING  # the same Flink job, never ended

        seen = len(read_windows(out))
        wait_windows(out, seen + 2)  # and it goes on counting at the new parallelism
    finally:
        rest.close()
    engine.cancel(handle)
    _wait(engine, handle, {EngineState.CANCELLED}, timeout=60)
    engine.release(handle)

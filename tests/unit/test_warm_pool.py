"""The warm submitter pool's hand-out: a submitter still getting ready is waited for, a stuck one replaced.

The submitter here is a stand-in process (no PyFlink) that says it is ready after a
pause given in its environment and then waits for its job, as ``flink_submitter`` does.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from tidegate.engines import flink_warm
from tidegate.engines.flink_warm import Submitter, WarmSubmitter

STAND_IN = """
import json, os, sys, time
time.sleep(float(os.environ["READY_AFTER"]))
print(json.dumps({"ready": True}), flush=True)
sys.stdin.readline()
"""


def _pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready_after: float) -> WarmSubmitter:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    monkeypatch.setattr(flink_warm, "SCRIPT", script)
    return WarmSubmitter(Path(sys.executable), lambda: {"READY_AFTER": str(ready_after)}, tmp_path / "submitters")


def test_a_job_waits_for_the_submitter_getting_ready_instead_of_going_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _pool(tmp_path, monkeypatch, ready_after=1.5)
    try:
        pool.start()
        assert pool._idle is not None and not pool._idle.ready.is_set()
        taken = pool.take()
        assert taken is not None and taken.ready.is_set() and taken.alive()
        taken.stop()
    finally:
        pool.close()


def test_of_two_jobs_at_once_one_gets_the_submitter_and_the_other_goes_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _pool(tmp_path, monkeypatch, ready_after=1.0)
    try:
        pool.start()
        got: list[Submitter | None] = []
        takers = [threading.Thread(target=lambda: got.append(pool.take())) for _ in range(2)]
        for taker in takers:
            taker.start()
        for taker in takers:
            taker.join(30)
        handed = [s for s in got if s is not None]
        assert len(got) == 2 and len(handed) == 1, got
        handed[0].stop()
    finally:
        pool.close()


def test_a_submitter_not_ready_in_time_is_replaced_and_the_job_goes_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flink_warm, "_READY_WITHIN", 1.0)
    pool = _pool(tmp_path, monkeypatch, ready_after=600)
    try:
        pool.start()
        started = time.monotonic()
        assert pool.take() is None  # waited out its time to get ready
        assert time.monotonic() - started >= 0.9
        stuck = pool._idle
        assert stuck is not None and stuck.alive()
        assert pool.take() is None  # now replaced: the stuck one is stopped, a new one starts
        assert not stuck.alive()
        assert pool._idle is not None and pool._idle is not stuck
    finally:
        pool.close()

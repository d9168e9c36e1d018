"""The warm submitter pool's hand-out: a submitter still getting ready is waited for, a stuck one replaced.

The submitter here is a stand-in process (no PyFlink) that says it is ready after a
pause given in its environment and then waits for its job, as ``flink_submitter`` does.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
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


def _pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready_after: float, size: int = 1) -> WarmSubmitter:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    monkeypatch.setattr(flink_warm, "SCRIPT", script)
    env = {"READY_AFTER": str(ready_after)}
    return WarmSubmitter(Path(sys.executable), lambda: env, tmp_path / "submitters", size)


def _taken_at_once(pool: WarmSubmitter, jobs: int) -> list[Submitter | None]:
    """What ``take`` gives ``jobs`` jobs asking at the same time."""
    got: list[Submitter | None] = []
    takers = [threading.Thread(target=lambda: got.append(pool.take())) for _ in range(jobs)]
    for taker in takers:
        taker.start()
    for taker in takers:
        taker.join(30)
    return got


def test_a_job_waits_for_the_submitter_getting_ready_instead_of_going_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _pool(tmp_path, monkeypatch, ready_after=1.5)
    try:
        pool.start()
        assert len(pool.idle) == 1 and not pool.idle[0].ready.is_set()
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
        got = _taken_at_once(pool, 2)
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
        [stuck] = pool.idle
        assert stuck.alive()
        assert pool.take() is None  # now replaced: the stuck one is stopped, a new one starts
        assert not stuck.alive()
        assert len(pool.idle) == 1 and pool.idle[0] is not stuck
    finally:
        pool.close()


def _until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.02)


def test_a_pool_of_two_starts_them_one_after_the_other_and_two_jobs_at_once_both_go_warm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = _pool(tmp_path, monkeypatch, ready_after=0.5, size=2)
    try:
        pool.start()
        assert len(pool.idle) == 1  # the second starts once the first is ready
        _until(lambda: len(pool.idle) == 2)
        first, second = pool.idle
        assert first.ready.is_set() and second.started_at >= first.started_at + 0.4
        _until(lambda: second.ready.is_set())
        got = _taken_at_once(pool, 2)
        assert len(got) == 2 and {id(s) for s in got} == {id(first), id(second)}
        assert pool.idle == []  # replacements start when the engine says (once the jobs run)
        pool.start()
        assert len(pool.idle) == 1
        _until(lambda: len(pool.idle) == 2 and all(s.ready.is_set() for s in pool.idle))
        for taken in got:
            assert taken is not None
            taken.stop()
    finally:
        pool.close()
    assert pool.idle == []


def test_a_pool_of_two_keeps_the_ready_one_when_the_other_dies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _pool(tmp_path, monkeypatch, ready_after=0.2, size=2)
    try:
        pool.start()
        _until(lambda: len(pool.idle) == 2 and all(s.ready.is_set() for s in pool.idle))
        dead, kept = pool.idle
        dead.process.kill()
        dead.process.wait()
        assert pool.take() is kept
        pool.start()  # the dead one is let go, a new one starts
        _until(lambda: len(pool.idle) == 2)
        assert dead not in pool.idle and kept not in pool.idle
        kept.stop()
    finally:
        pool.close()

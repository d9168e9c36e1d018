"""Reading what the Flink test programs (``tests/flink_jobs``) write: window results and seen elements."""

from __future__ import annotations

import time
from pathlib import Path


def read_windows(out: Path) -> list[tuple[int, int, int, int, str]]:
    """The ``key,window_end,count,total,version`` lines written so far."""
    path = out / "windows.txt"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        key, end, count, total, version = line.split(",")
        rows.append((int(key), int(end), int(count), int(total), version))
    return rows


def read_seen(out: Path) -> list[int]:
    """The elements the job's sink has seen so far."""
    path = out / "seen.txt"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def wait_windows(out: Path, count: int, timeout: float = 90) -> None:
    """Wait until ``count`` window results are written."""
    deadline = time.monotonic() + timeout
    while len(read_windows(out)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} window results after {timeout} s"
        time.sleep(0.3)

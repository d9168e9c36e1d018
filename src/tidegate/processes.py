"""Processes of this machine by pid and start time: is one still the process a record names (pids are reused)?"""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = ["HOST", "is_alive", "started"]

HOST = socket.gethostname()
"""This machine's name, as scheduler leases record it."""


def started(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of ``/proc/PID/stat``); "" if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rindex(")") + 2 :].split()
    return "" if fields[0] in ("Z", "X") else fields[19]


def is_alive(pid: int, start: str) -> bool:
    """Whether process ``pid`` of this machine runs and is the one that started at ``start``."""
    return pid > 0 and bool(start) and started(pid) == start

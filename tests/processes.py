"""Looking at processes from the tests: who is in a process group."""

from __future__ import annotations

from pathlib import Path


def members(pgid: int) -> list[int]:
    """Every process (zombies included) whose process group is ``pgid``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
                found.append(int(proc.name))
    return found

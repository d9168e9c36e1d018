"""Looking at processes from the tests: who is in a process group, who works with a path."""

from __future__ import annotations

import os
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


def mentioning(path: Path) -> list[str]:
    """Processes (but this one) whose command line names ``path`` or whose working folder is in it."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(path) in cmdline or cwd.startswith(str(path)):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def described(pids: list[int]) -> str:
    """What each of ``pids`` is: its state, parent and command line (for a failing test's message)."""
    lines = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        lines.append(f"{pid} state={fields[0]} ppid={fields[1]} wchan={wchan} {cmdline[:200]}")
    return "; ".join(lines)

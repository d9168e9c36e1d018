"""Reading a run's log files line by line, from where the last read stopped."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from tidegate.model import LogLine
from tidegate.os_user import open_untrusted

__all__ = ["tail"]

_CHUNK = 1 << 20


def tail(files: Mapping[str, Path], cursor: str, *, ended: bool) -> tuple[list[LogLine], str]:
    """The whole lines each file (``{source: path}``) gained since ``cursor``, and the cursor after them.

    The cursor is JSON (``{source: byte offset}``). A line still being written waits for its
    newline, unless the run has ``ended``; a line longer than a read (1 MiB) is cut there. A
    file that does not exist yet reads as empty.
    """
    try:
        parsed = json.loads(cursor) if cursor else {}
    except ValueError:
        parsed = {}
    offsets = {str(k): int(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {}
    lines: list[LogLine] = []
    for source, path in files.items():
        at = offsets.get(source, 0)
        try:
            with open_untrusted(path) as f:
                f.seek(at)
                chunk = f.read(_CHUNK)
        except OSError:
            continue
        end = chunk.rfind(b"\n") + 1
        if (ended and len(chunk) < _CHUNK) or (end == 0 and len(chunk) == _CHUNK):
            end = len(chunk)
        data = chunk[:end]
        lines.extend(LogLine(source, raw.decode("utf-8", "replace")) for raw in data.splitlines())
        offsets[source] = at + len(data)
    return lines, json.dumps(offsets, sort_keys=True)

"""What every command prints: tables, JSON, one-line errors, and a command that acts on several ids."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from tidegate.cli.client import EXIT_UNREACHABLE, CliError

__all__ = ["Reported", "each", "emit", "fail", "key_values", "table"]


class Reported(Exception):
    """A command's errors were printed already (one line each): exit with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def fail(message: str, code: int) -> NoReturn:
    """One line on standard error, then exit with ``code``."""
    print(f"ERROR: (tidegate) {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(code)


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """Columns two spaces apart, headers first."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in [headers, *rows]
    )


def key_values(data: dict[str, Any]) -> str:
    """``key: value`` lines (nested values as JSON), as ``describe`` shows a resource."""
    return "\n".join(f"{k}: {json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in data.items())


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.format == "json" else text)


def each(
    args: argparse.Namespace,
    ids: Sequence[str],
    act: Callable[[str], Any],
    said: Callable[[str, Any], str],
    *,
    what: str = "job",
) -> None:
    """Act on every id, each on its own: one that is refused does not keep the others from it.

    Each success is a line (``said``), each refusal an error line; with ``--format json`` the
    results are one list. The exit code is the first refusal's; an unreachable server ends
    it at once (every other id would say the same).
    """
    results, refused = [], []
    for item in ids:
        try:
            result = act(item)
        except CliError as error:
            if error.code == EXIT_UNREACHABLE:
                raise
            refused.append(error)
            print(f"ERROR: (tidegate) {what} [{item}]: {' '.join(str(error).split())}", file=sys.stderr)
            continue
        results.append(result)
        if args.format != "json":
            print(said(item, result))
    if args.format == "json":
        print(json.dumps(results, indent=2))
    if refused:
        raise Reported(refused[0].code)

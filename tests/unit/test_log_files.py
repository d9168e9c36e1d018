"""Reading a run's log files from where the last read stopped (``tidegate.engines.log_files.tail``)."""

from __future__ import annotations

from pathlib import Path

from tidegate.engines.log_files import tail
from tidegate.model import LogLine


def test_whole_lines_only_until_the_run_ends(tmp_path: Path) -> None:
    out, err = tmp_path / "out", tmp_path / "err"
    out.write_bytes(b"one\ntwo\nthr")
    lines, cursor = tail({"stdout": out, "stderr": err}, "", ended=False)  # err does not exist yet
    assert lines == [LogLine("stdout", "one"), LogLine("stdout", "two")]
    assert tail({"stdout": out, "stderr": err}, cursor, ended=False) == ([], cursor)
    with out.open("ab") as f:
        f.write(b"ee\nfour")
    err.write_bytes(b"oops \xff\n")
    lines, cursor = tail({"stdout": out, "stderr": err}, cursor, ended=False)
    assert lines == [LogLine("stdout", "three"), LogLine("stderr", "oops \ufffd")]
    lines, cursor = tail({"stdout": out, "stderr": err}, cursor, ended=True)  # the last partial line, at the end
    assert lines == [LogLine("stdout", "four")]
    assert tail({"stdout": out, "stderr": err}, cursor, ended=True) == ([], cursor)


def test_a_line_longer_than_a_read_is_cut_rather_than_stuck(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"x" * (3 << 20) + b"\nend\n")
    texts: list[str] = []
    cursor = ""
    for _ in range(6):
        lines, cursor = tail({"stdout": out}, cursor, ended=False)
        texts += [line.text for line in lines]
    assert texts[-1] == "end" and "".join(texts[:-1]) == "x" * (3 << 20)


def test_a_cursor_that_is_not_one_starts_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"a\n")
    assert tail({"stdout": out}, "garbage", ended=False)[0] == [LogLine("stdout", "a")]

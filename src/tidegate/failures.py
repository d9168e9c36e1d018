"""The one line of an error that says why: the root exception's own line, never a stack trace's.

An engine's error is a Python traceback (a Beam pipeline), a Java stack trace (Flink),
both at once (a PyFlink program: Python output, then the Java trace of Flink's command
line; a Python function failing inside a Flink task: a Python traceback inside a Java
``Caused by``), or tidegate's own words before one of those. ``root_cause`` finds:

1. the last Python exception: the first unindented line after a traceback's frames
   (``  File "…", line N``), which a ``SyntaxError`` has without a ``Traceback`` header;
   unless it is py4j's ``Py4JJavaError``, which only says that the Java side failed;
2. else the innermost Java ``Caused by``, before Flink's ``ProgramAbortException``
   ("Python process exits with code: 1", which says nothing);
3. else the first line that names an exception, else the first unindented line, else
   ``"unknown error"``.

A Python function failing in a Flink task in thread mode has no Python traceback: PemJa
wraps its exception in a Java one, ``pemja.core.PythonException: <class 'ValueError'>:
message``, which is given as the Python exception's own line (``ValueError: message``).

A stack trace's own lines (``at …``, ``... 15 more``) are never the answer.
"""

from __future__ import annotations

import re

__all__ = ["root_cause"]

_FRAME = re.compile(r'^\s+File "[^"]*", line \d+')
_PYTHON_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(:\s.*)?$")
_JAVA_EXCEPTION = re.compile(r"^([\w$]+\.)+[\w$]*(Exception|Error|Throwable)\b")
_TRACEBACK = "Traceback (most recent call last):"
_CAUSED_BY = "Caused by: "
_PY4J = "py4j.protocol.Py4JJavaError"
_SAYS_NOTHING = "ProgramAbortException"
_PEMJA = re.compile(r"^pemja\.core\.PythonException: <class '(?:builtins\.)?([\w.]+)'>(:\s?(.*))?$")


def _python_exceptions(lines: list[str]) -> list[str]:
    """Each traceback's exception line: the first unindented line after its header or a run of frames."""
    found: list[str] = []
    in_frames = False
    for line in lines:
        if _FRAME.match(line) or line.rstrip().endswith(_TRACEBACK):
            in_frames = True
        elif in_frames and line.strip() and not line[0].isspace():
            in_frames = False
            if _PYTHON_EXCEPTION.match(line.rstrip()):
                found.append(line.strip())
    return found


def _java_causes(lines: list[str]) -> list[str]:
    """The ``Caused by`` lines, those before a ``ProgramAbortException`` if any are."""
    end = next((i for i, line in enumerate(lines) if _SAYS_NOTHING in line), len(lines))
    causes = [line.strip()[len(_CAUSED_BY) :] for line in lines[:end] if line.strip().startswith(_CAUSED_BY)]
    return causes or [line.strip()[len(_CAUSED_BY) :] for line in lines if line.strip().startswith(_CAUSED_BY)]


def root_cause(text: str) -> str:
    """The most telling line of an error (see the module's docstring)."""
    lines = text.splitlines()
    python = _python_exceptions(lines)
    if python and not python[-1].startswith(_PY4J):
        return python[-1]
    causes = _java_causes(lines)
    if causes:
        pemja = _PEMJA.match(causes[-1])
        if pemja is not None:  # a Python function's exception, in thread mode
            return pemja[1] + (f": {pemja[3]}" if pemja[3] else "")
        return causes[-1]
    unindented = [line.strip() for line in lines if line.strip() and not line[0].isspace()]
    named = next((line for line in unindented if _JAVA_EXCEPTION.match(line)), None)
    if named is not None and _SAYS_NOTHING not in named:
        return named
    return unindented[0] if unindented else "unknown error"

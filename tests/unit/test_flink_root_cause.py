"""The one line of a Flink error that says why."""

from __future__ import annotations

from tidegate.failures import root_cause

SUBMIT_FAILED = """Traceback (most recent call last):
  File "job.py", line 3, in <module>
py4j.protocol.Py4JJavaError: An error occurred while calling o8.execute.
: org.apache.flink.util.FlinkException: Failed to execute job 'fails'.
Caused by: org.apache.flink.runtime.client.JobInitializationException: Could not start the JobMaster.
Caused by: java.lang.IllegalStateException: Failed to rollback to savepoint. Cannot map savepoint state for operator x
org.apache.flink.client.program.ProgramAbortException: java.lang.RuntimeException: Python process exits with code: 1
Caused by: java.lang.RuntimeException: Python process exits with code: 1
"""


def test_a_python_exception_is_the_cause() -> None:
    assert root_cause("Traceback (most recent call last):\n  File x\nValueError: boom\n") == "ValueError: boom"


def test_a_java_failure_behind_py4j_names_its_innermost_cause() -> None:
    assert root_cause(SUBMIT_FAILED).startswith("java.lang.IllegalStateException: Failed to rollback")


def test_without_a_traceback_the_innermost_cause() -> None:
    assert root_cause("x\nCaused by: A\nCaused by: B\n") == "B"

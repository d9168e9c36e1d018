# ruff: noqa: E501 (the traces are recorded as Flink and Python print them)
"""The root exception's own line, from recorded Python, Java and Flink traces: never a stack trace's line."""

from __future__ import annotations

import pytest

from tidegate.failures import root_cause
from tidegate.scheduler.loop import failure_summary

FLINK_CLI_SYNTAX_ERROR = """\
  File "/home/me/jobs/job.py", line 3
    t_env.execute_sql("SELECT 1"
                     ^
SyntaxError: '(' was never closed
org.apache.flink.client.program.ProgramAbortException: java.lang.RuntimeException: Python process exits with code: 1
\tat org.apache.flink.client.python.PythonDriver.main(PythonDriver.java:134)
\tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)
\tat java.base/java.lang.reflect.Method.invoke(Method.java:566)
\tat org.apache.flink.client.program.PackagedProgram.callMainMethod(PackagedProgram.java:356)
\tat org.apache.flink.client.cli.CliFrontend.run(CliFrontend.java:247)
\tat org.apache.flink.client.cli.CliFrontend.main(CliFrontend.java:1335)
Caused by: java.lang.RuntimeException: Python process exits with code: 1
\tat org.apache.flink.client.python.PythonDriver.main(PythonDriver.java:124)
\t... 15 more
"""
"""What Flink's command line printed for a PyFlink program with a syntax error (no ``Traceback`` header)."""

FLINK_TASK_PYTHON_ERROR = """\
org.apache.flink.runtime.JobException: Recovery is suppressed by FixedDelayRestartBackoffTimeStrategy(maxNumberRestartAttempts=0)
\tat org.apache.flink.runtime.executiongraph.failover.ExecutionFailureHandler.handleFailure(ExecutionFailureHandler.java:180)
\tat org.apache.flink.runtime.scheduler.DefaultScheduler.handleTaskFailure(DefaultScheduler.java:279)
\t... 4 more
Caused by: java.lang.RuntimeException: Error received from SDK harness for instruction 4: Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/apache_beam/runners/worker/sdk_worker.py", line 311, in _execute
    response = task()
               ^^^^^^
  File "/venv/lib/python3.11/site-packages/pyflink/fn_execution/table/operations.py", line 106, in process_element
    return self.func(value)
  File "/home/me/jobs/udf.py", line 7, in parse
    return int(value)
ValueError: invalid literal for int() with base 10: 'x'

\tat org.apache.beam.runners.fnexecution.control.FnApiControlClient$ResponseStreamObserver.onNext(FnApiControlClient.java:180)
\tat org.apache.beam.vendor.grpc.v1p60p1.io.grpc.stub.ServerCalls$StreamingServerMethodHandlers.onMessage(ServerCalls.java:262)
\t... 15 more
"""
"""A Python function failing inside a Flink task: Flink's exception history holds a Python traceback in a Java cause."""

JAVA_ONLY = """\
org.apache.flink.runtime.JobException: Recovery is suppressed by NoRestartBackoffTimeStrategy
\tat org.apache.flink.runtime.executiongraph.failover.ExecutionFailureHandler.handleFailure(ExecutionFailureHandler.java:176)
\t... 12 more
Caused by: org.apache.flink.table.api.ValidationException: SQL validation failed. From line 1, column 15 to line 1, column 19: Object 'nope' not found
\tat org.apache.flink.table.planner.calcite.FlinkPlannerImpl.validate(FlinkPlannerImpl.scala:200)
\t... 9 more
Caused by: org.apache.calcite.runtime.CalciteContextException: From line 1, column 15 to line 1, column 19: Object 'nope' not found
\tat java.base/jdk.internal.reflect.NativeConstructorAccessorImpl.newInstance0(Native Method)
\t... 15 more
"""

PY4J_SUBMIT = """\
Traceback (most recent call last):
  File "/home/me/jobs/job.py", line 12, in <module>
    t_env.execute_sql("INSERT INTO sink SELECT * FROM source").wait()
  File "/venv/lib/python3.11/site-packages/py4j/protocol.py", line 326, in get_return_value
    raise Py4JJavaError(
py4j.protocol.Py4JJavaError: An error occurred while calling o8.executeSql.
: org.apache.flink.table.api.TableException: Failed to execute sql
\tat org.apache.flink.table.api.internal.TableEnvironmentImpl.executeInternal(TableEnvironmentImpl.java:1060)
Caused by: org.apache.flink.util.FlinkException: Failed to execute job 'insert-into_default_catalog.default_database.sink'.
\t... 14 more
Caused by: java.lang.IllegalStateException: Failed to rollback to savepoint file:/data/sp. Cannot map savepoint state for operator 1a2b
\t... 20 more
org.apache.flink.client.program.ProgramAbortException: java.lang.RuntimeException: Python process exits with code: 1
Caused by: java.lang.RuntimeException: Python process exits with code: 1
\t... 15 more
"""

FLINK_TASK_THREAD_MODE = """\
java.lang.RuntimeException: Error while processing element
\tat org.apache.flink.streaming.api.operators.python.embedded.EmbeddedPythonIterator.hasNext(EmbeddedPythonIterator.java:62)
Caused by: java.lang.reflect.InvocationTargetException
\tat jdk.internal.reflect.GeneratedMethodAccessor8.invoke(Unknown Source)
Caused by: pemja.core.PythonException: <class 'ValueError'>: tidegate test failure at element 3
\tat /jobs/fails.explode_on_three(fails.py:9)
"""

BEAM_CHAINED = """\
Traceback (most recent call last):
  File "/home/me/pipeline.py", line 4, in parse
    return {"a": 1}[x]
           ~~~~~~~~^^^
KeyError: 'b'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/home/me/pipeline.py", line 6, in <module>
    raise RuntimeError("lookup failed") from e
RuntimeError: lookup failed [while running 'Map(parse)']
"""


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        (FLINK_CLI_SYNTAX_ERROR, "SyntaxError: '(' was never closed"),
        (FLINK_TASK_PYTHON_ERROR, "ValueError: invalid literal for int() with base 10: 'x'"),
        (
            JAVA_ONLY,
            "org.apache.calcite.runtime.CalciteContextException: From line 1, column 15 to line 1, column 19:"
            " Object 'nope' not found",
        ),
        (PY4J_SUBMIT, "java.lang.IllegalStateException: Failed to rollback to savepoint file:/data/sp. Cannot map"),
        (BEAM_CHAINED, "RuntimeError: lookup failed [while running 'Map(parse)']"),
        (FLINK_TASK_THREAD_MODE, "ValueError: tidegate test failure at element 3"),
        ("Caused by: pemja.core.PythonException: <class 'KeyboardInterrupt'>\n", "KeyboardInterrupt"),
        (
            "java.lang.OutOfMemoryError: Java heap space\n\tat x.y(Z.java:1)\n\t... 3 more\n",
            "java.lang.OutOfMemoryError",
        ),
        ("The run was stopped: its lease was lost\n", "The run was stopped: its lease was lost"),
    ],
)
def test_the_root_exception_line(text: str, cause: str) -> None:
    found = root_cause(text)
    assert found.startswith(cause), found
    assert "more" not in found.split()[-1] and not found.startswith(("at ", "..."))


@pytest.mark.parametrize("composed", ["Flink did not accept the job: {cause}\n\n{trace}", "{trace}"])
def test_a_message_of_the_flink_engine_names_the_syntax_error(composed: str) -> None:
    """What the Flink engine writes (its summary, then the output), and an older message whose summary missed it."""
    text = composed.format(cause="java.lang.RuntimeException: Python process exits", trace=FLINK_CLI_SYNTAX_ERROR)
    assert root_cause(text) == "SyntaxError: '(' was never closed"
    assert failure_summary(text) == "SyntaxError: '(' was never closed"


def test_no_text_is_an_unknown_error() -> None:
    assert root_cause("") == "unknown error"
    assert root_cause("\t... 15 more\n\tat x.y(Z.java:1)\n") == "unknown error"

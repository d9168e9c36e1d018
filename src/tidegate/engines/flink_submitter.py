"""tidegate's warm PyFlink submitter: run as a file by the Flink environment's Python, never imported by tidegate.

    <flink venv>/bin/python flink_submitter.py

It imports PyFlink, starts PyFlink's Java gateway, warms the gateway up (the table
planner's parser and validator loaded, PyFlink's operators), then says ``{"ready": true}`` on its
stdout and waits on its stdin for one job, a JSON line::

    {"python": PROGRAM, "args": [...], "cwd": DIR, "log": FILE, "conf": {KEY: VALUE}}

It says ``{"started": true}``, points the gateway's execution context at the cluster
(``conf`` over the configuration of ``FLINK_CONF_DIR``: ``execution.target: remote``,
the job id, a savepoint to restore, ``execution.attached: false``, so that ``execute``
returns once Flink accepted the job), runs ``PROGRAM`` as ``__main__`` with what it
prints going to ``FILE``, says ``{"ok": true}`` (or ``{"ok": false, "error": ...}``) and
exits: one job per process, so nothing of a program stays for the next. What
``flink run --python`` does, without a JVM and a Python interpreter to start per job.

A job line with ``"defer": true`` is an update's new job, given while the old job is
still being stopped with a savepoint: the program runs until it calls ``execute`` (or
``execute_async``), which builds its stream graph, says ``{"built": true}`` and waits on
stdin for the state to start from, ``{"restore_from": PATH, "allow_non_restored": BOOL}``;
only then is the job submitted, from that savepoint. The end of stdin instead ends the
process with nothing submitted (the update failed, or the engine is gone). Until then the
context's target is one no executor has, so a program that submits by another way (the
Table API's ``execute_sql``, a statement set) fails before anything reaches Flink: the
engine then runs it again, once the savepoint is there, as any job.

The end of its stdin before a job ends it (the engine is gone); PyFlink's gateway ends
with it. Only the standard library and PyFlink here: it runs in Flink's environment,
where tidegate is not installed.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
import traceback
from typing import Any

_MAX_JOBS = 2147483647  # the CLI's own bound for a detached program: no limit
_DEFERRED_TARGET = "tidegate-deferred"
"""The context's ``execution.target`` while a deferred job waits for its state: no executor has it."""


def _say(channel: Any, **what: object) -> None:
    try:
        channel.write(json.dumps(what) + "\n")
        channel.flush()
    except OSError:  # the engine is gone (its server was killed): the job goes on, a server started later looks
        pass


def _set_context(gateway: Any, conf: dict[str, str]) -> None:
    """Every execution environment made from now on submits to the cluster with ``conf`` (as the CLI's does)."""
    jvm = gateway.jvm
    configuration = jvm.org.apache.flink.configuration.GlobalConfiguration.loadConfiguration(
        os.environ["FLINK_CONF_DIR"]
    )
    for key, value in conf.items():
        configuration.setString(key, value)
    jvm.org.apache.flink.client.program.StreamContextEnvironment.setAsContext(
        jvm.org.apache.flink.core.execution.DefaultExecutorServiceLoader(),
        configuration,
        jvm.java.lang.Thread.currentThread().getContextClassLoader(),
        _MAX_JOBS,
        _MAX_JOBS,
        False,
        None,
        None,
        jvm.java.util.Collections.emptyList(),
    )


def _node_counter_reset(gateway: Any) -> Any:
    """The planner's ``ExecNodeContext.resetIdCounter`` (a method object to invoke), or None where it is not found.

    The planner lives in a class loader of its own (``flink-table-planner-loader``), which
    only reflection reaches.
    """
    try:
        jvm = gateway.jvm
        module = jvm.java.lang.Class.forName("org.apache.flink.table.planner.loader.PlannerModule")
        get_instance = module.getDeclaredMethod("getInstance", None)
        get_instance.setAccessible(True)
        loader_field = module.getDeclaredField("submoduleClassLoader")
        loader_field.setAccessible(True)
        loader = loader_field.get(get_instance.invoke(None, None))
        context = loader.loadClass("org.apache.flink.table.planner.plan.nodes.exec.ExecNodeContext")
        reset = context.getDeclaredMethod("resetIdCounter", None)
        reset.setAccessible(True)
        return reset
    except Exception as error:  # another Flink: no translation in the warm-up, only the loading
        print(f"the planner's node counter cannot be reset ({error}): no plan is translated ahead", file=sys.stderr)
        return None


def _warm_up(gateway: Any) -> None:
    """Do what a program's first steps do once (the planner's parser, validator and translation, PyFlink's operators).

    Seconds, now rather than during the job's submission: translating a table into a
    stream the first time in a JVM takes about 2 s (Calcite's rules and metadata handlers,
    code generation), the next time about 0.1 s. The planner numbers its nodes with a
    counter of the whole JVM, and with ``table.exec.uid.generation`` their uids carry those
    numbers: the counter is reset to where a fresh JVM has it, so that the job's operators
    get the uids ``flink run`` gives them and state saved by one is restored by the other.
    Where the counter cannot be reset, nothing is translated here.
    """
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    _set_context(gateway, {"execution.attached": "false"})  # a remote context: no local Python worker server
    env = StreamExecutionEnvironment.get_execution_environment()
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE tidegate_warm_up (n BIGINT, ts AS TO_TIMESTAMP_LTZ(n, 3), WATERMARK FOR ts AS ts)"
        " WITH ('connector' = 'datagen')"
    )
    query = t_env.sql_query("SELECT n + 1 AS m, ts FROM tidegate_warm_up WHERE n > 3")
    reset = _node_counter_reset(gateway)
    if reset is not None:
        t_env.get_config().set("table.exec.uid.generation", "ALWAYS")
        t_env.to_data_stream(query).map(lambda row: row[0])
    env.from_collection([1, 2]).map(lambda value: value + 1)
    env._generate_stream_graph(clear_transformations=True)  # PyFlink's operators and a planner's plan: submits nothing
    if reset is not None:
        reset.invoke(None, None)


def _defer(replies: Any, target: str) -> None:
    """Make ``execute`` and ``execute_async`` build the graph, then wait for the savepoint to submit it from."""
    from pyflink.common.job_client import JobClient
    from pyflink.common.job_execution_result import JobExecutionResult
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.java_gateway import get_gateway
    from pyflink.util.java_utils import get_j_env_configuration

    def restored(env: Any, job_name: Any) -> Any:
        graph = env._generate_stream_graph(clear_transformations=True, job_name=job_name)
        _say(replies, built=True)
        line = sys.stdin.readline()
        if not line.strip():
            os._exit(0)  # not to be submitted: the update failed, or the engine is gone
        given = json.loads(line)
        path, allow = str(given["restore_from"]), bool(given.get("allow_non_restored"))
        configuration = get_j_env_configuration(env._j_stream_execution_environment)
        configuration.setString("execution.target", target)
        configuration.setString("execution.state-recovery.path", path)
        configuration.setString("execution.state-recovery.ignore-unclaimed-state", str(allow).lower())
        settings = get_gateway().jvm.org.apache.flink.runtime.jobgraph.SavepointRestoreSettings
        graph.setSavepointRestoreSettings(settings.forPath(path, allow))
        return graph

    def execute(self: Any, job_name: Any = None) -> Any:
        graph = restored(self, job_name)
        return JobExecutionResult(self._j_stream_execution_environment.execute(graph))

    def execute_async(self: Any, job_name: str = "Flink Streaming Job") -> Any:
        graph = restored(self, job_name)
        return JobClient(j_job_client=self._j_stream_execution_environment.executeAsync(graph))

    StreamExecutionEnvironment.execute = execute
    StreamExecutionEnvironment.execute_async = execute_async


def _run(job: dict[str, Any]) -> str:
    """Run the job's program as ``__main__``; "" when it ended well, else what went wrong."""
    program = str(job["python"])
    sys.argv = [program, *[str(arg) for arg in job.get("args", [])]]
    sys.path.insert(0, os.path.dirname(os.path.abspath(program)))
    os.chdir(str(job.get("cwd") or os.path.dirname(os.path.abspath(program))))
    try:
        runpy.run_path(program, run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0):
            traceback.print_exc()
            return f"the program exited with {stop.code}"
    except BaseException as error:  # the program's own failure: the engine reports it
        traceback.print_exc()
        return f"{type(error).__name__}: {error}"
    return ""


def main() -> None:
    replies = os.fdopen(os.dup(1), "w")  # stdout is the engine's; the gateway's output goes to stderr
    os.dup2(2, 1)
    started = time.monotonic()
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    _warm_up(gateway)
    print(f"tidegate's PyFlink submitter ready in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    _say(replies, ready=True)
    line = sys.stdin.readline()
    if not line.strip():
        os._exit(0)  # the engine is gone, or let it go
    job = json.loads(line)
    _say(replies, started=True)
    with open(str(job["log"]), "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    conf = {str(key): str(value) for key, value in job.get("conf", {}).items()}
    if job.get("defer"):
        _defer(replies, conf.get("execution.target", "remote"))
        conf["execution.target"] = _DEFERRED_TARGET
    _set_context(gateway, conf)
    error = _run(job)
    sys.stdout.flush()
    sys.stderr.flush()
    _say(replies, ok=not error, error=error)
    os._exit(0)  # not a normal exit: PyFlink's threads and the gateway would hold it


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
    os._exit(1)  # main failed: PyFlink's threads and its gateway must not keep the process

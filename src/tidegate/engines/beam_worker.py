"""The processes of one Beam batch run: ``python -m tidegate.engines.beam_worker WORKDIR``.

``BeamEngine`` starts this in a process group of its own, with ``WORKDIR`` holding
``pipeline.pb`` (a serialized runner-API ``Pipeline``) and ``run.json`` (the pipeline
options and the number of SDK worker processes). That process only supervises: it
starts ``beam_worker --run WORKDIR``, which runs the pipeline with Beam's
``FnApiRunner`` (and its SDK worker processes), and reaps every process of the group.
The pipeline process reports only through files in ``WORKDIR`` (``beam_report``), and
``status.json``: ``{"state": "running" | "succeeded" | "failed", "error": ...}``.

Beam is imported only once logging is set up, so that its import-time warnings become
job messages too.

Warm starts (``beam_warm``): ``beam_worker --warm ENGINE_PID``, started by the engine in a
session of its own before there is a run, starts its pipeline process at once
(``--warm-run``), which imports Beam, its log records kept aside; both then wait on
their stdin for a run (one JSON line: the workdir and the environment). With it,
they become what ``WORKDIR`` and ``--run WORKDIR`` would have been: same folder, same
environment, same output files, the early log records replayed as job messages. The
pipeline process is not forked from a process that imported Beam (numpy and pyarrow
start threads as they load): it is the very process that imported it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from tidegate.engines.base import working_folder
from tidegate.engines.beam import (
    PIPELINE_FILE,
    RUN_AS_ENV,
    RUN_FILE,
    STATUS_FILE,
    STDERR_FILE,
    STDOUT_FILE,
    group_members,
    outputs,
    stderr_tail,
    supervisor_spec,
    write_json,
)
from tidegate.engines.beam_report import WORKER_LOGGER, Names, Progress, now, setup_logging
from tidegate.engines.beam_sdk_worker import anonymous_gcs_for_an_emulator
from tidegate.engines.run_lease import keep_lease
from tidegate.os_user import RunAs, open_for_append, open_untrusted

if TYPE_CHECKING:
    from apache_beam.portability.api import beam_runner_api_pb2

__all__ = ["main"]

_LOG = logging.getLogger(WORKER_LOGGER)
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_WORKER = "tidegate.engines.beam_worker"


def _use_local_environment(proto: beam_runner_api_pb2.Pipeline, num_workers: int) -> None:
    """Run every transform here: Docker (DataflowRunner) and default environments become local Python."""
    from apache_beam.portability.api import beam_runner_api_pb2 as pb
    from apache_beam.transforms import environments

    if num_workers <= 1:
        env: environments.Environment = environments.EmbeddedPythonEnvironment.default()
    else:  # exec: no shell between the pipeline process and its SDK workers
        command = f"exec {shlex.quote(sys.executable)} -m tidegate.engines.beam_sdk_worker"
        env = environments.SubprocessSDKEnvironment.from_command_string(command)
    local = env.to_runner_api(None)  # type: ignore[arg-type]  # the context is unused for these two
    for env_id, current in proto.components.environments.items():
        if current.urn == "beam:env:docker:v1":
            image = pb.DockerPayload.FromString(current.payload).container_image
            if "python" not in image:
                _LOG.warning("Environment %s names the image %s; running it as a Python environment", env_id, image)
        current.CopyFrom(local)


def _harness_options(value: Any) -> Any:
    """Options for the SDK harness, which gets them as a Struct, where every number is a float.

    The harness turns them into flags, and ``--num_workers=2.0`` stops it (argparse wants
    an int): integers travel as strings, which argparse converts back.
    """
    if isinstance(value, dict):
        return {str(k): _harness_options(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_harness_options(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _fail_when_an_sdk_worker_dies(workdir: Path) -> None:
    """Fail the run when an SDK worker process exits early: FnApiRunner would wait for it forever."""

    def hook(args: threading.ExceptHookArgs) -> None:
        threading.__excepthook__(args)
        if args.thread is None or args.thread.name != "run_worker":  # FnApiRunner's SubprocessSdkWorker thread
            return
        error = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        _report_failure(
            workdir, f"An SDK worker process died.\n{error}\nThe run's stderr ends with:\n{stderr_tail(workdir)}"
        )
        logging.shutdown()
        os._exit(1)

    threading.excepthook = hook


def _report_failure(workdir: Path, error: str) -> None:
    _LOG.error("The pipeline failed: %s", error)
    write_json(workdir / STATUS_FILE, {"state": "failed", "error": error, "time": now()})


def _run(workdir: Path, run: Mapping[str, Any]) -> None:
    import apache_beam  # noqa: F401  # the SDK's import-time setup, before its submodules
    from apache_beam.internal import pickler
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.options.value_provider import RuntimeValueProvider
    from apache_beam.portability.api import beam_provision_api_pb2, beam_runner_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from google.protobuf import json_format, struct_pb2

    options: dict[str, Any] = dict(run.get("options") or {})
    num_workers = max(1, int(run.get("num_workers") or 1))
    pickling: Any = pickler  # untyped
    pickling.set_library(options.get("pickle_library") or pickler.DEFAULT_PICKLE_LIB)  # as the SDK harness does
    _fail_when_an_sdk_worker_dies(workdir)
    anonymous_gcs_for_an_emulator()
    proto = beam_runner_api_pb2.Pipeline.FromString((workdir / PIPELINE_FILE).read_bytes())
    names = Names(proto)
    _use_local_environment(proto, num_workers)
    progress = Progress(workdir, names)
    struct = json_format.ParseDict(_harness_options(json.loads(json.dumps(options, default=str))), struct_pb2.Struct())
    provision = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(retrieval_token="unused-retrieval-token", pipeline_options=struct)
    )

    class Runner(fn_runner.FnApiRunner):
        """FnApiRunner that reports stages and metrics as bundles complete."""

        def create_stages(self, pipeline_proto: Any) -> Any:
            context, stages = super().create_stages(pipeline_proto)
            progress.set_stages((s.name, [t.unique_name for t in s.transforms]) for s in stages)
            return context, stages

        def _execute_bundle(self, context: Any, bundle: Any, data: Any) -> Any:
            stage = bundle.stage.name
            progress.bundle_started(stage)
            result = super()._execute_bundle(context, bundle, data)
            progress.bundle_finished(stage, result.process_bundle.monitoring_infos)
            return result

    _enter_working_folder(workdir, options)
    runner = Runner(provision_info=provision)
    # A template's runtime parameters (RuntimeValueProvider options) are read here when the SDK
    # harness runs embedded; SDK worker processes read them from the provisioned options.
    RuntimeValueProvider.set_runtime_options(options)  # type: ignore[no-untyped-call]
    runner._num_workers = num_workers  # run_via_runner_api, unlike run_pipeline, never sets it
    write_json(workdir / STATUS_FILE, {"state": "running", "pid": os.getpid(), "time": now()})
    _LOG.info("Running the pipeline with %d SDK worker process(es)", num_workers)
    started = time.monotonic()
    try:
        runner.run_via_runner_api(proto, PipelineOptions(**options))
    except BaseException:
        progress.finish(succeeded=False)
        raise
    progress.finish(succeeded=True)
    _LOG.info("The pipeline finished in %.1f s", time.monotonic() - started)


def _enter_working_folder(workdir: Path, options: Mapping[str, Any]) -> None:
    """Run where ``tidegate run`` was run from, so the job's relative paths mean what they meant there."""
    folder = working_folder(options)
    if not folder:
        _LOG.debug("Relative paths resolve against the run's folder %s", workdir)
        return
    try:
        os.chdir(folder)
    except OSError as error:
        why = (
            "is not on this machine"
            if isinstance(error, FileNotFoundError | NotADirectoryError)
            else "cannot be entered"
        )
        _LOG.warning(
            "The folder the job was submitted from (%s) %s (%s): relative paths resolve against %s",
            folder,
            why,
            error.strerror,
            workdir,
        )
        return
    _LOG.info("Relative paths resolve against %s, where the job was submitted from", folder)


def _kill_others(sig: int) -> None:
    me = os.getpid()
    for pid in group_members(os.getpgrp()):
        if pid != me:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)


def _reap_all() -> None:
    with contextlib.suppress(ChildProcessError):
        while True:
            os.wait()


def _prctl(option: int, value: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _pipeline_env(run_as: RunAs | None) -> dict[str, str]:
    """The pipeline process's environment: this one's; as another user, that user's, and none of tidegate's settings."""
    if run_as is None:
        return dict(os.environ)
    return run_as.environment({k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")})


def _start(argv: list[str], run_as: RunAs | None, *, stdin: int | None = None) -> int:
    env = _pipeline_env(run_as)
    if run_as is not None:
        return run_as.spawn(argv, env, stdin=stdin)
    actions = [(os.POSIX_SPAWN_DUP2, stdin, 0)] if stdin is not None else []
    return os.posix_spawn(argv[0], argv, env, file_actions=actions)


def _spawn_pipeline(workdir: Path) -> int:
    """Start the pipeline process of a cold start: a fresh interpreter, which imports Beam."""
    run_as = supervisor_spec(workdir).get("run_as")
    return _start(
        [sys.executable, "-m", _WORKER, "--run", str(outputs(workdir))], RunAs.from_json(run_as) if run_as else None
    )


def _status(out: Path) -> dict[str, Any]:
    try:
        with open_untrusted(out / STATUS_FILE) as f:
            return dict(json.loads(f.read()))
    except (OSError, ValueError, TypeError):
        return {}


def _keep_the_lease(workdir: Path) -> None:
    """Renew the run's lease while it runs, if the scheduler gave it one; stop the pipeline once it is lost."""
    spec = supervisor_spec(workdir)
    lease = spec.get("lease")
    if not lease:
        return
    out = outputs(workdir)

    def fence(why: str) -> None:
        if _status(out).get("state") not in ("succeeded", "failed"):
            _report_failure(out, f"The run was stopped: {why}")
        _kill_others(signal.SIGTERM)
        signal.setitimer(signal.ITIMER_REAL, 0.5)  # then SIGKILL what is left

    keep_lease(lease, str(spec["job_id"]), fence)


def _supervise(workdir: Path, start: Callable[[], int], stopping: list[int]) -> int:
    """Run the pipeline process (``start`` starts it) and reap every process of the group, then exit as it did.

    This process leads the group and is its subreaper: whatever dies in the group is
    reaped here at once, so when the engine kills the group, it empties without waiting
    for init to reap the orphans (it does so lazily: a second here). ``stopping`` gets the
    SIGTERMs the caller's handler caught, which must not stop this process before the
    others are reaped (a Python handler, not SIG_IGN: exec resets handlers, an ignored
    signal would stay ignored).
    """
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGALRM, lambda signum, frame: _kill_others(signal.SIGKILL))
    pipeline = -1
    result = (128 + signal.SIGTERM) << 8  # as os.wait reports an exit code
    if stopping:  # cancelled before it began: the warm start's pipeline process is waiting
        _kill_others(signal.SIGKILL)
    else:
        pipeline = start()
        result = 1 << 8
        _keep_the_lease(workdir)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid == pipeline:
            result = status
            _kill_others(signal.SIGTERM)  # SDK workers it left behind
            signal.setitimer(signal.ITIMER_REAL, 0.5)
    signal.setitimer(signal.ITIMER_REAL, 0)
    if os.WIFSIGNALED(result):  # die of the same signal, so that the engine can tell
        if os.WTERMSIG(result) != signal.SIGKILL:
            signal.signal(os.WTERMSIG(result), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(result))
    return os.waitstatus_to_exitcode(result)


def _cold_supervisor(workdir: Path) -> int:
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    return _supervise(workdir, lambda: _spawn_pipeline(workdir), stopping)


class _Stopped(Exception):
    """SIGTERM or the engine's close reached an idle supervisor."""


def _wait_for_run() -> Path | None:
    """Wait for a run on stdin; then take on its folder and environment. None: stdin ended (the engine is gone).

    The run's folder is returned; the process now works in its ``outputs``.
    """
    idle_folder = os.getcwd()
    line = sys.stdin.buffer.readline()
    if not line.endswith(b"\n"):
        return None
    _prctl(_PR_SET_PDEATHSIG, 0)  # the run outlives the engine, as a cold-started one does
    message = json.loads(line)
    workdir = Path(message["workdir"])
    os.environ.clear()
    os.environ.update(message["env"])
    os.chdir(outputs(workdir))
    if sys.path and sys.path[0] == idle_folder:  # ``-m`` put the working folder there
        sys.path[0] = str(outputs(workdir))
    return workdir


def _take_output(workdir: Path, *, early: bool) -> None:
    """stdin from /dev/null, stdout and stderr appended to the run's files, as a cold start opens them.

    With ``early``, what stderr got before the run (import-time warnings) is copied into the run's first.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    kept = b""
    if early:
        with contextlib.suppress(OSError):
            os.lseek(2, 0, os.SEEK_SET)
            while chunk := os.read(2, 1 << 16):
                kept += chunk
    for fd, target in (
        (os.open(os.devnull, os.O_RDONLY), 0),
        (open_for_append(workdir / STDOUT_FILE), 1),
        (open_for_append(workdir / STDERR_FILE), 2),
    ):
        if target == 2 and kept:
            os.write(fd, kept)
        os.dup2(fd, target)
        os.close(fd)


def _warm_supervisor(parent: int) -> int:
    """The idle supervisor of a warm start: its pipeline process imports Beam; both wait for a run.

    Until it has one, SIGTERM (the engine's ``close``, or a cancel of the run just handed
    over) or the end of stdin stops it: it kills and reaps its pipeline process, then exits.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the engine died before that took hold
        return 0
    stopping: list[int] = []
    idle = [True]  # while it holds, SIGTERM raises _Stopped (once)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        if idle:
            idle.clear()
            raise _Stopped

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
        given = os.environ.pop(RUN_AS_ENV, "")
        run_as = RunAs.from_json(json.loads(given)) if given else None
        inbox, outbox = os.pipe()
        argv = [sys.executable, "-m", _WORKER, "--warm-run", str(os.getpid())]
        pipeline = _start(argv, run_as, stdin=inbox)
        os.close(inbox)
        taken = _wait_for_run()
        if taken is None:
            idle.clear()
            raise _Stopped
        workdir = taken
        line = json.dumps({"workdir": str(workdir), "env": _pipeline_env(run_as)}).encode() + b"\n"
        _take_output(outputs(workdir), early=False)
        idle.clear()  # from here on, SIGTERM only lands in ``stopping``, as _supervise wants
    except _Stopped:
        _kill_others(signal.SIGKILL)
        _reap_all()
        return 128 + signal.SIGTERM if stopping else 0

    def start() -> int:
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(outbox, view) :]
        except OSError:  # the pipeline process died waiting (EPIPE): a cold one takes over
            return _spawn_pipeline(workdir)
        finally:
            os.close(outbox)
        return pipeline

    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    return _supervise(workdir, start, stopping)


class _EarlyRecords(logging.Handler):
    """Keeps the log records of an idle pipeline process (importing Beam), to replay them as job messages."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _import_beam() -> None:
    """What ``_run`` imports, and what FnApiRunner imports as it starts."""
    import apache_beam  # noqa: F401
    from apache_beam.internal import pickler  # noqa: F401
    from apache_beam.metrics import monitoring_infos  # noqa: F401
    from apache_beam.options import pipeline_options  # noqa: F401
    from apache_beam.portability.api import beam_provision_api_pb2, beam_runner_api_pb2  # noqa: F401
    from apache_beam.runners.portability.fn_api_runner import fn_runner  # noqa: F401
    from apache_beam.transforms import environments  # noqa: F401
    from google.protobuf import json_format, struct_pb2  # noqa: F401


def _warm_pipeline(parent: int) -> int:
    """The idle pipeline process of a warm start: import Beam, wait for the run, run it."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # its supervisor died before that took hold
        return 0
    root = logging.getLogger()
    early = _EarlyRecords()
    root.addHandler(early)
    root.setLevel(logging.DEBUG)
    with contextlib.suppress(Exception):  # the run imports again, and fails with the error
        _import_beam()
    root.removeHandler(early)
    root.setLevel(logging.WARNING)
    taken = _wait_for_run()
    if taken is None:
        return 0
    out = outputs(taken)
    _take_output(out, early=True)
    sys.argv[1:] = ["--run", str(out)]  # PipelineOptions reads them, as in a cold start
    return _run_pipeline(out, early.records)


def _replay(records: Sequence[logging.LogRecord]) -> None:
    """Log again, now that logging is set up, the records that were logged before."""
    root = logging.getLogger()
    for record in records:
        if record.levelno >= root.level:
            for handler in root.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


def _run_pipeline(workdir: Path, early: Sequence[logging.LogRecord] = ()) -> int:
    try:
        run: dict[str, Any] = json.loads((workdir / RUN_FILE).read_text(encoding="utf-8"))
        setup_logging(workdir, str(run.get("options", {}).get("default_sdk_harness_log_level") or "INFO"))
        _replay(early)
        _run(workdir, run)
    except BaseException:
        _report_failure(workdir, traceback.format_exc())
        return 1
    write_json(workdir / STATUS_FILE, {"state": "succeeded", "time": now()})
    return 0


def main(argv: list[str] | None = None) -> int:
    """``WORKDIR``: supervise a run (the engine starts this); ``--run WORKDIR``: run the pipeline.

    ``--warm ENGINE_PID`` and ``--warm-run SUPERVISOR_PID``: the same two, started before their run.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1:
        return _cold_supervisor(Path(args[0]))
    if len(args) == 2 and args[0] == "--warm":
        return _warm_supervisor(int(args[1]))
    if len(args) == 2 and args[0] in ("--run", "--warm-run"):
        code = _run_pipeline(Path(args[1])) if args[0] == "--run" else _warm_pipeline(int(args[1]))
        logging.shutdown()
        # gRPC and SDK harness threads may linger; everything worth keeping is on disk now.
        os._exit(code)
    print("usage: python -m tidegate.engines.beam_worker [--run] WORKDIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The processes of one Beam batch run: ``python -m tidegate.engines.beam_worker WORKDIR``.

``BeamEngine`` starts this in a process group of its own, with ``WORKDIR`` holding
``pipeline.pb`` (a serialized runner-API ``Pipeline``) and ``run.json`` (the pipeline
options and the number of SDK worker processes). That process only supervises: it
starts ``beam_worker --run WORKDIR``, which runs the pipeline with Beam's
``FnApiRunner`` (and its SDK worker processes), and reaps every process of the group.
The pipeline process reports only through files in ``WORKDIR``, each replaced
atomically or appended a whole line at a time:

- ``status.json``: ``{"state": "running" | "succeeded" | "failed", "error": ...}``;
- ``messages.jsonl``: one log record a line (time, importance, text);
- ``metrics.json``: element counts per PCollection and user metrics;
- ``stages.json``: execution details per fused stage.

Beam is imported only once logging is set up, so that its import-time warnings become
job messages too.
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
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tidegate.engines.beam import (
    MESSAGES_FILE,
    METRICS_FILE,
    PIPELINE_FILE,
    RUN_FILE,
    STAGES_FILE,
    STATUS_FILE,
    group_members,
    stderr_tail,
    write_json,
)

if TYPE_CHECKING:
    from apache_beam.portability.api import beam_runner_api_pb2, metrics_pb2

__all__ = ["main"]

_LOG = logging.getLogger("tidegate.engines.beam_worker")
_FORWARDED_LOGGER = "apache_beam.runners.portability.local_job_service"
"""Where FnApiRunner re-logs the records that SDK worker processes send it, as ``'Worker: %s'``."""
_FORMATTER = logging.Formatter()
_WRITE_EVERY_S = 1.0
_ELEMENT_COUNT = "beam:metric:element_count:v1"
_PR_SET_CHILD_SUBREAPER = 36


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _importance(record: logging.LogRecord) -> str:
    if record.levelno >= logging.ERROR:
        return "JOB_MESSAGE_ERROR"
    if record.levelno >= logging.WARNING:
        return "JOB_MESSAGE_WARNING"
    if record.levelno >= logging.INFO:
        # The worker's own lines (started, finished) are the ones a user wants to see first.
        return "JOB_MESSAGE_BASIC" if record.name == _LOG.name else "JOB_MESSAGE_DETAILED"
    return "JOB_MESSAGE_DEBUG"


def _forwarded(text: str) -> tuple[str, str | None]:
    """The message and time of a LogEntry that an SDK worker process sent over the Fn API."""
    from apache_beam.portability.api import beam_fn_api_pb2
    from google.protobuf import text_format

    entry = beam_fn_api_pb2.LogEntry()
    try:
        text_format.Parse(text, entry)
    except text_format.ParseError:
        return text, None
    message = entry.message + (f"\n{entry.trace}" if entry.trace else "")
    when = entry.timestamp.ToDatetime(tzinfo=UTC).isoformat() if entry.HasField("timestamp") else None
    return message, when


class _JobMessageHandler(logging.Handler):
    """Appends every log record to ``messages.jsonl`` as a job message."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = path.open("a", encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            when: str | None = None
            if record.name == _FORWARDED_LOGGER and record.msg == "Worker: %s" and isinstance(record.args, tuple):
                text, when = _forwarded(str(record.args[0]))
            else:
                text = record.getMessage()
                if record.exc_info:
                    text = f"{text}\n{_FORMATTER.formatException(record.exc_info)}"
            line = {
                "time": when or datetime.fromtimestamp(record.created, UTC).isoformat(),
                "importance": _importance(record),
                "text": text,
            }
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()
        except Exception:
            self.handleError(record)


def _setup_logging(workdir: Path, level_name: str) -> None:
    level = logging.getLevelNamesMapping().get(level_name.upper(), logging.INFO)
    root = logging.getLogger()
    root.setLevel(level)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(stderr)
    root.addHandler(_JobMessageHandler(workdir / MESSAGES_FILE))


class _Names:
    """User-facing names for the ids that monitoring infos carry."""

    def __init__(self, proto: beam_runner_api_pb2.Pipeline) -> None:
        transforms = proto.components.transforms
        self.transform = {tid: t.unique_name for tid, t in transforms.items()}
        self.user_steps = {t.unique_name for t in transforms.values() if not t.subtransforms}
        self.pcollection: dict[str, tuple[str, str]] = {}  # id -> (producing step, PCollection name)
        for t in transforms.values():
            if t.subtransforms:
                continue
            for tag, pid in t.outputs.items():
                self.pcollection[pid] = (t.unique_name, f"{t.unique_name}.{tag}")


def _metric_rows(
    names: _Names, infos_by_stage: Mapping[str, Iterable[metrics_pb2.MonitoringInfo]]
) -> list[dict[str, Any]]:
    """Element counts (the largest any stage saw) and user metrics (summed) as ``MetricValue`` fields."""
    from apache_beam.metrics import monitoring_infos

    mi: Any = monitoring_infos  # its functions are untyped
    counts: dict[str, int] = {}
    user: dict[tuple[str, str, str], float] = {}
    for infos in infos_by_stage.values():
        for info in infos:
            if info.urn == _ELEMENT_COUNT:
                pid = info.labels.get(mi.PCOLLECTION_LABEL, "")
                if pid in names.pcollection:
                    counts[pid] = max(counts.get(pid, 0), mi.extract_counter_value(info))
            elif mi.is_user_monitoring_info(info):
                label = info.labels.get(mi.PTRANSFORM_LABEL, "")
                step = names.transform.get(label, label)
                name = info.labels.get(mi.NAME_LABEL, "")
                space = info.labels.get(mi.NAMESPACE_LABEL, "")
                if mi.is_counter(info):
                    key = (step, space, name)
                    user[key] = user.get(key, 0) + mi.extract_counter_value(info)
                elif mi.is_gauge(info):
                    user[(step, space, name)] = mi.extract_gauge_value(info)[1]
                elif mi.is_distribution(info):
                    count, total, low, high = mi.extract_distribution(info)
                    for suffix, value in (("_COUNT", count), ("_SUM", total), ("_MIN", low), ("_MAX", high)):
                        user[(step, space, name + suffix)] = value
    rows: list[dict[str, Any]] = []
    for pid, count in sorted(counts.items(), key=lambda kv: names.pcollection[kv[0]]):
        step, pcollection = names.pcollection[pid]
        row = {"name": "ElementCount", "step": step, "value": count, "pcollection": pcollection}
        rows.append(row | {"origin": "dataflow/v1b3"})
    for (step, space, name), value in sorted(user.items()):
        rows.append({"name": name, "step": step, "value": value, "origin": "user", "namespace": space})
    return rows


class _Progress:
    """Stage states and per-stage monitoring infos, written to the workdir at most once a second."""

    def __init__(self, workdir: Path, names: _Names) -> None:
        self._workdir = workdir
        self._names = names
        self._lock = threading.Lock()
        self._stages: dict[str, dict[str, Any]] = {}
        self._infos: dict[str, list[metrics_pb2.MonitoringInfo]] = {}
        self._written = 0.0

    def set_stages(self, stages: Iterable[tuple[str, list[str]]]) -> None:
        with self._lock:
            for index, (name, steps) in enumerate(stages, start=1):
                user_steps = [s for s in steps if s in self._names.user_steps] or steps
                self._stages[name] = {
                    "stage_id": f"S{index:02d}",
                    "state": "EXECUTION_STATE_NOT_STARTED",
                    "steps": user_steps,
                }
        self.write(force=True)

    def _mark(self, stage: str, state: str, *, start: bool = False) -> None:
        details = self._stages.setdefault(stage, {"stage_id": stage, "steps": []})
        details["state"] = state
        if start:
            details.setdefault("start_time", _now())
            details.pop("end_time", None)
        else:
            details["end_time"] = _now()

    def bundle_started(self, stage: str) -> None:
        with self._lock:
            self._mark(stage, "EXECUTION_STATE_RUNNING", start=True)
        self.write()

    def bundle_finished(self, stage: str, infos: Iterable[metrics_pb2.MonitoringInfo]) -> None:
        from apache_beam.metrics import monitoring_infos

        mi: Any = monitoring_infos
        with self._lock:
            self._infos[stage] = list(mi.consolidate([*infos, *self._infos.get(stage, [])]))
            self._mark(stage, "EXECUTION_STATE_SUCCEEDED")
        self.write()

    def finish(self, succeeded: bool) -> None:
        """Close every stage: all succeeded, or the running ones failed."""
        with self._lock:
            for details in self._stages.values():
                if succeeded:
                    details["state"] = "EXECUTION_STATE_SUCCEEDED"
                elif details["state"] == "EXECUTION_STATE_RUNNING":
                    details["state"] = "EXECUTION_STATE_FAILED"
                    details["end_time"] = _now()
        self.write(force=True)

    def write(self, *, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._written < _WRITE_EVERY_S:
                return
            self._written = time.monotonic()
            write_json(self._workdir / STAGES_FILE, list(self._stages.values()))
            write_json(self._workdir / METRICS_FILE, _metric_rows(self._names, self._infos))


def _use_local_environment(proto: beam_runner_api_pb2.Pipeline, num_workers: int) -> None:
    """Run every transform here: Docker (DataflowRunner) and default environments become local Python."""
    from apache_beam.portability.api import beam_runner_api_pb2 as pb
    from apache_beam.transforms import environments

    if num_workers <= 1:
        env: environments.Environment = environments.EmbeddedPythonEnvironment.default()
    else:  # exec: no shell between the pipeline process and its SDK workers
        command = f"exec {shlex.quote(sys.executable)} -m apache_beam.runners.worker.sdk_worker_main"
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
    write_json(workdir / STATUS_FILE, {"state": "failed", "error": error, "time": _now()})


def _run(workdir: Path, run: Mapping[str, Any]) -> None:
    import apache_beam  # noqa: F401  # the SDK's import-time setup, before its submodules
    from apache_beam.internal import pickler
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.portability.api import beam_provision_api_pb2, beam_runner_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from google.protobuf import json_format, struct_pb2

    options: dict[str, Any] = dict(run.get("options") or {})
    num_workers = max(1, int(run.get("num_workers") or 1))
    pickling: Any = pickler  # untyped
    pickling.set_library(options.get("pickle_library") or pickler.DEFAULT_PICKLE_LIB)  # as the SDK harness does
    _fail_when_an_sdk_worker_dies(workdir)
    proto = beam_runner_api_pb2.Pipeline.FromString((workdir / PIPELINE_FILE).read_bytes())
    names = _Names(proto)
    _use_local_environment(proto, num_workers)
    progress = _Progress(workdir, names)
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

    runner = Runner(provision_info=provision)
    runner._num_workers = num_workers  # run_via_runner_api, unlike run_pipeline, never sets it
    write_json(workdir / STATUS_FILE, {"state": "running", "pid": os.getpid(), "time": _now()})
    _LOG.info("Running the pipeline with %d SDK worker process(es)", num_workers)
    started = time.monotonic()
    try:
        runner.run_via_runner_api(proto, PipelineOptions(**options))
    except BaseException:
        progress.finish(succeeded=False)
        raise
    progress.finish(succeeded=True)
    _LOG.info("The pipeline finished in %.1f s", time.monotonic() - started)


def _kill_others(sig: int) -> None:
    me = os.getpid()
    for pid in group_members(os.getpgrp()):
        if pid != me:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)


def _supervise(workdir: Path) -> int:
    """Run the pipeline process and reap every process of the group, then exit as the pipeline process did.

    This process leads the group and is its subreaper: whatever dies in the group is
    reaped here at once, so when the engine kills the group, it empties without waiting
    for init to reap the orphans (it does so lazily: a second here).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # A Python handler, not SIG_IGN: the group's SIGTERM must not stop this process before the
    # others are reaped, and exec resets handlers (an ignored signal would stay ignored).
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    signal.signal(signal.SIGALRM, lambda signum, frame: _kill_others(signal.SIGKILL))
    if stopping:  # cancelled before it began
        return 128 + signal.SIGTERM
    argv = [sys.executable, "-m", "tidegate.engines.beam_worker", "--run", str(workdir)]
    pipeline = os.posix_spawn(sys.executable, argv, os.environ)
    result = 1 << 8  # exit code 1, as os.wait reports it
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


def _run_pipeline(workdir: Path) -> int:
    try:
        run: dict[str, Any] = json.loads((workdir / RUN_FILE).read_text(encoding="utf-8"))
        _setup_logging(workdir, str(run.get("options", {}).get("default_sdk_harness_log_level") or "INFO"))
        _run(workdir, run)
    except BaseException:
        _report_failure(workdir, traceback.format_exc())
        return 1
    write_json(workdir / STATUS_FILE, {"state": "succeeded", "time": _now()})
    return 0


def main(argv: list[str] | None = None) -> int:
    """``WORKDIR``: supervise a run (the engine starts this); ``--run WORKDIR``: run the pipeline."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1:
        return _supervise(Path(args[0]))
    if len(args) == 2 and args[0] == "--run":
        code = _run_pipeline(Path(args[1]))
        logging.shutdown()
        # gRPC and SDK harness threads may linger; everything worth keeping is on disk now.
        os._exit(code)
    print("usage: python -m tidegate.engines.beam_worker [--run] WORKDIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

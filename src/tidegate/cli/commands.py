"""The ``tidegate`` command line, modelled on ``gcloud dataflow jobs``.

Exit codes: 0 success; 2 bad usage; 3 no such job; 4 the server refused the request
(an illegal request, bad input, a name already taken); 5 the server cannot be
reached; 1 anything else. Errors are one line on standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from tidegate import __version__
from tidegate.cli.client import (
    EXIT_ERROR,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    Client,
    CliError,
    job_path,
    segment,
    short_state,
)

__all__ = ["main"]

_STATUS_FILTERS = {"all": "ALL", "active": "ACTIVE", "terminated": "TERMINATED"}


class _Parser(argparse.ArgumentParser):
    """argparse, with bad usage reported like every other error: one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        _fail(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = (
        [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
        if rows
        else [len(h) for h in headers]
    )
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.format == "json" else text)


def cmd_list(args: argparse.Namespace, client: Client) -> None:
    params: dict[str, Any] = {"filter": _STATUS_FILTERS[args.status], "pageSize": min(args.limit, 1000)}
    path = f"/v1b3/projects/{segment(args.project)}/jobs:aggregated" if args.region is None else job_path(args)
    jobs: list[dict[str, Any]] = []
    while len(jobs) < args.limit:
        page = client.call("GET", path, params=params)
        jobs.extend(page.get("jobs", []))
        if not page.get("nextPageToken"):
            break
        params["pageToken"] = page["nextPageToken"]
    jobs = jobs[: args.limit]
    rows = [
        [
            j["id"],
            j.get("name", ""),
            j.get("type", "").removeprefix("JOB_TYPE_").title(),
            j.get("createTime", ""),
            short_state(j.get("currentState")),
            j.get("location", ""),
        ]
        for j in jobs
    ]
    _emit(
        args,
        jobs,
        _table(rows, ["JOB_ID", "NAME", "TYPE", "CREATION_TIME", "STATE", "REGION"]) if rows else "Listed 0 items.",
    )


def cmd_describe(args: argparse.Namespace, client: Client) -> None:
    job = client.call("GET", job_path(args, args.job_id), params={"view": "JOB_VIEW_ALL"} if args.full else None)
    text = "\n".join(f"{k}: {json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in job.items())
    _emit(args, job, text)


def _request_state(args: argparse.Namespace, client: Client, state: str, verb: str) -> None:
    """Ask it of every job named, each on its own: one that is refused does not keep the others from it."""
    results, refused = [], []
    for job_id in args.job_ids:
        try:
            job = client.call("PUT", job_path(args, job_id), body={"requestedState": state})
        except CliError as error:
            if error.code == EXIT_UNREACHABLE:
                raise  # no server: every other job would say the same
            refused.append(error)
            print(f"ERROR: (tidegate) job [{job_id}]: {' '.join(str(error).split())}", file=sys.stderr)
            continue
        results.append(job)
        if args.format != "json":
            print(f"{verb} job [{job_id}]: now {short_state(job.get('currentState'))}.")
    if args.format == "json":
        print(json.dumps(results, indent=2))
    if refused:
        raise _Reported(refused[0].code)


def cmd_cancel(args: argparse.Namespace, client: Client) -> None:
    _request_state(args, client, "JOB_STATE_CANCELLED", "Cancelled")


def cmd_drain(args: argparse.Namespace, client: Client) -> None:
    _request_state(args, client, "JOB_STATE_DRAINED", "Started draining")


def cmd_messages(args: argparse.Namespace, client: Client) -> None:
    params: dict[str, Any] = {"minimumImportance": f"JOB_MESSAGE_{args.importance.upper()}", "pageSize": 1000}
    messages: list[dict[str, Any]] = []
    while True:
        page = client.call("GET", job_path(args, args.job_id) + "/messages", params=params)
        messages.extend(page.get("jobMessages", []))
        if not page.get("nextPageToken"):
            break
        params["pageToken"] = page["nextPageToken"]
    rows = [
        [m.get("time", ""), m.get("messageImportance", "").removeprefix("JOB_MESSAGE_"), m.get("messageText", "")]
        for m in messages
    ]
    _emit(args, messages, _table(rows, ["TIME", "IMPORTANCE", "TEXT"]) if rows else "Listed 0 items.")


def cmd_history(args: argparse.Namespace, client: Client) -> None:
    path = job_path(args, args.job_id, prefix="/tidegate/v1") + "/history"
    history = client.call("GET", path)["stateHistory"]
    rows = [
        [h["time"], short_state(h["fromState"]) or "-", short_state(h["toState"]), h["actor"], h["reason"]]
        for h in history
    ]
    _emit(args, history, _table(rows, ["TIME", "FROM", "TO", "BY", "REASON"]))


def cmd_server(args: argparse.Namespace) -> None:
    from tidegate.config import Settings, default_data_dir
    from tidegate.server import serve

    settings = Settings(
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        job_port=args.job_port,
        data_dir=Path(args.data_dir) if args.data_dir else default_data_dir(),
        database_url=args.database_url or "",
        default_location=args.location,
        engines=tuple(e for e in args.engines.split(",") if e and e != "none"),
        max_jobs=args.max_jobs,
        max_jobs_per_project=args.max_jobs_per_project,
        flex_window_s=args.flex_window,
        resource_cleanup=args.resource_cleanup,
        flink_rest_url=args.flink_rest_url or "",
        flink_checkpoint_interval_s=args.flink_checkpoint_interval,
        gcs_emulator_port=args.gcs_emulator or 0,
        gcs_buckets=tuple(args.gcs_bucket),
        launcher_python=args.launcher_python or "",
        staging_roots=tuple(Path(root) for root in args.staging_root),
        tls_cert=args.tls_cert or "",
        tls_key=args.tls_key or "",
    )
    with contextlib.suppress(KeyboardInterrupt):
        serve(settings)


def cmd_flink_stop(args: argparse.Namespace) -> None:
    """``tidegate flink stop``: savepoints of the local cluster's running jobs, then the cluster stops."""
    from tidegate.config import Settings, default_data_dir
    from tidegate.engines.flink import FlinkEngine
    from tidegate.errors import TidegateError
    from tidegate.server import build_engines

    settings = Settings(data_dir=Path(args.data_dir) if args.data_dir else default_data_dir())
    engine = build_engines(("flink",), settings)["flink"]
    assert isinstance(engine, FlinkEngine)
    try:
        taken = engine.stop_cluster()
    except TidegateError as error:
        _fail(error.message, EXIT_ERROR)
    finally:
        engine.close()
    where = settings.data_dir / "flink"
    if taken is None:
        print(f"tidegate: no local Flink cluster was running in {where}")
        return
    for job_id, location in taken:
        print(f"tidegate: Flink job {job_id}: savepoint {location}")
    print(f"tidegate: the local Flink cluster in {where} is stopped ({len(taken)} savepoints taken)")


def cmd_gcs_emulator(args: argparse.Namespace) -> None:
    """Serve a GCS emulator until interrupted (SIGINT or SIGTERM)."""
    import signal
    import threading

    from tidegate.gcs_emulator import EMULATOR_ENV, GcsEmulator

    emulator = GcsEmulator(args.host, args.port, Path(args.data_dir) if args.data_dir else None, args.bucket)
    try:
        emulator.start()
    except OSError as exc:
        _fail(f"cannot serve the GCS emulator on {args.host}:{args.port}: {exc}", EXIT_ERROR)
    except RuntimeError as exc:
        _fail(str(exc), EXIT_ERROR)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    where = f"data in {args.data_dir}" if args.data_dir else "data in memory"
    buckets = f"; buckets: {', '.join(args.bucket)}" if args.bucket else ""
    print(f"tidegate: GCS emulator on {emulator.url} ({where}{buckets})", flush=True)
    print(f"tidegate: clients use it with {EMULATOR_ENV}={emulator.url}", flush=True)
    try:
        while not stopped.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


def cmd_run(args: argparse.Namespace) -> None:
    """``tidegate run``: submit a pipeline script and follow its job (see ``tidegate.run``)."""
    from tidegate.cli.run import run_pipeline

    code = run_pipeline(args, Client(args.server, ca_file=args.ca_file))
    if code:
        raise SystemExit(code)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tidegate", description="A self-hosted job service with Dataflow's job model.")
    parser.add_argument("--version", action="version", version=f"tidegate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser("server", help="run the tidegate server")
    server.add_argument("--host", default=os.environ.get("TIDEGATE_HOST", "127.0.0.1"))
    server.add_argument("--port", type=int, default=int(os.environ.get("TIDEGATE_PORT", "8080")))
    server.add_argument(
        "--grpc-port",
        type=int,
        default=int(os.environ.get("TIDEGATE_GRPC_PORT", "8093")),
        help="the gRPC API's port (0: no gRPC API)",
    )
    server.add_argument(
        "--job-port",
        type=int,
        default=int(os.environ.get("TIDEGATE_JOB_PORT", "8099")),
        help="Beam's Job API port, for PortableRunner's --job_endpoint (0: no Job API)",
    )
    server.add_argument("--data-dir", default=None, help="where the SQLite database and job files live")
    server.add_argument(
        "--database-url",
        default=os.environ.get("TIDEGATE_DATABASE_URL"),
        help="postgresql://… to keep state in PostgreSQL instead of SQLite",
    )
    server.add_argument(
        "--location",
        default=os.environ.get("TIDEGATE_LOCATION", "us-central1"),
        help="the default location (what location-less paths mean)",
    )
    server.add_argument(
        "--engines",
        default=os.environ.get("TIDEGATE_ENGINES", "beam"),
        help="comma-separated engines to run jobs on (beam, flink); 'none' for an API-only server",
    )
    server.add_argument("--max-jobs", type=int, default=4, help="jobs running at once (0: no limit)")
    server.add_argument("--max-jobs-per-project", type=int, default=0, help="jobs running at once per project")
    server.add_argument("--flex-window", type=float, default=6 * 3600, help="seconds a FlexRS job may wait")
    server.add_argument("--resource-cleanup", action="store_true", help="clean up every batch job's files before DONE")
    server.add_argument(
        "--flink-rest-url",
        default=os.environ.get("TIDEGATE_FLINK_REST_URL"),
        help="an existing Flink cluster's REST address for the flink engine (default: a local cluster)",
    )
    server.add_argument(
        "--flink-checkpoint-interval",
        type=float,
        metavar="SECONDS",
        default=float(os.environ.get("TIDEGATE_FLINK_CHECKPOINT_INTERVAL", "10")),
        help="how often the local Flink cluster's jobs checkpoint; 0: never (jobs of a lost cluster resume from there)",
    )
    server.add_argument(
        "--gcs-emulator",
        type=int,
        metavar="PORT",
        default=int(os.environ.get("TIDEGATE_GCS_EMULATOR_PORT", "0")),
        help="start a GCS emulator on PORT for gs:// staging (the server and its jobs use it; 0: none)",
    )
    server.add_argument(
        "--gcs-bucket", action="append", default=[], metavar="NAME", help="a bucket the GCS emulator creates"
    )
    server.add_argument(
        "--launcher-python",
        default=os.environ.get("TIDEGATE_LAUNCHER_PYTHON"),
        metavar="PYTHON",
        help="the Python that runs flex templates' Beam programs; it needs apache-beam[gcp] (default: the server's)",
    )

    server.add_argument(
        "--staging-root",
        action="append",
        default=[p for p in os.environ.get("TIDEGATE_STAGING_ROOTS", "").split(os.pathsep) if p],
        metavar="FOLDER",
        help="a folder whose files clients may name (staged pipelines, templates, programs, local temp"
        " locations); repeatable. The data directory's staging folder always is one",
    )
    server.add_argument(
        "--tls-cert",
        default=os.environ.get("TIDEGATE_TLS_CERT"),
        metavar="PEM",
        help="serve REST and gRPC over TLS with this certificate (chain); needs --tls-key",
    )
    server.add_argument(
        "--tls-key", default=os.environ.get("TIDEGATE_TLS_KEY"), metavar="PEM", help="the certificate's private key"
    )

    flink = commands.add_parser("flink", help="the local Flink cluster the server's flink engine runs jobs on")
    flink_actions = flink.add_subparsers(dest="flink_action", required=True)
    flink_stop = flink_actions.add_parser(
        "stop",
        help="stop the local Flink cluster on purpose, a savepoint of each running job first"
        " (a server resumes them from there); stop tidegate server first",
    )
    flink_stop.add_argument("--data-dir", default=None, help="the server's data directory (default: as the server's)")

    emulator = commands.add_parser("gcs-emulator", help="run a GCS emulator for gs:// paths (STORAGE_EMULATOR_HOST)")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=9023)
    emulator.add_argument("--data-dir", default=None, help="where objects are kept (default: in memory)")
    emulator.add_argument("--bucket", action="append", default=[], metavar="NAME", help="a bucket to create at start")

    jobs = commands.add_parser("jobs", help="list, describe, cancel and drain jobs")
    common = _Parser(add_help=False)
    common.add_argument("--server", default=os.environ.get("TIDEGATE_SERVER", "http://127.0.0.1:8080"))
    common.add_argument(
        "--ca-file",
        default=os.environ.get("TIDEGATE_CA_FILE"),
        metavar="PEM",
        help="trust the CA certificates in this file for an https:// --server (default: SSL_CERT_FILE or the system)",
    )
    common.add_argument("--project", default=os.environ.get("TIDEGATE_PROJECT", "local"))
    common.add_argument("--region", default=os.environ.get("TIDEGATE_REGION", "us-central1"))
    common.add_argument("--format", choices=["table", "json"], default="table")
    actions = jobs.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", parents=[common], help="list jobs")
    listing.add_argument("--status", choices=sorted(_STATUS_FILTERS), default="all")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--all-regions", action="store_true", help="list jobs of every region")
    listing.set_defaults(run=cmd_list)
    describe = actions.add_parser("describe", parents=[common], help="show one job")
    describe.add_argument("job_id")
    describe.add_argument("--full", action="store_true", help="the whole job (JOB_VIEW_ALL)")
    describe.set_defaults(run=cmd_describe)
    for name, run, text in (("cancel", cmd_cancel, "cancel jobs"), ("drain", cmd_drain, "drain streaming jobs")):
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("job_ids", nargs="+", metavar="JOB_ID")
        action.set_defaults(run=run)
    messages = actions.add_parser("messages", parents=[common], help="show a job's messages")
    messages.add_argument("job_id")
    messages.add_argument(
        "--importance", choices=["debug", "detailed", "basic", "warning", "error"], default="detailed"
    )
    messages.set_defaults(run=cmd_messages)
    history = actions.add_parser("history", parents=[common], help="show a job's state changes")
    history.add_argument("job_id")
    history.set_defaults(run=cmd_history)

    run_parser = commands.add_parser(
        "run",
        parents=[common],
        help="submit a Beam pipeline script to the server and follow its job",
        description="Run PIPELINE with Beam's DataflowRunner pointed at the server, then follow the job: state"
        " changes and messages as they happen. Exits 0 when the job is done, drained or updated (replaced),"
        " 1 when it fails or is cancelled (Ctrl-C cancels it).",
    )
    run_parser.add_argument(
        "--python", default=sys.executable, help="the Python with apache-beam[gcp] that runs PIPELINE"
    )
    run_parser.add_argument("--engine", choices=["beam", "flink"], default="beam", help="the engine to run the job on")
    run_parser.add_argument("--batch", action="store_true", help="--engine flink: a batch job (default: streaming)")
    run_parser.add_argument(
        "--importance",
        choices=["debug", "detailed", "basic", "warning", "error"],
        default="basic",
        help="the least important job messages to show",
    )
    run_parser.add_argument(
        "--verbose", action="store_true", help="show the script's own log (standard error) and whole tracebacks"
    )
    run_parser.add_argument("pipeline", metavar="PIPELINE.py")
    run_parser.add_argument("pipeline_args", nargs=argparse.REMAINDER, metavar="ARGS", help="the pipeline's arguments")
    return parser


class _Reported(Exception):
    """A command's errors were printed already (one line each): exit with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _fail(message: str, code: int) -> NoReturn:
    one_line = " ".join(message.split())
    print(f"ERROR: (tidegate) {one_line}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        _main(argv)
    except BrokenPipeError:  # piped into head, which has read its fill: end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the exit flushes stdout again)
        raise SystemExit(0) from None
    except _Reported as reported:
        raise SystemExit(reported.code) from None


def _main(argv: Sequence[str] | None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "server":
        cmd_server(args)
        return
    if args.command == "gcs-emulator":
        cmd_gcs_emulator(args)
        return
    if args.command == "flink":
        cmd_flink_stop(args)
        return
    if args.command == "run":
        try:
            cmd_run(args)
        except CliError as error:
            _fail(str(error), error.code)
        return
    if args.action == "list" and args.all_regions:
        args.region = None
    if getattr(args, "limit", 1) < 1:
        _fail("--limit must be at least 1", EXIT_USAGE)
    try:
        args.run(args, Client(args.server, ca_file=args.ca_file))
    except CliError as error:
        _fail(str(error), error.code)


if __name__ == "__main__":
    main()

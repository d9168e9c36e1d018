"""The ``tidegate`` command line, modelled on ``gcloud dataflow``: the parser and ``main``, and the
commands that run a server (``server``, ``flink stop``, ``gcs-emulator``). The client commands live in
``jobs``, ``snapshots`` and ``config``; ``run`` in ``run``.

Exit codes: 0 success; 2 bad usage; 3 no such job; 4 the server refused the request
(an illegal request, bad input, a name already taken); 5 the server cannot be
reached; 1 anything else. Errors are one line on standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from tidegate import __version__
from tidegate.cli import config, jobs, snapshots
from tidegate.cli.client import EXIT_ERROR, EXIT_USAGE, Client, CliError, credential
from tidegate.cli.credentials import add_credential_commands
from tidegate.cli.output import Reported, fail
from tidegate.config import FLINK_PYTHON_MODES

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with bad usage reported like every other error: one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


def cmd_server(args: argparse.Namespace) -> None:
    from tidegate.config import Settings, default_data_dir
    from tidegate.server import serve

    if args.flink_python_mode not in ("", *FLINK_PYTHON_MODES):  # from TIDEGATE_FLINK_PYTHON_MODE
        known = ", ".join(FLINK_PYTHON_MODES)
        fail(f"unknown Flink Python mode {args.flink_python_mode!r} (known: {known})", EXIT_USAGE)
    if args.flink_warm_submitters < 1:
        fail(f"--flink-warm-submitters must be at least 1, not {args.flink_warm_submitters}", EXIT_USAGE)
    settings = Settings(
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        job_port=args.job_port,
        data_dir=Path(args.data_dir) if args.data_dir else default_data_dir(),
        database_url=args.database_url or "",
        database_pool_size=args.database_pool_size,
        default_location=args.location,
        engines=tuple(e for e in args.engines.split(",") if e and e != "none"),
        max_jobs=args.max_jobs,
        max_jobs_per_project=args.max_jobs_per_project,
        flex_window_s=args.flex_window,
        resource_cleanup=args.resource_cleanup,
        flink_rest_url=args.flink_rest_url or "",
        flink_checkpoint_interval_s=args.flink_checkpoint_interval,
        flink_python_mode=args.flink_python_mode,
        flink_warm_submit=not args.flink_cold_submit,
        flink_warm_submitters=args.flink_warm_submitters,
        gcs_emulator_port=args.gcs_emulator or 0,
        gcs_buckets=tuple(args.gcs_bucket),
        launcher_python=args.launcher_python or "",
        run_as=args.run_as or "",
        worker_python=args.worker_python or "",
        log_format=args.log_format,
        access_log=args.access_log,
        insecure=args.insecure,
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
        fail(error.message, EXIT_ERROR)
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
        fail(f"cannot serve the GCS emulator on {args.host}:{args.port}: {exc}", EXIT_ERROR)
    except RuntimeError as exc:
        fail(str(exc), EXIT_ERROR)
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

    code = run_pipeline(args, Client(args.server, token=credential(args), ca_file=args.ca_file))
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
        "--database-pool-size",
        type=int,
        default=int(os.environ.get("TIDEGATE_DATABASE_POOL_SIZE", "4")),
        help="PostgreSQL connections for the API's writes, and as many for its reads (default 4)",
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
        "--flink-python-mode",
        choices=FLINK_PYTHON_MODES,
        default=os.environ.get("TIDEGATE_FLINK_PYTHON_MODE", ""),
        help="how Flink jobs run their Python functions: in the TaskManager (thread: the local cluster's default;"
        " a cluster given by --flink-rest-url needs flink-python in its lib/ and pemja. loaded parent-first)"
        " or in Python worker processes (process: PyFlink's default, for a cluster given by --flink-rest-url)."
        " A local cluster already running keeps its own",
    )
    server.add_argument(
        "--flink-cold-submit",
        action="store_true",
        default=os.environ.get("TIDEGATE_FLINK_COLD_SUBMIT", "") not in ("", "0"),
        help="submit every Flink job with `flink run` (default: through a PyFlink submitter kept ready)",
    )
    server.add_argument(
        "--flink-warm-submitters",
        type=int,
        metavar="N",
        default=os.environ.get("TIDEGATE_FLINK_WARM_SUBMITTERS", "2"),  # a string: argparse checks it as --flink-...
        help="how many PyFlink submitters are kept ready, about 300 MB each (default 2: a job right after"
        " another, an update of a job just started, finds one ready)",
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
        "--run-as",
        default=os.environ.get("TIDEGATE_RUN_AS_USER"),
        metavar="USER",
        help="run jobs' code (Beam pipelines, flex templates' programs) as this user, not the server's;"
        " the server must run as root",
    )
    server.add_argument(
        "--worker-python",
        default=os.environ.get("TIDEGATE_WORKER_PYTHON"),
        metavar="PYTHON",
        help="the Python that runs Beam pipelines; it needs tidegate and apache-beam (default: the server's)",
    )

    server.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("TIDEGATE_LOG_FORMAT", "text"),
        help="json: the server's log as one JSON object per line (time, level, logger, message, exception)",
    )
    server.add_argument("--access-log", action="store_true", help="a log line for every HTTP request")
    server.add_argument(
        "--insecure",
        action="store_true",
        help="serve on an address other than loopback although no credential exists: open to anyone who reaches it",
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

    common = _Parser(add_help=False)
    common.add_argument("--server", default=None, help="the server's REST URL (default: see tidegate config)")
    common.add_argument("--project", default=None, help="the project (default: see tidegate config)")
    common.add_argument("--region", default=None, help="the region (default: see tidegate config)")
    common.add_argument(
        "--ca-file",
        default=os.environ.get("TIDEGATE_CA_FILE"),
        metavar="PEM",
        help="trust the CA certificates in this file for an https:// --server (default: SSL_CERT_FILE or the system)",
    )
    common.add_argument("--format", choices=["table", "json"], default="table")
    common.add_argument(
        "--token", default=None, help="an API token to call the server with (default: see tidegate config)"
    )
    jobs.register(commands, common, _Parser)
    snapshots.register(commands, common, _Parser)
    config.register(commands, _Parser)
    add_credential_commands(commands)

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
        choices=jobs.IMPORTANCES,
        default="basic",
        help="the least important job messages to show",
    )
    run_parser.add_argument(
        "--verbose", action="store_true", help="show the script's own log (standard error) and whole tracebacks"
    )
    run_parser.add_argument("pipeline", metavar="PIPELINE.py")
    run_parser.add_argument("pipeline_args", nargs=argparse.REMAINDER, metavar="ARGS", help="the pipeline's arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    try:
        _main(argv)
    except BrokenPipeError:  # piped into head, which has read its fill: end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the exit flushes stdout again)
        raise SystemExit(0) from None
    except Reported as reported:
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
    try:
        if args.command == "config":
            args.run(args)
            return
        if "run_local" in args:  # service-accounts, tokens: on the store itself
            args.run_local(args)
            return
        config.apply(args)
        if args.command == "run":
            cmd_run(args)
            return
        if getattr(args, "limit", 1) < 1:
            raise CliError("--limit must be at least 1", EXIT_USAGE)
        args.run(args, Client(args.server, token=credential(args), ca_file=args.ca_file))
    except CliError as error:
        fail(str(error), error.code)


if __name__ == "__main__":
    main()

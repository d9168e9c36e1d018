"""``tidegate run PIPELINE.py [ARGS…]``: submit a pipeline script to a tidegate server and follow its job.

With the Beam engine (the default), the script runs with ``--python`` (default: this
interpreter) and Beam's ``DataflowRunner`` options appended: the server as
``--dataflow_endpoint`` (spelled ``localhost`` for a loopback server, as Beam wants),
``--no_auth`` (unless ``GOOGLE_APPLICATION_CREDENTIALS`` names a key file, which Beam then
signs in with), the project and region, a job name of tidegate's choosing and, unless the
script's arguments name one, a fresh local ``--temp_location``. Options the script's
arguments already carry win. The script runs in its own session: Ctrl-C reaches tidegate
only, which cancels the job (a second Ctrl-C stops following and leaves the job be).

tidegate finds the job by its name, then follows it over REST: every state change and
every message (from ``--importance`` up) as it comes. Messages are read page by page
with ``pageToken``; the last page is read again on the next poll, so late messages are
never missed and none is shown twice. The script's standard output passes through; its
standard error is kept and shown when it matters (``--verbose`` shows it as it comes).

With ``--engine flink`` the program (a PyFlink program or Flink SQL script, read by the
server) is submitted directly as a job for tidegate's Flink engine.

A job name that an active job has (``--job_name``) creates nothing: the server answers
with that job, DataflowRunner raises ``DataflowJobAlreadyExistsError``, and tidegate run
ends with Beam's words (exit code 4).

Exit codes: 0 the job is done; 1 it failed or was cancelled, or the script ended without
submitting a job; 2 bad usage; 3, 4, 5 as the ``jobs`` commands (not found, refused,
unreachable); 130 stopped by Ctrl-C before the end. The reason is one line on standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse, urlunparse

import httpx

from tidegate.cli.client import EXIT_ERROR, EXIT_REJECTED, EXIT_USAGE, Client, CliError, job_path
from tidegate.cli.follow import POLL_SECONDS, Follower, Interrupts, follow, outcome, say
from tidegate.engines.base import WORKING_FOLDER_EXPERIMENT
from tidegate.gcs_emulator import EMULATOR_ENV, ensure_bucket

__all__ = ["beam_endpoint", "job_name_for", "last_line", "option_value", "run_pipeline", "staging_folder"]

SCRIPT_GRACE_SECONDS = 60.0
"""How long a script may go on after its job ended (DataflowRunner notices the end by polling)."""
_SERVER_ERROR = re.compile(r"details of server error: (\d{3}) \S+ \S+: (.*?)(?: \[\{'@type'.*)?$", re.M)
_ALREADY_EXISTS = re.compile(r"DataflowJobAlreadyExistsError: (.+)$", re.M)
"""What DataflowRunner raises when CreateJob answers another job: the name's active job, or an update's."""


def last_line(text: str) -> str:
    """The last non-blank line (of a script's traceback: its exception)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def option_value(argv: Sequence[str], name: str) -> str | None:
    """The value of ``--name=value`` or ``--name value`` in ``argv`` (the last one), else None."""
    flag = f"--{name}"
    found: str | None = None
    for i, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            found = arg[len(flag) + 1 :]
        elif arg == flag and i + 1 < len(argv):
            found = argv[i + 1]
    return found


def beam_endpoint(server: str) -> str:
    """The server's URL as ``--dataflow_endpoint``: a loopback host spelled ``localhost``.

    Beam's DataflowRunner treats any other host as a gRPC endpoint with TLS.
    """
    parsed = urlparse(server.rstrip("/"))
    if parsed.hostname in ("127.0.0.1", "::1", "0.0.0.0", "localhost"):
        netloc = f"localhost:{parsed.port}" if parsed.port else "localhost"
        parsed = parsed._replace(netloc=netloc)
    return urlunparse(parsed)


def job_name_for(pipeline: Path) -> str:
    """A fresh Dataflow job name (``[a-z]([-a-z0-9]*[a-z0-9])?``) from the script's name."""
    stem = re.sub(r"[^a-z0-9]+", "-", pipeline.stem.lower()).strip("-")[:40] or "pipeline"
    if not stem[0].isalpha():
        stem = f"job-{stem}"
    return f"{stem}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _script_args(args: argparse.Namespace) -> list[str]:
    """The arguments for the script (a leading ``--`` only separates them from tidegate's)."""
    user_args = list(args.pipeline_args)
    return user_args[1:] if user_args[:1] == ["--"] else user_args


def _stop_script(proc: subprocess.Popen[bytes]) -> None:
    """End the script's whole session (it may have started processes of its own)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


def _jobs_named(client: Client, path: str, name: str) -> list[str]:
    """The ids of the jobs called ``name`` (every page)."""
    ids: list[str] = []
    params: dict[str, Any] = {"name": name, "filter": "ALL", "pageSize": 1000}
    while True:
        page = client.call("GET", path, params=params)
        ids += [str(j.get("id")) for j in page.get("jobs", []) if j.get("name") == name]
        if not page.get("nextPageToken"):
            return ids
        params["pageToken"] = page["nextPageToken"]


def _find_job(client: Client, path: str, name: str, before: set[str]) -> str | None:
    """The id of a job called ``name`` that was not there before the script ran."""
    return next((job_id for job_id in _jobs_named(client, path, name) if job_id not in before), None)


def _lacks_dataflow_runner(python: str) -> bool:
    """Whether ``python`` misses what DataflowRunner imports when it submits (asked only after a failure)."""
    check = "import apache_beam.runners.dataflow.internal.apiclient"
    try:
        done = subprocess.run([python, "-c", check], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode != 0


def _already_exists(stderr: str) -> CliError | None:
    """DataflowRunner's refusal to take another job for its own (the server answered a job of that name), if any."""
    found = _ALREADY_EXISTS.findall(stderr)
    if not found:
        return None
    return CliError(f"no job was created: {found[-1].strip()}", EXIT_REJECTED)


def _submission_error(stderr: str, code: int | None) -> CliError:
    """Why a script ended without a job: the server's refusal if Beam logged one, else its last line."""
    refused = _SERVER_ERROR.findall(stderr)
    if refused:
        status, message = refused[-1]
        exit_code = {"400": EXIT_REJECTED, "409": EXIT_REJECTED}.get(status, EXIT_ERROR)
        return CliError(f"the server refused the job: {message} (HTTP {status})", exit_code)
    last = last_line(stderr)
    if code:
        return CliError(f"the pipeline script exited with {code} before a job was created: {last}", EXIT_ERROR)
    return CliError(
        "the pipeline script ended without submitting a job to tidegate (does it pass its command-line"
        " arguments to PipelineOptions?)" + (f"; its last words: {last}" if last else ""),
        EXIT_ERROR,
    )


def staging_folder(client: Client) -> Path | None:
    """The first of the server's staging roots that is a folder this process can write to, if any.

    The server reads staged files only from its staging roots: a server on this machine, run
    by this user, has its data directory's staging folder among them.
    """
    for root in _staging_roots(client):
        folder = Path(str(root))
        if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
            return folder
    return None


def _in_staging_root(client: Client, path: Path) -> bool:
    roots = _staging_roots(client)
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(os.path.realpath(root)) for root in roots)


def _staging_roots(client: Client) -> list[str]:
    try:
        return [str(root) for root in client.call("GET", "/tidegate/v1/staging").get("stagingRoots", [])]
    except CliError:  # an older server, or a proxy in front of it: stage as before
        return []


@contextlib.contextmanager
def _fresh_folder(client: Client) -> Iterator[Path]:
    """A fresh folder in a staging root of the server's (else in the system's temporary folder), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="tidegate-run-", dir=staging_folder(client)))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _temp_location(args: argparse.Namespace, client: Client, user_args: Sequence[str]) -> Iterator[list[str]]:
    """``--temp_location`` to add (a fresh local folder, removed at the end) unless the script has one."""
    given = option_value(user_args, "temp_location")
    if given is None:
        with _fresh_folder(client) as folder:
            yield [f"--temp_location={folder}"]
        return
    if given.startswith("gs://"):
        _prepare_bucket(given, option_value(user_args, "project") or args.project)
    yield []


def _prepare_bucket(location: str, project: str) -> None:
    """Create a ``gs://`` temp location's bucket in the GCS emulator (Beam retries a missing one for minutes)."""
    emulator = os.environ.get(EMULATOR_ENV, "")
    bucket = urlparse(location).netloc
    if not emulator:
        say(
            f"warning: {location} is read by the server from a GCS emulator: set {EMULATOR_ENV} here and for"
            " the server (tidegate server --gcs-emulator PORT starts one)"
        )
        return
    try:
        if ensure_bucket(emulator, bucket, project):
            say(f"created the bucket gs://{bucket} in the GCS emulator at {emulator}")
    except httpx.HTTPError as error:
        raise CliError(
            f"cannot prepare gs://{bucket} in the GCS emulator at {emulator}: {error}", EXIT_ERROR
        ) from error


def _beam_args(args: argparse.Namespace, user_args: Sequence[str], name: str) -> list[str]:
    added = ["--runner=DataflowRunner", f"--dataflow_endpoint={beam_endpoint(args.server)}"]
    if not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):  # else Beam signs in with that key file
        added.append("--no_auth")
    added.append(f"--experiments={WORKING_FOLDER_EXPERIMENT}={Path.cwd()}")  # relative paths: as for a local run
    for option, value in (("project", args.project), ("region", args.region), ("job_name", name)):
        if option_value(user_args, option) is None:
            added.append(f"--{option}={value}")
    return added


def _run_beam(args: argparse.Namespace, client: Client, pipeline: Path) -> int:
    user_args = _script_args(args)
    project = option_value(user_args, "project") or args.project
    region = option_value(user_args, "region") or args.region
    name = option_value(user_args, "job_name") or job_name_for(pipeline)
    where = argparse.Namespace(project=project, region=region)
    jobs_path = job_path(where)
    before = set(_jobs_named(client, jobs_path, name))  # also: is the server there at all?
    with _temp_location(args, client, user_args) as temp_args, Interrupts() as interrupts:
        command = [args.python, str(pipeline), *user_args, *_beam_args(args, user_args, name), *temp_args]
        say(f"running {pipeline.name} with {args.python}: job {name} on {args.server} ({project}, {region})")
        with tempfile.TemporaryFile() as stderr:
            proc = _start(command, None if args.verbose else stderr)
            try:
                return _submit_andfollow(args, client, proc, stderr, interrupts, jobs_path, name, before)
            except KeyboardInterrupt:
                raise CliError("stopped following; the job goes on (tidegate jobs cancel JOB_ID)", 130) from None
            finally:
                _stop_script(proc)


def _start(command: list[str], stderr: IO[bytes] | None) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    except OSError as error:
        raise CliError(f"cannot run {command[0]}: {error}", EXIT_USAGE) from error


def _submit_andfollow(
    args: argparse.Namespace,
    client: Client,
    proc: subprocess.Popen[bytes],
    stderr: IO[bytes],
    interrupts: Interrupts,
    jobs_path: str,
    name: str,
    before: set[str],
) -> int:
    def script_log() -> str:
        stderr.seek(0)
        return stderr.read().decode(errors="replace")

    job_id = None
    while job_id is None:
        exited = proc.poll() is not None
        job_id = _find_job(client, jobs_path, name, before)
        if job_id is None and exited:
            log = script_log()
            taken = _already_exists(log)
            if taken is not None:  # Beam's own words say it all: no traceback
                raise taken
            if log.strip() and proc.returncode:
                sys.stderr.write(log[-4000:])
            if _lacks_dataflow_runner(args.python):
                raise CliError(
                    f"{args.python} cannot run Beam's DataflowRunner (it needs apache-beam[gcp]):"
                    " pass --python a Python that has it",
                    EXIT_USAGE,
                )
            raise _submission_error(log, proc.returncode)
        if job_id is None and interrupts.count:
            _stop_script(proc)
            late = _find_job(client, jobs_path, name, before)  # created while the script was being stopped
            if late is not None:
                client.call("PUT", f"{jobs_path}/{late}", body={"requestedState": "JOB_STATE_CANCELLED"})
            raise CliError("interrupted before the job was created" + (f"; cancelled {late}" if late else ""), 130)
        if job_id is None:
            time.sleep(POLL_SECONDS)
    say(f"job {job_id} created: {client.server}{jobs_path}/{job_id}")
    job_path = f"{jobs_path}/{job_id}"
    importance = f"JOB_MESSAGE_{args.importance.upper()}"
    follower = Follower(client, job_path, importance, args.verbose)
    job = follow(follower, interrupts, job_id, cancel_path=job_path)
    if job.get("currentState") == "JOB_STATE_DONE":
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(SCRIPT_GRACE_SECONDS)  # what it prints after the job (its results) is worth waiting for
    code = outcome(job, follower, bool(interrupts.count))
    if proc.returncode:  # the job is done, but the script went wrong after it
        raise CliError(
            f"job {job_id} is done, but {Path(args.pipeline).name} exited with {proc.returncode}:"
            f" {last_line(script_log())}",
            EXIT_ERROR,
        )
    return code


def _run_flink(args: argparse.Namespace, client: Client, program: Path) -> int:
    """Submit a PyFlink program or Flink SQL script as a job for the Flink engine, then follow it."""
    user_args = _script_args(args)
    request_id = secrets.token_hex(16)
    body: dict[str, Any] = {
        "name": job_name_for(program),
        "clientRequestId": request_id,
        "type": "JOB_TYPE_BATCH" if args.batch else "JOB_TYPE_STREAMING",
    }

    def create(path: Path) -> Any:
        own = {"tidegate": {"engine": "flink", "program": str(path), "args": user_args}}
        return client.call("POST", jobs_path, body={**body, "environment": {"sdkPipelineOptions": {"options": own}}})

    jobs_path = job_path(args)
    if _in_staging_root(client, program):
        job = create(program)
    else:
        with _fresh_folder(client) as folder:  # the server reads the program at create, from a folder it trusts
            shutil.copyfile(program, folder / program.name)
            job = create(folder / program.name)
    job_id = str(job["id"])
    if job.get("clientRequestId") != request_id:  # CreateJob answered the active job of that name, not ours
        raise CliError(
            f"no job was created: job {job_id} is already active under the name {body['name']}", EXIT_REJECTED
        )
    say(f"job {job_id} created: {client.server}{jobs_path}/{job_id}")
    follower = Follower(client, f"{jobs_path}/{job_id}", f"JOB_MESSAGE_{args.importance.upper()}", args.verbose)
    with Interrupts() as interrupts:
        try:
            final = follow(follower, interrupts, job_id, cancel_path=f"{jobs_path}/{job_id}")
        except KeyboardInterrupt:
            raise CliError("stopped following; the job goes on (tidegate jobs cancel JOB_ID)", 130) from None
    return outcome(final, follower, bool(interrupts.count))


def run_pipeline(args: argparse.Namespace, client: Client) -> int:
    """``tidegate run``: the exit code (0 when the job is done); raises ``CliError`` with the reason otherwise."""
    pipeline = Path(args.pipeline).resolve()
    if not pipeline.is_file():
        raise CliError(f"no such pipeline file: {args.pipeline}", EXIT_USAGE)
    if args.engine == "flink":
        return _run_flink(args, client, pipeline)
    if args.batch:
        raise CliError("--batch is for --engine flink (a Beam pipeline says --streaming itself)", EXIT_USAGE)
    return _run_beam(args, client, pipeline)

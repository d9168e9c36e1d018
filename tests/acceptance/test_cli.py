"""``tidegate jobs …`` as a user runs it: a subprocess against a running ``tidegate server``.

Jobs are made over REST (the command line has no create); everything else goes through
the command: its output (tables and ``--format json``), its exit codes (0 ok, 2 bad
usage, 3 not found, 4 refused, 5 unreachable) and its one-line errors on stderr.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .conftest import LOCATION, TIDEGATE, Server, clean_env, closed_port

pytestmark = pytest.mark.slow

OTHER_LOCATION = "europe-west1"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def table(self) -> list[list[str]]:
        """The rows of a table, header first, split on runs of two or more spaces."""
        return [re.split(r"\s{2,}", line.strip()) for line in self.out.splitlines() if line.strip()]


def run(*args: str) -> Run:
    done = subprocess.run([str(TIDEGATE), *args], capture_output=True, text=True, timeout=60, env=clean_env())
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=30) as client:
        yield client


@dataclass
class Cli:
    """``tidegate jobs`` pointed at the server and a project of the test's own."""

    server: Server
    http: httpx.Client
    project: str

    def __call__(self, *args: str) -> Run:
        """``tidegate jobs ARGS`` (``tidegate snapshots …`` for ``"snapshots", …``)."""
        group = [] if args[:1] == ("snapshots",) else ["jobs"]
        return run(*group, *args, "--server", self.server.base, "--project", self.project)

    def create(self, name: str, location: str = LOCATION, **job: Any) -> str:
        response = self.http.post(
            f"/v1b3/projects/{self.project}/locations/{location}/jobs",
            json={"name": name, "requestedState": "JOB_STATE_STOPPED", **job},
        )
        assert response.status_code == 200, response.text
        job_id: str = response.json()["id"]
        return job_id

    def state(self, job_id: str, location: str = LOCATION) -> str:
        job = self.http.get(f"/v1b3/projects/{self.project}/locations/{location}/jobs/{job_id}").json()
        state: str = job["currentState"]
        return state


@pytest.fixture
def cli(server: Server, http: httpx.Client, project: str) -> Cli:
    return Cli(server, http, project)


def assert_failed(result: Run, code: int, *words: str) -> None:
    """A failure: the exit code, nothing on stdout, one line on stderr starting with 'ERROR: (tidegate)'."""
    assert result.code == code, result
    assert result.out == "", result
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("ERROR: (tidegate) "), result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0], (word, lines[0])


# -- list -----------------------------------------------------------------------------------


def test_list_table_and_json_with_each_status(cli: Cli) -> None:
    old = cli.create("old-job")
    assert cli("cancel", old).code == 0
    new = cli.create("new-job")

    table = cli("list")
    assert table.code == 0 and table.err == "", table
    rows = table.table()
    assert rows[0] == ["JOB_ID", "NAME", "TYPE", "CREATION_TIME", "STATE", "REGION"]
    assert [row[0] for row in rows[1:]] == [new, old]  # active first, then terminated
    assert rows[1][1:3] == ["new-job", "Batch"] and rows[1][4:] == ["Stopped", LOCATION]
    assert rows[2][4] == "Cancelled"

    listed = cli("list", "--format", "json")
    assert listed.code == 0
    assert [(j["id"], j["currentState"]) for j in listed.json()] == [
        (new, "JOB_STATE_STOPPED"),
        (old, "JOB_STATE_CANCELLED"),
    ]
    for status, expected in (("active", [new]), ("terminated", [old]), ("all", [new, old])):
        result = cli("list", "--status", status, "--format", "json")
        assert result.code == 0, result
        assert [j["id"] for j in result.json()] == expected, status

    assert cli("list", "--limit", "1", "--format", "json").json()[0]["id"] == new
    assert len(cli("list", "--limit", "1", "--format", "json").json()) == 1


def test_list_by_project_and_region(cli: Cli) -> None:
    here = cli.create("here")
    there = cli.create("there", location=OTHER_LOCATION)
    assert [j["id"] for j in cli("list", "--format", "json").json()] == [here]
    assert [j["id"] for j in cli("list", "--region", OTHER_LOCATION, "--format", "json").json()] == [there]
    everywhere = cli("list", "--all-regions", "--format", "json").json()
    assert {(j["id"], j["location"]) for j in everywhere} == {(here, LOCATION), (there, OTHER_LOCATION)}
    table = cli("list", "--all-regions").table()
    assert {row[0]: row[-1] for row in table[1:]} == {here: LOCATION, there: OTHER_LOCATION}

    empty = run("jobs", "list", "--server", cli.server.base, "--project", f"{cli.project}-empty")
    assert empty.code == 0 and empty.out.strip() == "Listed 0 items."
    empty_json = run("jobs", "list", "--format", "json", "--server", cli.server.base, "--project", f"{cli.project}-x")
    assert empty_json.code == 0 and empty_json.json() == []


def test_list_limit(cli: Cli) -> None:
    jobs = [cli.create(f"job-{n}") for n in range(7)]
    listed = cli("list", "--format", "json", "--limit", "5")
    assert [j["id"] for j in listed.json()] == list(reversed(jobs))[:5]


# -- describe, cancel, drain, messages, history --------------------------------------------


def test_describe(cli: Cli) -> None:
    job_id = cli.create("described", labels={"team": "data"})
    text = cli("describe", job_id)
    assert text.code == 0, text
    lines = text.out.splitlines()
    assert f"id: {job_id}" in lines
    assert "currentState: JOB_STATE_STOPPED" in lines
    assert "name: described" in lines
    assert 'labels: {"team": "data"}' in lines
    described = cli("describe", job_id, "--format", "json")
    assert described.json()["id"] == job_id and described.json()["labels"] == {"team": "data"}
    full = cli("describe", job_id, "--full", "--format", "json")
    assert full.code == 0 and full.json()["id"] == job_id


def test_cancel_then_messages_and_history(cli: Cli) -> None:
    first, second = cli.create("first"), cli.create("second")
    cancelled = cli("cancel", first, second)
    assert cancelled.code == 0, cancelled
    assert cancelled.out.splitlines() == [
        f"Cancelled job [{first}]: now Cancelled.",
        f"Cancelled job [{second}]: now Cancelled.",
    ]
    assert cli.state(first) == cli.state(second) == "JOB_STATE_CANCELLED"
    again = cli("cancel", first, "--format", "json")  # a retried cancel is fine
    assert again.code == 0 and again.json()[0]["currentState"] == "JOB_STATE_CANCELLED"

    messages = cli("messages", first)
    assert messages.code == 0, messages
    rows = messages.table()
    assert rows[0] == ["TIME", "IMPORTANCE", "TEXT"]
    texts = [row[-1] for row in rows[1:]]
    assert any("created" in t for t in texts) and any("JOB_STATE_CANCELLED" in t for t in texts), texts
    as_json = cli("messages", first, "--format", "json", "--importance", "basic").json()
    assert {m["messageImportance"] for m in as_json} <= {
        "JOB_MESSAGE_BASIC",
        "JOB_MESSAGE_WARNING",
        "JOB_MESSAGE_ERROR",
    }
    assert cli("messages", first, "--importance", "error").out.strip() == "Listed 0 items."

    history = cli("history", first)
    assert history.code == 0, history
    rows = history.table()
    assert rows[0] == ["TIME", "FROM", "TO", "BY", "REASON"]
    assert [row[1:3] for row in rows[1:]] == [["-", "Stopped"], ["Stopped", "Cancelled"]]
    changes = cli("history", first, "--format", "json").json()
    assert [(c["fromState"], c["toState"]) for c in changes] == [
        (None, "JOB_STATE_STOPPED"),
        ("JOB_STATE_STOPPED", "JOB_STATE_CANCELLED"),
    ]
    assert changes[1]["actor"] == "user"


def test_follow_of_a_job_that_is_done_exits_0(cli: Cli) -> None:
    job_id = cli.create("finished")
    cli.http.put(
        f"/v1b3/projects/{cli.project}/locations/{LOCATION}/jobs/{job_id}", json={"requestedState": "JOB_STATE_DONE"}
    )
    followed = cli("follow", job_id)
    assert followed.code == 0 and followed.err == "", followed
    assert followed.out.splitlines()[-1] == f"tidegate: job {job_id} is Done"
    assert sum(f"Job {job_id} created" in line for line in followed.out.splitlines()) == 1


def test_drain_of_a_batch_job_is_refused(cli: Cli) -> None:
    job_id = cli.create("batch")
    assert_failed(cli("drain", job_id), 4, "batch", "HTTP 400")
    assert cli.state(job_id) == "JOB_STATE_STOPPED"


# -- exit codes and errors --------------------------------------------------------------------


SOME_ID = "2026-01-01_00_00_00-1234567890123456789"


@pytest.mark.parametrize(
    "args",
    [
        ["describe", SOME_ID],
        ["cancel", SOME_ID],
        ["drain", SOME_ID],
        ["messages", SOME_ID],
        ["history", SOME_ID],
        ["follow", SOME_ID],
        ["metrics", SOME_ID],
        ["update-options", SOME_ID, "--max-workers", "2"],
        ["snapshots", "describe", SOME_ID],
        ["snapshots", "delete", SOME_ID],
        ["describe", "a/b?view=2"],
    ],
)
def test_not_found_is_exit_3(cli: Cli, args: list[str]) -> None:
    assert_failed(cli(*args), 3, "HTTP 404")


def test_rejected_requests_are_exit_4(cli: Cli) -> None:
    job_id = cli.create("done")
    assert (
        cli.http.put(
            f"/v1b3/projects/{cli.project}/locations/{LOCATION}/jobs/{job_id}",
            json={"requestedState": "JOB_STATE_DONE"},
        ).json()["currentState"]
        == "JOB_STATE_DONE"
    )
    assert_failed(cli("cancel", job_id), 4, "JOB_STATE_DONE")
    assert cli.state(job_id) == "JOB_STATE_DONE"
    assert_failed(run("jobs", "list", "--server", cli.server.base, "--project", "not a project"), 4, "project")
    assert_failed(cli("list", "--region", "Not_A_Region"), 4, "location")


def test_unreachable_server_is_exit_5() -> None:
    port = closed_port()
    for args in (["list"], ["describe", SOME_ID], ["cancel", SOME_ID], ["follow", SOME_ID], ["metrics", SOME_ID]):
        assert_failed(run("jobs", *args, "--server", f"http://127.0.0.1:{port}"), 5, "cannot reach", str(port))


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "list", "--bogus"],
        ["jobs", "describe"],
        ["jobs", "cancel"],
        ["jobs", "list", "--status", "sideways"],
        ["jobs", "list", "--format", "yaml"],
        ["jobs", "list", "--limit", "0"],
        ["jobs", "list", "--limit", "many"],
        ["jobs", "explode"],
        ["jobs"],
        [],
        ["jobs", "list", "--server", "localhost:8080"],
    ],
)
def test_bad_usage_is_exit_2(args: list[str]) -> None:
    assert_failed(run(*args), 2)


def test_help_and_version() -> None:
    helped = run("jobs", "list", "--help")
    assert helped.code == 0 and "--status" in helped.out
    version = run("--version")
    assert version.code == 0 and version.out.startswith("tidegate ")


def test_several_ids_are_each_acted_on_and_each_reported(cli: Cli) -> None:
    good, done = cli.create("good"), cli.create("finished")
    cli.http.put(
        f"/v1b3/projects/{cli.project}/locations/{LOCATION}/jobs/{done}", json={"requestedState": "JOB_STATE_DONE"}
    )
    result = cli("cancel", SOME_ID, done, good)
    assert result.code == 3, result  # the first refusal's code: no such job
    assert result.out.splitlines() == [f"Cancelled job [{good}]: now Cancelled."]
    errors = result.err.splitlines()
    assert len(errors) == 2 and all(line.startswith("ERROR: (tidegate) job [") for line in errors), result.err
    assert SOME_ID in errors[0] and done in errors[1] and "JOB_STATE_DONE" in errors[1]
    assert cli.state(good) == "JOB_STATE_CANCELLED" and cli.state(done) == "JOB_STATE_DONE"


def test_output_piped_into_head_ends_quietly(cli: Cli) -> None:
    for n in range(600):  # more than a pipe holds
        cli.create(f"many-{n}")
    command = f"{TIDEGATE} jobs list --server {cli.server.base} --project {cli.project} --limit 1000 | head -2"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert done.returncode == 0, done
    assert len(done.stdout.splitlines()) == 2
    assert done.stderr == "", done.stderr


# -- a failed job's cause, metrics, update-options, snapshots ----------------------------------

FLINK_SUBMIT_FAILURE = """Flink did not accept the job: java.lang.RuntimeException: Python process exits with code: 1

  File "/home/me/jobs/job.py", line 3
    t_env.execute_sql("SELECT 1"
                     ^
SyntaxError: '(' was never closed
org.apache.flink.client.program.ProgramAbortException: java.lang.RuntimeException: Python process exits with code: 1
\tat org.apache.flink.client.python.PythonDriver.main(PythonDriver.java:134)
\tat org.apache.flink.client.cli.CliFrontend.main(CliFrontend.java:1335)
Caused by: java.lang.RuntimeException: Python process exits with code: 1
\tat org.apache.flink.client.python.PythonDriver.main(PythonDriver.java:124)
\t... 15 more
"""
"""A Flink engine's error message of an older server: its first line misses why, its last is '... 15 more'."""


def fail_job(server: Server, job_id: str, error: str) -> None:
    """Fail a job as the scheduler does (an error message, then PENDING → FAILED), in the server's own database."""
    from tidegate.lifecycle import JobState
    from tidegate.model import MessageImportance
    from tidegate.service.jobs import JobService

    service = JobService(server.store)
    assert service.advance(job_id, JobState.JOB_STATE_PENDING, "starting workers") is not None
    service.add_message(job_id, MessageImportance.JOB_MESSAGE_ERROR, error)
    assert service.advance(job_id, JobState.JOB_STATE_FAILED, "failed") is not None


def test_describe_of_a_failed_job_says_why(cli: Cli) -> None:
    job_id = cli.create("fails")
    fail_job(cli.server, job_id, FLINK_SUBMIT_FAILURE)
    described = cli("describe", job_id)
    assert described.code == 0, described
    assert "failureCause: SyntaxError: '(' was never closed" in described.out.splitlines()
    assert cli("describe", job_id, "--format", "json").json()["currentState"] == "JOB_STATE_FAILED"
    followed = cli("follow", job_id)  # an ended job: its messages, then its end
    assert followed.code == 1, followed
    assert followed.err.strip() == f"ERROR: (tidegate) job {job_id} failed: SyntaxError: '(' was never closed"
    assert "more lines (tidegate jobs messages shows them)" in followed.out
    assert "=> SyntaxError: '(' was never closed" in followed.out
    assert "ERROR: (tidegate)" not in cli("describe", cli.create("fine")).err


def test_metrics_of_a_job_without_any(cli: Cli) -> None:
    job_id = cli.create("no-metrics")
    shown = cli("metrics", job_id)
    assert shown.code == 0 and shown.out.strip() == "Listed 0 items.", shown
    as_json = cli("metrics", job_id, "--format", "json", "--tentative").json()
    assert as_json["metrics"] == [] and "metricTime" in as_json
    assert_failed(cli("metrics", SOME_ID), 3, "HTTP 404")


def test_update_options_sends_the_runtime_updatable_params_and_shows_the_refusal(cli: Cli) -> None:
    job_id = cli.create("rescaled", type="JOB_TYPE_STREAMING")
    before = cli.http.get(f"/v1b3/projects/{cli.project}/locations/{LOCATION}/jobs/{job_id}").json()
    refused = cli("update-options", job_id, "--max-num-workers", "5", "--min-workers", "2")
    # Only a running job is rescaled (tests/acceptance/test_flink_rescale.py rescales one): the command says so.
    assert_failed(refused, 4, "JOB_STATE_RUNNING", "HTTP 400")
    refused = cli("update-options", job_id, "--worker-utilization-hint", "0.5")
    assert_failed(refused, 4, "JOB_STATE_RUNNING", "HTTP 400")
    after = cli.http.get(f"/v1b3/projects/{cli.project}/locations/{LOCATION}/jobs/{job_id}").json()
    assert after == before
    assert_failed(cli("update-options", job_id), 2, "at least one")
    assert_failed(cli("update-options", job_id, "--worker-utilization-hint", "2"), 2, "0.1 and 0.9")
    assert_failed(cli("update-options", job_id, "--max-workers", "1", "--min-workers", "3"), 2, "more than")
    assert_failed(cli("update-options", SOME_ID, "--max-workers", "3"), 3, "HTTP 404")


def test_snapshots_list_describe_create_delete(cli: Cli) -> None:
    from datetime import UTC, datetime, timedelta

    from tidegate.model import Snapshot, SnapshotState

    job_id = cli.create("streaming", type="JOB_TYPE_STREAMING")
    assert cli("snapshots", "list").out.strip() == "Listed 0 items."
    # An API-only server takes no snapshot: the refusal, nothing made.
    assert_failed(cli("snapshots", "create", "--job-id", job_id), 4, "HTTP 400")
    assert_failed(cli("snapshots", "create", "--job-id", job_id, "--snapshot-ttl", "forever"), 2, "duration")
    assert_failed(cli("snapshots", "create"), 2, "--job-id")
    assert cli("snapshots", "list", "--format", "json").json() == []

    taken = datetime.now(UTC).replace(microsecond=0)
    for n in (1, 2):  # as the engine records them
        cli.server.store.add_snapshot(
            Snapshot(
                id=f"{cli.project}-snap-{n}",
                project_id=cli.project,
                location=LOCATION,
                source_job_id=job_id,
                creation_time=taken,
                ttl=timedelta(days=7),
                state=SnapshotState.READY,
                description=f"number {n}",
            )
        )
    first, second = f"{cli.project}-snap-1", f"{cli.project}-snap-2"
    rows = cli("snapshots", "list").table()
    assert rows[0] == ["SNAPSHOT_ID", "SOURCE_JOB_ID", "CREATION_TIME", "TTL", "STATE", "DESCRIPTION"]
    assert sorted(row[0] for row in rows[1:]) == [first, second]
    assert {row[1] for row in rows[1:]} == {job_id} and {row[4] for row in rows[1:]} == {"READY"}
    assert len(cli("snapshots", "list", "--job-id", job_id, "--format", "json").json()) == 2
    assert_failed(cli("snapshots", "list", "--job-id", SOME_ID), 3, "HTTP 404")
    described = cli("snapshots", "describe", first)
    assert described.code == 0 and f"id: {first}" in described.out.splitlines() and "ttl: 604800s" in described.out
    assert_failed(cli("snapshots", "describe", "nope"), 3, "HTTP 404")

    deleted = cli("snapshots", "delete", "nope", first, second)
    assert deleted.code == 3, deleted  # the first refusal's code; the others were deleted all the same
    assert deleted.out.splitlines() == [f"Deleted snapshot [{first}].", f"Deleted snapshot [{second}]."]
    assert deleted.err.startswith("ERROR: (tidegate) snapshot [nope]: ") and len(deleted.err.splitlines()) == 1
    assert cli("snapshots", "list", "--format", "json").json() == []


def test_logs_and_logs_follow(cli: Cli) -> None:
    """The kept lines as the scheduler keeps them (a run's worker appends them); --follow until the log is complete."""
    from datetime import UTC, datetime, timedelta

    from tidegate.model import LogLine

    store = cli.server.store
    job_id = cli.create("printing")
    assert cli("logs", job_id).out == ""  # nothing printed yet
    worker = f"{cli.project}-worker"
    assert store.claim_run(job_id, "beam", worker, datetime.now(UTC) + timedelta(minutes=5))
    lines = [LogLine("stdout", f"printed {n}") for n in range(1500)] + [LogLine("stderr", "complained")]
    assert store.append_logs(job_id, worker, lines, "cursor-1")

    shown = cli("logs", job_id)
    assert shown.code == 0 and shown.err == "", shown.err
    assert shown.out.splitlines() == [line.text for line in lines]  # every page, in order
    as_json = cli("logs", job_id, "--format", "json").json()
    assert as_json[-1] == {"source": "stderr", "text": "complained"} and len(as_json) == 1501

    command = [str(TIDEGATE), "jobs", "logs", job_id, "--follow", "--server", cli.server.base, "--project", cli.project]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()) as proc:
        assert proc.stdout is not None
        for line in lines:  # what was there, then it waits for more
            assert proc.stdout.readline() == line.text + "\n"
        assert store.append_logs(job_id, worker, [LogLine("stdout", "late line")], "cursor-2")
        assert proc.stdout.readline() == "late line\n"
        assert cli("cancel", job_id).code == 0
        assert proc.poll() is None  # the job has ended, but its run's last lines may still come
        assert store.update_run(job_id, worker, release=True)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == "" and err == "", (out, err)
    assert_failed(cli("logs", SOME_ID), 3, "HTTP 404")


@pytest.mark.parametrize(
    ("flag", "env"),
    [(["--flink-python-mode", "threads"], {}), ([], {"TIDEGATE_FLINK_PYTHON_MODE": "threads"})],
)
def test_an_unknown_flink_python_mode_is_a_usage_error(flag: list[str], env: dict[str, str], tmp_path: Any) -> None:
    command = [str(TIDEGATE), "server", "--engines", "none", "--port", "0", "--data-dir", str(tmp_path), *flag]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**clean_env(), **env})
    assert done.returncode == 2
    assert "threads" in done.stderr and "thread" in done.stderr and "process" in done.stderr
    assert not (tmp_path / "tidegate.db").exists()  # refused before anything was opened


@pytest.mark.parametrize(
    ("flag", "env", "said"),
    [
        (["--flink-warm-submitters", "0"], {}, "--flink-warm-submitters must be at least 1, not 0"),
        ([], {"TIDEGATE_FLINK_WARM_SUBMITTERS": "0"}, "--flink-warm-submitters must be at least 1, not 0"),
        ([], {"TIDEGATE_FLINK_WARM_SUBMITTERS": "two"}, "--flink-warm-submitters: invalid int value: 'two'"),
    ],
)
def test_no_warm_flink_submitter_at_all_is_a_usage_error(
    flag: list[str], env: dict[str, str], said: str, tmp_path: Any
) -> None:
    command = [str(TIDEGATE), "server", "--engines", "none", "--port", "0", "--data-dir", str(tmp_path), *flag]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**clean_env(), **env})
    assert done.returncode == 2
    assert said in done.stderr
    assert not (tmp_path / "tidegate.db").exists()

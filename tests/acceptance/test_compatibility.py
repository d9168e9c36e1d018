"""The compatibility matrix: Dataflow's clients (rows) by the Jobs API's operations (columns).

One ``tidegate server`` with the Beam engine on SQLite serves the whole module. Every
applicable cell is one test (``test_cell[client-operation]``) making real calls through
that client and recording what it observed; a cell is "n/a" where the client has no such
call, with the reason. When the module ends, the matrix is written to
``docs/compatibility.md`` (only after a run of every cell, so ``-k`` leaves it alone); the
observations name no ids or times, so a passing run leaves the committed file unchanged.

The API clients share jobs where that is honest: one project of held jobs for the list
cells, and one finished word count each for messages and metrics. That word count is the
job DataflowRunner would submit (its ``--template_location`` output), sent by each client
as its own create. The runners each run one script (``beam_pipelines/compat.py``) from
Beam's client environment that does all their cells' calls, in parallel with the rest.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from .clients import Api, Discovery, Official, Seen, discovery_client, official_grpc, official_rest
from .conftest import (
    LOCATION,
    PIPELINES,
    ROOT,
    TEXT,
    Server,
    clean_env,
    dataflow_args,
    portable_args,
)

pytestmark = pytest.mark.slow

DOC = ROOT / "docs" / "compatibility.md"
OTHER_LOCATION = "europe-west1"
UNKNOWN_ID = "2026-01-01_00_00_00-1234567890123456789"
JOB_ID = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}_\d{2}_\d{2}-\d+")
WAIT_S = 180.0
"""How long a job may take to finish, or a runner's script to end (a bound on waiting, not a check)."""

CLIENTS = {
    "grpc": "google-cloud-dataflow-client, gRPC",
    "rest": "google-cloud-dataflow-client, REST",
    "discovery": "google-api-python-client",
    "dataflow-runner": "Beam DataflowRunner",
    "portable-runner": "Beam PortableRunner",
}
API_CLIENTS = ("grpc", "rest", "discovery")
RUNNERS = ("dataflow-runner", "portable-runner")
OPERATIONS = {
    "create": "create",
    "get": "get",
    "list-paging": "list: paging",
    "list-all": "list: ALL",
    "list-active": "list: ACTIVE",
    "list-terminated": "list: TERMINATED",
    "aggregated": "aggregated list",
    "labels": "labels update",
    "cancel": "cancel",
    "drain": "drain a batch job",
    "terminal": "request on a terminal job",
    "unknown": "unknown job",
    "messages": "messages",
    "metrics": "metrics",
}
_NO_LIST = {
    "dataflow-runner": "DataflowRunner has no call that lists jobs",
    "portable-runner": "PortableRunner has no call that lists jobs (Beam's Job API GetJobs has no paging or filter)",
}
NOT_APPLICABLE: dict[tuple[str, str], str] = {
    **{(r, op): _NO_LIST[r] for r in RUNNERS for op in ("list-paging", "list-all", "list-active", "list-terminated")},
    ("dataflow-runner", "aggregated"): "DataflowRunner has no call that lists jobs",
    ("portable-runner", "aggregated"): "Beam's Job API has no locations",
    ("dataflow-runner", "labels"): "labels are set at submission (--labels); the runner has no update call",
    ("portable-runner", "labels"): "Beam's Job API has no labels call",
    ("dataflow-runner", "drain"): "Beam's Python DataflowPipelineResult has no drain()",
    ("dataflow-runner", "unknown"): "the runner only addresses the job it submitted",
}
CELLS = [
    (client, op)
    for client in (*API_CLIENTS, *RUNNERS)
    for op in OPERATIONS
    if (client, op) not in NOT_APPLICABLE and op not in ("messages", "metrics")
] + [(client, op) for op in ("messages", "metrics") for client in (*API_CLIENTS, *RUNNERS)]
"""Every applicable cell; messages and metrics last, as they wait for finished jobs."""


# -- the suite: the server, the clients, the runners' scripts, the shared jobs -------------


@dataclass
class Script:
    """A script of ``beam_pipelines/compat.py`` running in Beam's client environment."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    _seen: Any = None

    def result(self) -> Any:
        """Its last line of JSON, once it has ended well."""
        if self._seen is None:
            try:
                self.proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            err = self.err.read_text(errors="replace")
            assert self.proc.returncode == 0, f"the script ended with {self.proc.returncode}:\n{err[-4000:]}"
            self._seen = json.loads(self.out.read_text().strip().splitlines()[-1])
        return self._seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@dataclass
class Suite:
    """The module's server, the API clients on it, the runners' scripts, and the jobs cells share."""

    server: Server
    client_python: Path
    folder: Path
    apis: dict[str, Api]
    scripts: dict[str, Script]
    projects: dict[str, str]
    """The runners' projects, where their scripts make their jobs."""
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    def once(self, key: tuple[str, str], make: Callable[[], Any]) -> Any:
        """``make()``, done once per key; a failure is kept and raised again to every cell that needs it."""
        if key not in self._cache:
            try:
                self._cache[key] = (True, make())
            except Exception as error:
                self._cache[key] = (False, error)
        ok, value = self._cache[key]
        if not ok:
            raise value
        return value

    def listing(self, client: str) -> tuple[str, list[str], list[str]]:
        """A project of five held jobs through ``client``, the first two of them cancelled."""

        def make() -> tuple[str, list[str], list[str]]:
            api, project = self.apis[client], new_project()
            ids = [api.create(project, f"listed-{n}").id for n in range(5)]
            for job_id in ids[:2]:
                assert api.request_state(project, job_id, "JOB_STATE_CANCELLED").state == "JOB_STATE_CANCELLED"
            return project, ids, ids[:2]

        return self.once(("listing", client), make)

    def wordcounts(self) -> dict[str, Any]:
        """A word count created through each API client (DataflowRunner's job body): project and job, or the error."""

        def make() -> dict[str, Any]:
            self.scripts["templates"].result()
            made: dict[str, Any] = {}
            for client in API_CLIENTS:
                project = new_project()
                body = (self.folder / "templates" / client / "job.json").read_text()
                try:
                    made[client] = (project, self.apis[client].submit(project, "compat-wordcount", body))
                except Exception as error:
                    made[client] = error
            return made

        return self.once(("wordcounts", ""), make)

    def wordcount(self, client: str) -> tuple[str, Seen]:
        made = self.wordcounts()[client]
        if isinstance(made, Exception):
            raise made
        project, job = made
        return project, job

    def finished_wordcount(self, client: str) -> tuple[str, str]:
        """The project and id of ``client``'s word count, once it ended DONE (seen through that client)."""

        def make() -> tuple[str, str]:
            project, job = self.wordcount(client)
            api = self.apis[client]
            deadline = time.monotonic() + WAIT_S
            state = api.get(project, job.id).state
            while state not in TERMINAL and time.monotonic() < deadline:
                time.sleep(0.2)
                state = api.get(project, job.id).state
            assert state == "JOB_STATE_DONE", f"the word count ended {state}"
            return project, job.id

        return self.once(("finished", client), make)

    def rest(self, path: str) -> Any:
        """tidegate's REST API, read plainly (to check what a runner did)."""
        return httpx.get(f"{self.server.base}{path}").raise_for_status().json()

    def runner_job(self, runner: str, name: str) -> dict[str, Any]:
        """The runner's job of that name, and its state history, as the server has them."""
        project = self.projects[runner]
        jobs = self.rest(f"/v1b3/projects/{project}/locations/{LOCATION}/jobs").get("jobs", [])
        [job] = [j for j in jobs if j["name"] == name]
        history = self.rest(f"/tidegate/v1/projects/{project}/locations/{LOCATION}/jobs/{job['id']}/history")
        return {**job, "history": [h["toState"] for h in history["stateHistory"]]}


TERMINAL = {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_UPDATED", "JOB_STATE_DRAINED"}


def new_project() -> str:
    return f"compat-{secrets.token_hex(4)}"


def _start_script(client_python: Path, folder: Path, name: str, *args: str) -> Script:
    out, err = folder / f"{name}.out", folder / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(client_python), str(PIPELINES / "compat.py"), *args], stdout=stdout, stderr=stderr, env=clean_env()
        )
    return Script(proc, out, err)


@pytest.fixture(scope="module")
def suite(
    start_server: Callable[..., Server], client_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Suite]:
    """The server, every client on it, and the runners' scripts started at once (they run alongside the cells)."""
    server = start_server("sqlite", "beam", grpc=True, job_api=True)
    folder = tmp_path_factory.mktemp("compat")
    for sub in ("templates", "dataflow-runner", "portable-runner"):
        (folder / sub).mkdir()
        (folder / sub / "input.txt").write_text(TEXT)
    projects = {runner: new_project() for runner in RUNNERS}
    scripts = {
        "templates": _start_script(
            client_python,
            folder,
            "templates",
            "templates",
            str(folder / "templates"),
            *API_CLIENTS,
            *dataflow_args(server, new_project(), folder / "templates" / "tmp"),
        ),
        "dataflow-runner": _start_script(
            client_python,
            folder,
            "dataflow-runner",
            "run",
            str(folder / "dataflow-runner"),
            *dataflow_args(server, projects["dataflow-runner"], folder / "dataflow-runner" / "staging"),
        ),
        "portable-runner": _start_script(
            client_python,
            folder,
            "portable-runner",
            "run",
            str(folder / "portable-runner"),
            *portable_args(server.job_port, projects["portable-runner"]),
        ),
    }
    channel = grpc.insecure_channel(f"localhost:{server.grpc_port}")
    service = discovery_client(server.base)
    try:
        grpc.channel_ready_future(channel).result(timeout=15)
        apis: dict[str, Api] = {
            "grpc": Official(official_grpc(channel), rest=False),
            "rest": Official(official_rest(server.base), rest=True),
            "discovery": Discovery(service),
        }
        yield Suite(server, client_python, folder, apis, scripts, projects)
    finally:
        for script in scripts.values():
            script.stop()
        service.close()
        channel.close()


# -- the matrix, recorded cell by cell and written when the module ends ---------------------


@dataclass(frozen=True)
class Cell:
    outcome: str  # "pass", "FAIL" or "n/a"
    observed: str


@pytest.fixture(scope="module")
def matrix(suite: Suite) -> Iterator[dict[tuple[str, str], Cell]]:
    """The cells' outcomes; written to docs/compatibility.md once every cell has one."""
    cells: dict[tuple[str, str], Cell] = {key: Cell("n/a", reason) for key, reason in NOT_APPLICABLE.items()}
    yield cells
    if all(key in cells for key in CELLS):
        DOC.write_text(render(cells, versions(suite.client_python)))


def versions(client_python: Path) -> dict[str, str]:
    """The clients' versions: this environment's, and those of Beam's client environment."""
    here = {p: importlib.metadata.version(p) for p in ("google-cloud-dataflow-client", "google-api-python-client")}
    names = "'apache-beam', 'google-cloud-dataflow-client'"
    script = f"import importlib.metadata as m; print(*(m.version(n) for n in ({names})))"
    done = subprocess.run([str(client_python), "-c", script], capture_output=True, text=True, check=True)
    beam, beams_dataflow = done.stdout.split()
    return {**here, "apache-beam": beam, "beam-dataflow-client": beams_dataflow}


def _plain(text: str) -> str:
    """One line, without the ids and times that would make the document change from run to run."""
    text = JOB_ID.sub("<job id>", " ".join(text.split()))
    text = re.sub(r"compat-[0-9a-f]{8}", "<project>", text)
    return re.sub(r"\d{4}-\d{2}-\d{2}[T ][\d:.]+(Z|[+-]\d{2}:\d{2})?", "<time>", text)[:300]


def render(cells: dict[tuple[str, str], Cell], found: dict[str, str]) -> str:
    head = "| client | " + " | ".join(OPERATIONS.values()) + " |"
    rule = "|---" * (len(OPERATIONS) + 1) + "|"
    rows = [
        f"| {title} | " + " | ".join(cells[(client, op)].outcome for op in OPERATIONS) + " |"
        for client, title in CLIENTS.items()
    ]
    details = []
    for client, title in CLIENTS.items():
        details += ["", f"### {title}", ""]
        for op, op_title in OPERATIONS.items():
            cell = cells[(client, op)]
            details.append(f"- **{op_title}** ({cell.outcome}): {cell.observed}")
    return "\n".join(
        [
            "# Compatibility: Dataflow's clients against tidegate",
            "",
            "Which clients of Google Cloud Dataflow's Jobs API work against tidegate, operation by operation.",
            "",
            "This page is written by the compatibility suite, `tests/acceptance/test_compatibility.py`",
            "(`bash scripts/test tests/acceptance/test_compatibility.py`), when a run of all its cells ends;",
            "it is not edited by hand. Every cell marked pass or FAIL is a real call (or the runner's own",
            "sequence of calls) through that client, unmodified, against one running `tidegate server`",
            "with the Beam engine on SQLite: pass when it did what Dataflow does, FAIL with what it did",
            "instead. n/a means the client has no such call, for the reason given below. The clients,",
            "as installed when the page was written:",
            "",
            f"- google-cloud-dataflow-client {found['google-cloud-dataflow-client']}"
            " (`google.cloud.dataflow_v1beta3`), over gRPC on an insecure channel and over REST"
            ' (`transport="rest"`, anonymous credentials);',
            f"- google-api-python-client {found['google-api-python-client']}"
            ' (`discovery.build("dataflow", "v1b3")` with its bundled discovery document);',
            f"- apache-beam {found['apache-beam']}: DataflowRunner (`--dataflow_endpoint`, `--no_auth`; it"
            f" speaks REST through google-cloud-dataflow-client {found['beam-dataflow-client']})"
            " and PortableRunner (`--job_endpoint`, Beam's Job API over gRPC).",
            "",
            "The API clients' messages and metrics are read from a word count that each of them",
            "created from the job body DataflowRunner submits, and that the Beam engine ran to",
            "`JOB_STATE_DONE`; their other cells use batch jobs created held in `JOB_STATE_STOPPED`.",
            "",
            head,
            rule,
            *rows,
            "",
            "## What each cell observed",
            *details,
            "",
        ]
    )


# -- the cells -----------------------------------------------------------------------------


def api_cell(suite: Suite, client: str, op: str) -> str:
    """One API client's cell: its calls, its checks, and what it saw (in words that do not change between runs)."""
    api = suite.apis[client]
    server = suite.server
    project = new_project()
    if op == "create":
        job = api.create(project, "created", labels={"team": "data"})
        assert JOB_ID.fullmatch(job.id), job.id
        assert (job.name, job.state, job.labels) == ("created", "JOB_STATE_STOPPED", {"team": "data"})
        _, wordcount = suite.wordcount(client)
        assert JOB_ID.fullmatch(wordcount.id) and wordcount.state == "JOB_STATE_STOPPED"
        return (
            "a held batch job comes back with its id in JOB_STATE_STOPPED; so does DataflowRunner's word-count"
            " job body, which then runs (see messages and metrics)"
        )
    if op == "get":
        job = api.create(project, "got", labels={"team": "data"})
        assert api.get(project, job.id) == job
        return "answers the job as created (id, name, state, labels, location)"
    if op.startswith("list-"):
        listed, every, ended = suite.listing(client)
        if op == "list-paging":
            pages = api.pages(listed, "ALL", page_size=2)
            assert [len(ids) for ids, _ in pages] == [2, 2, 1]
            assert [more for _, more in pages] == [True, True, False]
            assert sorted(i for ids, _ in pages for i in ids) == sorted(every)
            return "5 jobs with a page size of 2: pages of 2, 2 and 1 job, a page token on all but the last"
        list_filter = op.removeprefix("list-").upper()
        want = {"ALL": set(every), "ACTIVE": set(every) - set(ended), "TERMINATED": set(ended)}[list_filter]
        got = [i for ids, _ in api.pages(listed, list_filter) for i in ids]
        assert sorted(got) == sorted(want), (list_filter, got)
        return {
            "ALL": "all 5 jobs (3 held, 2 cancelled)",
            "ACTIVE": "the 3 held jobs, none of the cancelled ones",
            "TERMINATED": "the 2 cancelled jobs only",
        }[list_filter]
    if op == "aggregated":
        here = api.create(project, "here")
        there = api.create(project, "there", location=OTHER_LOCATION)
        assert api.aggregated(project) == {(here.id, LOCATION), (there.id, OTHER_LOCATION)}
        return f"the project's jobs of every location ({LOCATION} and {OTHER_LOCATION}), each with its location"
    if op == "labels":
        job = api.create(project, "labelled", labels={"team": "data"})
        updated = api.set_labels(project, job.id, {"team": "ml", "tier": "gold"})
        assert updated.labels == api.get(project, job.id).labels == {"team": "ml", "tier": "gold"}
        assert updated.state == "JOB_STATE_STOPPED"
        return "updateMask=labels replaces the labels (answered and kept); the state is untouched"
    if op == "cancel":
        job = api.create(project, "cancelled")
        cancelled = api.request_state(project, job.id, "JOB_STATE_CANCELLED")
        assert cancelled.state == api.get(project, job.id).state == "JOB_STATE_CANCELLED"
        again = api.request_state(project, job.id, "JOB_STATE_CANCELLED")
        assert again.state == "JOB_STATE_CANCELLED"
        return "a held job is JOB_STATE_CANCELLED at once; a retried cancel answers the job unchanged"
    if op in ("drain", "terminal"):
        job = api.create(project, op)
        if op == "terminal":
            api.request_state(project, job.id, "JOB_STATE_CANCELLED")
        before = server.snapshot(job.id)
        wanted = "JOB_STATE_DRAINED" if op == "drain" else "JOB_STATE_DONE"
        refused = api.refusal(lambda: api.request_state(project, job.id, wanted))
        reason = "REQUEST_NOT_ALLOWED" if op == "drain" else "JOB_TERMINAL"
        assert (refused.status, refused.reason) == ("FAILED_PRECONDITION", reason), refused
        assert refused.http in (None, 400)
        assert server.snapshot(job.id) == before, "the refused request changed the job"
        if op == "drain":
            return f"requestedState DRAINED on a held batch job: {refused}; nothing changed"
        return f"requestedState DONE on a cancelled job: {refused}; nothing changed"
    if op == "unknown":
        refused = api.refusal(lambda: api.get(project, UNKNOWN_ID))
        cancel = api.refusal(lambda: api.request_state(project, UNKNOWN_ID, "JOB_STATE_CANCELLED"))
        for seen in (refused, cancel):
            assert (seen.status, seen.reason, seen.http) == ("NOT_FOUND", "JOB_NOT_FOUND", refused.http)
            assert seen.http in (None, 404)
        return f"get and cancel of a job that does not exist: {refused}"
    if op == "messages":
        project, job_id = suite.finished_wordcount(client)
        messages = api.messages(project, job_id)
        done = [text for importance, text in messages if importance == "JOB_MESSAGE_BASIC" and "JOB_STATE_DONE" in text]
        assert done, messages
        return "the finished word count's messages, from its creation to JOB_MESSAGE_BASIC 'is now JOB_STATE_DONE'"
    if op == "metrics":
        project, job_id = suite.finished_wordcount(client)
        metrics = api.metrics(project, job_id)
        words = {m[2].get("tentative"): m[3] for m in metrics if m[:2] == ("user", "words")}
        split = {m[2].get("tentative"): m[3] for m in metrics if m[1] == "ElementCount" and m[2].get("step") == "Split"}
        assert words == split == {"true": 12, "false": 12}, metrics
        return "the user counter wordcount/words and Split's ElementCount are 12, tentative and committed"
    raise AssertionError(f"no such operation {op}")


def runner_cell(suite: Suite, runner: str, op: str) -> str:
    """One runner's cell: what its script observed, checked against the server's side."""
    seen = suite.scripts[runner].result()
    portable = runner == "portable-runner"
    wordcount = suite.runner_job(runner, "compat-wordcount")
    if op == "create":
        assert wordcount["type"] == "JOB_TYPE_BATCH"
        if portable:
            return "run() (Prepare, artifact staging, Run) creates a batch job that runs"
        assert seen["created"] == wordcount["id"]
        return "run() creates a batch job and holds its id"
    if op == "get":
        # Whichever state the job has reached by then, named as Beam names it (QUEUED is UNRECOGNIZED to Beam).
        assert seen["state"] in ("STOPPED", "STARTING", "PENDING", "RUNNING", "UNRECOGNIZED", "DONE"), seen["state"]
        assert seen["final"] == {"value": "DONE"} and wordcount["currentState"] == "JOB_STATE_DONE"
        if portable:
            return "result.state (GetState) reads the job; wait_until_finish() (GetStateStream) answers DONE"
        return "result.state (GetJob) reads the job; wait_until_finish() polls it to DONE"
    if op == "cancel":
        job = suite.runner_job(runner, "compat-cancel")
        assert seen["running"] == "RUNNING"
        assert seen["cancelled"] == "CANCELLED" and job["currentState"] == "JOB_STATE_CANCELLED"
        assert job["history"][-2:] == ["JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"]
        raised = seen["cancel_wait"].get("raised")
        assert raised == ("RuntimeError" if portable else "DataflowRuntimeException"), seen["cancel_wait"]
        return (
            "result.cancel() on the RUNNING job: JOB_STATE_CANCELLING, then JOB_STATE_CANCELLED; the runner's"
            f" wait_until_finish() raises {raised}, as it does for any end but DONE"
        )
    if op == "drain":
        job = suite.runner_job(runner, "compat-cancel")
        assert seen["drain"].get("code") == "StatusCode.FAILED_PRECONDITION", seen["drain"]
        assert seen["after_drain"] == "RUNNING"
        assert "JOB_STATE_DRAINING" not in job["history"]
        return "JobService.Drain on the RUNNING batch job: FAILED_PRECONDITION; the job keeps RUNNING"
    if op == "terminal":
        assert seen["after_cancel_done"] == "DONE" and wordcount["currentState"] == "JOB_STATE_DONE"
        assert wordcount["history"][-1] == "JOB_STATE_DONE"
        if portable:
            assert seen["cancel_done"].get("code") == "StatusCode.FAILED_PRECONDITION", seen["cancel_done"]
            return "result.cancel() on the DONE job (JobService.Cancel): FAILED_PRECONDITION; the job stays DONE"
        assert seen["cancel_done"] == {"value": "DONE"}
        assert any("already terminated in state DONE" in w for w in seen["cancel_done_warnings"])
        return (
            "result.cancel() on the DONE job: the client reads JOB_STATE_DONE, sends no request and warns"
            " 'already terminated'; the job stays DONE"
        )
    if op == "unknown":
        assert seen["unknown"].get("code") == "StatusCode.NOT_FOUND", seen["unknown"]
        return "JobService.GetState of a job that does not exist: NOT_FOUND"
    if op == "messages":
        # DataflowRunner stops polling once it reads DONE, so the last messages may come after its last page: it
        # is sure to have read the RUNNING one. PortableRunner's stream ends after the job's last message.
        state = "JOB_STATE_DONE" if portable else "JOB_STATE_RUNNING"
        wanted = f"Job {wordcount['id']} is now {state}"
        importance = "INFO" if portable else "JOB_MESSAGE_BASIC"
        assert any(level == importance and wanted in text for level, text in seen["messages"]), seen["messages"]
        if portable:
            return "wait_until_finish() reads GetMessageStream and logs each message, through 'is now JOB_STATE_DONE'"
        return (
            "wait_until_finish() polls the job's messages (ListJobMessages, page by page, from the last seen) and"
            " logs them, JOB_MESSAGE_BASIC 'is now JOB_STATE_RUNNING' among them"
        )
    if op == "metrics":
        assert seen["words"] == [["wordcount", 12]], seen["words"]
        call = "GetJobMetrics" if portable else "GetJobMetrics over REST"
        return f"result.metrics().query() ({call}): the user counter wordcount/words committed 12"
    raise AssertionError(f"no such operation {op}")


@pytest.mark.parametrize(("client", "op"), CELLS, ids=[f"{client}-{op}" for client, op in CELLS])
def test_cell(suite: Suite, matrix: dict[tuple[str, str], Cell], client: str, op: str) -> None:
    try:
        observed = runner_cell(suite, client, op) if client in RUNNERS else api_cell(suite, client, op)
    except BaseException as error:
        matrix[(client, op)] = Cell("FAIL", _plain(f"{type(error).__name__}: {error}"))
        raise
    matrix[(client, op)] = Cell("pass", observed)

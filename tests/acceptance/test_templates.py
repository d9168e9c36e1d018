"""Templates through the official client, over gRPC and over REST, against a real server with the Beam engine.

The classic template is written by Beam's own DataflowRunner (``--template_location``)
from the Beam client environment, with a ``_metadata`` file beside it as Dataflow has
it; the flex template's Beam program runs with that environment as the server's launcher
Python. Jobs run to DONE and their output is checked. Metrics over gRPC are checked
against REST for a finished job.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import dataflow_v1beta3 as dataflow
from google.cloud.dataflow_v1beta3.services.flex_templates_service.transports import FlexTemplatesServiceGrpcTransport
from google.cloud.dataflow_v1beta3.services.jobs_v1_beta3.transports import JobsV1Beta3GrpcTransport
from google.cloud.dataflow_v1beta3.services.metrics_v1_beta3.transports import MetricsV1Beta3GrpcTransport
from google.cloud.dataflow_v1beta3.services.templates_service.transports import TemplatesServiceGrpcTransport

from .conftest import LOCATION, Server, clean_env, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).resolve().parent / "template_programs"
CLIENT_PYTHON = ROOT / ".beam-client-venv" / "bin" / "python"
TEXT = "the quick brown fox\njumps over the lazy dog\nthe dog sleeps\n"
COUNTS = {"the": 3, "quick": 1, "brown": 1, "fox": 1, "jumps": 1, "over": 1, "lazy": 1, "dog": 2, "sleeps": 1}
TERMINAL = {dataflow.JobState.JOB_STATE_DONE, dataflow.JobState.JOB_STATE_FAILED, dataflow.JobState.JOB_STATE_CANCELLED}
METADATA = {
    "name": "Word count",
    "description": "Counts the words of a text",
    "parameters": [
        {"name": "input", "label": "Input", "helpText": "The text to count", "regexes": ["/.+"]},
        {"name": "output", "label": "Output", "helpText": "Where the counts go"},
        {"name": "suffix", "label": "Suffix", "helpText": "Appended to each line", "isOptional": True,
         "regexes": ["[!?.]*"]},
    ],
}  # fmt: skip


@dataclass(frozen=True)
class Clients:
    """The official client's services over one transport."""

    jobs: dataflow.JobsV1Beta3Client
    metrics: dataflow.MetricsV1Beta3Client
    templates: dataflow.TemplatesServiceClient
    flex: dataflow.FlexTemplatesServiceClient


@dataclass(frozen=True)
class Setup:
    server: Server
    grpc: Clients
    rest: Clients
    template: Path
    """A classic template written by DataflowRunner, with its ``_metadata`` beside it."""


@pytest.fixture(scope="module")
def client_python() -> Path:
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-beam-client")], check=True)
    return CLIENT_PYTHON


def _make_template(python: Path, folder: Path) -> Path:
    """Beam's DataflowRunner writes the template (and stages its pipeline) instead of submitting a job."""
    staging, template = folder / "staging", folder / "wordcount.json"
    staging.mkdir(parents=True)
    args = ["--runner=DataflowRunner", "--project=templates", f"--region={LOCATION}", "--no_auth"]
    args += ["--dataflow_endpoint=http://localhost:1", f"--temp_location={staging}", f"--template_location={template}"]
    done = subprocess.run(
        [str(python), str(PROGRAMS / "classic_wordcount.py"), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(template.read_text())["environment"]["sdkPipelineOptions"]["options"]["pipelineUrl"]
    template.with_name(template.name + "_metadata").write_text(json.dumps(METADATA))
    return template


@pytest.fixture(scope="module")
def setup(
    start_server: Callable[..., Server], client_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    grpc_port = free_port()
    server = start_server("sqlite", "beam", "--grpc-port", str(grpc_port), "--launcher-python", str(client_python))
    template = _make_template(client_python, tmp_path_factory.mktemp("template"))
    channel = grpc.insecure_channel(f"localhost:{grpc_port}")
    grpc.channel_ready_future(channel).result(timeout=15)
    options: Any = {"api_endpoint": server.base}
    anonymous = AnonymousCredentials()
    try:
        yield Setup(
            server=server,
            grpc=Clients(
                jobs=dataflow.JobsV1Beta3Client(transport=JobsV1Beta3GrpcTransport(channel=channel)),
                metrics=dataflow.MetricsV1Beta3Client(transport=MetricsV1Beta3GrpcTransport(channel=channel)),
                templates=dataflow.TemplatesServiceClient(transport=TemplatesServiceGrpcTransport(channel=channel)),
                flex=dataflow.FlexTemplatesServiceClient(transport=FlexTemplatesServiceGrpcTransport(channel=channel)),
            ),
            rest=Clients(
                jobs=dataflow.JobsV1Beta3Client(transport="rest", client_options=options, credentials=anonymous),
                metrics=dataflow.MetricsV1Beta3Client(transport="rest", client_options=options, credentials=anonymous),
                templates=dataflow.TemplatesServiceClient(
                    transport="rest", client_options=options, credentials=anonymous
                ),
                flex=dataflow.FlexTemplatesServiceClient(
                    transport="rest", client_options=options, credentials=anonymous
                ),
            ),
            template=template,
        )
    finally:
        channel.close()


@pytest.fixture(params=["grpc", "rest"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def clients(setup: Setup, transport: str) -> Clients:
    return setup.grpc if transport == "grpc" else setup.rest


def wait_done(api: Clients, project: str, job_id: str, timeout: float = 240) -> dataflow.Job:
    """The job once it has ended (a guard against hanging, not a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        job = api.jobs.get_job(request={"project_id": project, "location": LOCATION, "job_id": job_id})
        if job.current_state in TERMINAL or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def counts(path: Path) -> dict[str, int]:
    return {word: int(n.rstrip("!")) for word, n in (line.split(": ") for line in path.read_text().splitlines())}


def launch(api: Clients, project: str, template: Path, name: str, parameters: dict[str, str], **extra: Any) -> Any:
    request = {
        "project_id": project,
        "location": LOCATION,
        "gcs_path": str(template),
        "launch_parameters": {"job_name": name, "parameters": parameters},
        **extra,
    }
    return api.templates.launch_template(request=request)


def project_jobs(api: Clients, project: str) -> list[dataflow.Job]:
    request = {"project_id": project, "location": LOCATION, "filter": dataflow.ListJobsRequest.Filter.ALL}
    return list(api.jobs.list_jobs(request=request))


# -- classic templates -------------------------------------------------------------------


def test_a_classic_template_runs_to_done_with_its_parameters(
    setup: Setup, transport: str, project: str, tmp_path: Path
) -> None:
    api = clients(setup, transport)
    source, out = tmp_path / "input.txt", tmp_path / "counts.txt"
    source.write_text(TEXT)
    response = launch(api, project, setup.template, "wordcount", {"input": str(source), "output": str(out),
                                                                   "suffix": "!"})  # fmt: skip
    assert response.job.id and response.job.name == "wordcount" and response.job.project_id == project
    job = wait_done(api, project, response.job.id)
    assert job.current_state == dataflow.JobState.JOB_STATE_DONE
    assert counts(out) == COUNTS
    assert all(line.endswith("!") for line in out.read_text().splitlines())


def test_create_job_from_template(setup: Setup, transport: str, project: str, tmp_path: Path) -> None:
    api = clients(setup, transport)
    source, out = tmp_path / "input.txt", tmp_path / "counts.txt"
    source.write_text(TEXT)
    job = api.templates.create_job_from_template(
        request={
            "project_id": project,
            "location": LOCATION,
            "gcs_path": str(setup.template),
            "job_name": "from-template",
            "parameters": {"input": str(source), "output": str(out)},
            "environment": {"additional_user_labels": {"made": "from-template"}},
        }
    )
    assert job.name == "from-template" and dict(job.labels) == {"made": "from-template"}
    assert job.client_request_id  # its own, as a job DataflowRunner submits has (the template's is not reused)
    assert job.client_request_id != json.loads(setup.template.read_text()).get("clientRequestId")
    assert wait_done(api, project, job.id).current_state == dataflow.JobState.JOB_STATE_DONE
    assert counts(out) == COUNTS


def test_validate_only_creates_nothing(setup: Setup, transport: str, project: str, tmp_path: Path) -> None:
    api = clients(setup, transport)
    before = setup.server.snapshot().job_count
    params = {"input": str(tmp_path / "input.txt"), "output": str(tmp_path / "out.txt")}
    response = launch(api, project, setup.template, "checked", params, validate_only=True)
    assert not response.job.id
    assert project_jobs(api, project) == []
    assert setup.server.snapshot().job_count == before
    assert not (tmp_path / "out.txt").exists()


def test_a_launch_with_an_active_jobs_name_is_already_exists(
    setup: Setup, transport: str, project: str, tmp_path: Path
) -> None:
    """Unlike CreateJob (which answers the active job), a launch is refused, as Dataflow's launches are."""
    api = clients(setup, transport)
    body = {"name": "taken", "requested_state": dataflow.JobState.JOB_STATE_STOPPED, "client_request_id": "req-1"}
    held = api.jobs.create_job(request={"project_id": project, "location": LOCATION, "job": body})
    before = setup.server.snapshot(held.id)
    params = {"input": str(tmp_path / "input.txt"), "output": str(tmp_path / "out.txt")}
    expected = exceptions.AlreadyExists if transport == "grpc" else exceptions.Conflict
    with pytest.raises(expected) as caught:
        launch(api, project, setup.template, "taken", params)
    assert caught.value.reason == "JOB_NAME_ALREADY_EXISTS" and held.id in caught.value.message
    request = {"project_id": project, "location": LOCATION, "gcs_path": str(setup.template), "job_name": "taken"}
    with pytest.raises(expected):
        api.templates.create_job_from_template(request={**request, "parameters": params})
    assert setup.server.snapshot(held.id) == before
    assert [job.id for job in project_jobs(api, project)] == [held.id]


@pytest.mark.parametrize(
    ("parameters", "reason", "words"),
    [
        ({"input": "/in.txt", "output": "/out.txt", "colour": "red"}, "UNKNOWN_TEMPLATE_PARAMETER", "colour"),
        ({"input": "/in.txt"}, "MISSING_TEMPLATE_PARAMETER", "output"),
        ({"input": "relative.txt", "output": "/out.txt"}, "TEMPLATE_PARAMETER_MISMATCH", "'/.+'"),
        ({"input": "/in.txt", "output": "/out.txt", "suffix": "abc"}, "TEMPLATE_PARAMETER_MISMATCH", "suffix"),
    ],
)
def test_bad_parameters_are_refused_and_change_nothing(
    setup: Setup, transport: str, project: str, parameters: dict[str, str], reason: str, words: str
) -> None:
    api = clients(setup, transport)
    before = setup.server.snapshot().job_count
    expected = exceptions.InvalidArgument if transport == "grpc" else exceptions.BadRequest
    with pytest.raises(expected) as caught:
        launch(api, project, setup.template, "refused", parameters)
    assert caught.value.reason == reason
    assert words in caught.value.message
    assert setup.server.snapshot().job_count == before


def test_a_missing_template_is_refused(setup: Setup, transport: str, project: str, tmp_path: Path) -> None:
    api = clients(setup, transport)
    expected = exceptions.InvalidArgument if transport == "grpc" else exceptions.BadRequest
    with pytest.raises(expected) as caught:
        launch(api, project, tmp_path / "nowhere.json", "missing", {})
    assert caught.value.reason == "STAGED_FILE_UNREADABLE"


def test_get_template_returns_its_metadata(setup: Setup, transport: str, project: str) -> None:
    api = clients(setup, transport)
    response = api.templates.get_template(
        request={"project_id": project, "location": LOCATION, "gcs_path": str(setup.template)}
    )
    assert response.template_type == dataflow.GetTemplateResponse.TemplateType.LEGACY
    assert response.metadata.name == "Word count"
    declared = {p.name: (p.label, p.help_text, p.is_optional, list(p.regexes)) for p in response.metadata.parameters}
    assert declared == {
        "input": ("Input", "The text to count", False, ["/.+"]),
        "output": ("Output", "Where the counts go", False, []),
        "suffix": ("Suffix", "Appended to each line", True, ["[!?.]*"]),
    }


# -- flex templates ----------------------------------------------------------------------


def _flex_spec(folder: Path) -> Path:
    """A Beam flex template: the spec names the program (beside it), its parameters and a default environment."""
    (folder / "flex_wordcount.py").write_text((PROGRAMS / "flex_wordcount.py").read_text())
    spec = {
        "image": "unused-by-tidegate",
        "sdkInfo": {"language": "PYTHON"},
        "metadata": {
            "name": "Flex word count",
            "parameters": [
                {"name": "input", "label": "Input", "helpText": "The text to count"},
                {"name": "output", "label": "Output", "helpText": "Where the counts go"},
                {"name": "min_count", "label": "Least count", "helpText": "Words seen fewer times are left out",
                 "isOptional": True, "regexes": ["[0-9]+"], "defaultValue": "2"},
            ],
        },
        "defaultEnvironment": {"additionalUserLabels": {"template": "flex"}},
        "tidegate": {"engine": "beam", "program": "flex_wordcount.py"},
    }  # fmt: skip
    path = folder / "flex.json"
    path.write_text(json.dumps(spec))
    return path


def test_a_beam_flex_template_runs_to_done(setup: Setup, transport: str, project: str, tmp_path: Path) -> None:
    api = clients(setup, transport)
    spec = _flex_spec(tmp_path)
    source, out = tmp_path / "input.txt", tmp_path / "counts.txt"
    source.write_text(TEXT)
    response = api.flex.launch_flex_template(
        request={
            "project_id": project,
            "location": LOCATION,
            "launch_parameter": {
                "job_name": "flex-wordcount",
                "container_spec_gcs_path": str(spec),
                "parameters": {"input": str(source), "output": str(out)},
            },
        }
    )
    assert response.job.id and response.job.name == "flex-wordcount"
    assert dict(response.job.labels) == {"template": "flex"}
    assert [job.id for job in project_jobs(api, project)] == [response.job.id]
    assert wait_done(api, project, response.job.id).current_state == dataflow.JobState.JOB_STATE_DONE
    assert counts(out) == {"the": 3, "dog": 2}  # the default min_count, 2


def test_a_flex_template_validates_only_and_refuses_bad_parameters(
    setup: Setup, transport: str, project: str, tmp_path: Path
) -> None:
    api = clients(setup, transport)
    spec = _flex_spec(tmp_path)
    before = setup.server.snapshot().job_count

    def launch_flex(parameters: dict[str, str], validate_only: bool) -> Any:
        parameter = {"job_name": "flex-checked", "container_spec_gcs_path": str(spec), "parameters": parameters}
        request = {"project_id": project, "location": LOCATION, "launch_parameter": parameter}
        return api.flex.launch_flex_template(request={**request, "validate_only": validate_only})

    assert not launch_flex({"input": "/in.txt", "output": "/out.txt"}, True).job.id
    expected = exceptions.InvalidArgument if transport == "grpc" else exceptions.BadRequest
    with pytest.raises(expected) as caught:
        launch_flex({"input": "/in.txt", "output": "/out.txt", "min_count": "many"}, False)
    assert caught.value.reason == "TEMPLATE_PARAMETER_MISMATCH"
    assert setup.server.snapshot().job_count == before


# -- metrics -----------------------------------------------------------------------------


def _metrics(api: Clients, project: str, job_id: str) -> dict[tuple[str, str, str], float]:
    where = {"project_id": project, "location": LOCATION, "job_id": job_id}
    found = api.metrics.get_job_metrics(request=where)
    return {(m.name.name, m.name.context["step"], m.name.context["tentative"]): m.scalar for m in found.metrics}


def test_metrics_over_grpc_are_those_over_rest(setup: Setup, project: str, tmp_path: Path) -> None:
    source, out = tmp_path / "input.txt", tmp_path / "counts.txt"
    source.write_text(TEXT)
    response = launch(setup.rest, project, setup.template, "measured", {"input": str(source), "output": str(out)})
    job_id = response.job.id
    assert wait_done(setup.rest, project, job_id).current_state == dataflow.JobState.JOB_STATE_DONE
    over_grpc, over_rest = _metrics(setup.grpc, project, job_id), _metrics(setup.rest, project, job_id)
    assert over_grpc == over_rest
    assert over_grpc[("ElementCount", "Split", "false")] == 12
    where = {"project_id": project, "location": LOCATION, "job_id": job_id}
    stages = {
        kind: [(s.stage_id, s.state) for s in clients(setup, kind).metrics.get_job_execution_details(request=where)]
        for kind in ("grpc", "rest")
    }
    assert stages["grpc"] == stages["rest"] and stages["grpc"]
    stage_id = stages["grpc"][0][0]
    for kind in ("grpc", "rest"):
        details = clients(setup, kind).metrics.get_stage_execution_details(request={**where, "stage_id": stage_id})
        assert list(details) == []
        with pytest.raises(exceptions.NotFound) as caught:
            list(clients(setup, kind).metrics.get_stage_execution_details(request={**where, "stage_id": "S99"}))
        assert caught.value.reason == "STAGE_NOT_FOUND"

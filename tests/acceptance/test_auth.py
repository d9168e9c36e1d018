"""Credentials and roles against a running ``tidegate server``.

Google's own clients authenticate with nothing but ``GOOGLE_APPLICATION_CREDENTIALS``
naming a key file that ``tidegate service-accounts create`` wrote: the official client
over REST (a self-signed JWT) and gRPC, google-api-python-client and Beam's
DataflowRunner (both trade a signed assertion at the key file's ``token_uri``). Every API
answers a missing or bad credential with UNAUTHENTICATED and a caller without the role
with PERMISSION_DENIED; the Beam Job API hides other projects' jobs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc
from google.cloud import dataflow_v1beta3 as dataflow
from google.cloud.dataflow_v1beta3.services.jobs_v1_beta3.transports import JobsV1Beta3GrpcTransport
from google.oauth2 import service_account

from .conftest import LOCATION, PIPELINES, TEXT, TIDEGATE, Server, clean_env, free_port

pytestmark = pytest.mark.slow


def tidegate(server: Server, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A ``tidegate`` command on the server's own store (``--data-dir`` or ``--database-url``)."""
    where = (
        ["--database-url", server.store_url] if server.dialect == "postgresql" else ["--data-dir", str(server.data_dir)]
    )
    local = args[0] in ("tokens", "service-accounts")
    return subprocess.run(
        [str(TIDEGATE), *args, *(where if local else [])],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or clean_env(),
    )


def make_token(server: Server, name: str, project: str, role: str) -> str:
    done = tidegate(server, "tokens", "create", name, "--project", project, "--role", role)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def make_key_file(server: Server, name: str, project: str, role: str, folder: Path) -> Path:
    path = folder / f"{name}.json"
    done = tidegate(
        server, "service-accounts", "create", name, "--project", project, "--role", role,
        "--key-file", str(path), "--server", f"http://127.0.0.1:{server.port}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


def with_key_file(key_file: Path) -> dict[str, str]:
    """The environment of a client that has nothing but the key file."""
    return clean_env() | {"GOOGLE_APPLICATION_CREDENTIALS": str(key_file)}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def history(server: Server, project: str, job_id: str, token: str) -> list[dict[str, Any]]:
    url = f"{server.base}/tidegate/v1/projects/{project}/locations/{LOCATION}/jobs/{job_id}/history"
    answer = httpx.get(url, headers=bearer(token), timeout=30)
    assert answer.status_code == 200, answer.text
    changes: list[dict[str, Any]] = answer.json()["stateHistory"]
    return changes


@pytest.fixture(scope="module")
def closed(start_server: Callable[..., Server]) -> Server:
    """A server with credentials (so every call needs one), serving gRPC and Beam's Job API too."""
    server = start_server("sqlite", "none", grpc=True, job_api=True)
    assert httpx.get(f"{server.base}/v1b3/projects/p/jobs", timeout=30).status_code == 200  # open at first
    make_token(server, "first", "p", "admin")
    wait_for_status(server, "/v1b3/projects/p/jobs", {}, 401)  # closed from the first credential on (within 1 s)
    return server


def wait_for_status(server: Server, path: str, headers: dict[str, str], status: int) -> None:
    """Poll until the server answers ``status`` (a change made by another process shows within seconds)."""
    deadline = time.monotonic() + 30
    while (answer := httpx.get(server.base + path, headers=headers, timeout=30)).status_code != status:
        assert time.monotonic() < deadline, f"still {answer.status_code}, not {status}: {answer.text}"
        time.sleep(0.1)


OFFICIAL_REST = """
import json, sys
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.cloud import dataflow_v1beta3 as dataflow

endpoint, project = sys.argv[1], sys.argv[2]
jobs = dataflow.JobsV1Beta3Client(transport="rest", client_options=ClientOptions(api_endpoint=endpoint))
job = jobs.create_job(request={"project_id": project, "location": "us-central1",
                               "job": {"name": "held", "requested_state": dataflow.JobState.JOB_STATE_STOPPED}})
listed = [j.id for j in jobs.list_jobs(request={"project_id": project, "location": "us-central1"})]
try:
    jobs.list_jobs(request={"project_id": "someone-else", "location": "us-central1"}).jobs
    other = "listed"
except exceptions.Forbidden as error:
    other = error.reason
print(json.dumps({"id": job.id, "listed": listed, "other": other}))
"""

API_PYTHON_CLIENT = """
import json, sys
from googleapiclient.discovery import build

endpoint, project = sys.argv[1], sys.argv[2]
dataflow = build("dataflow", "v1b3", client_options={"api_endpoint": endpoint}, static_discovery=True)
jobs = dataflow.projects().locations().jobs()
body = {"name": "held-api", "requestedState": "JOB_STATE_STOPPED"}
job = jobs.create(projectId=project, location="us-central1", body=body).execute()
got = jobs.get(projectId=project, location="us-central1", jobId=job["id"]).execute()
print(json.dumps({"id": job["id"], "state": got["currentState"]}))
"""


def run_client(script: str, key_file: Path, *args: str, python: str = sys.executable) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-c", script, *args], capture_output=True, text=True, timeout=120, env=with_key_file(key_file)
    )
    assert done.returncode == 0, done.stderr[-4000:]
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_the_official_client_over_rest_with_only_a_key_file(closed: Server, project: str, tmp_path: Path) -> None:
    key_file = make_key_file(closed, "rest-client", project, "developer", tmp_path)
    answer = run_client(OFFICIAL_REST, key_file, f"http://localhost:{closed.port}", project)
    assert answer["listed"] == [answer["id"]] and answer["other"] == "IAM_PERMISSION_DENIED"
    token = make_token(closed, "reader", project, "viewer")
    email = f"rest-client@{project}.iam.tidegate"
    assert [(h["toState"], h["caller"]) for h in history(closed, project, answer["id"], token)] == [
        ("JOB_STATE_STOPPED", email)
    ]


def test_google_api_python_client_with_only_a_key_file(closed: Server, project: str, tmp_path: Path) -> None:
    key_file = make_key_file(closed, "discovery", project, "developer", tmp_path)
    answer = run_client(API_PYTHON_CLIENT, key_file, f"http://localhost:{closed.port}", project)
    assert answer["state"] == "JOB_STATE_STOPPED"
    token = make_token(closed, "reader", project, "viewer")
    assert history(closed, project, answer["id"], token)[0]["caller"] == f"discovery@{project}.iam.tidegate"


def test_the_official_client_over_grpc(closed: Server, project: str, tmp_path: Path) -> None:
    """Google's clients send credentials on TLS channels only: here the access token goes in the metadata."""
    key_file = make_key_file(closed, "grpc-client", project, "viewer", tmp_path)
    credentials = service_account.Credentials.from_service_account_file(
        str(key_file), scopes=["https://www.googleapis.com/auth/cloud-platform"]
    )
    from google.auth.transport.requests import Request

    credentials.refresh(Request())  # at the key file's token_uri: tidegate's token endpoint
    metadata = [("authorization", f"Bearer {credentials.token}")]
    jobs = dataflow.JobsV1Beta3Client(
        transport=JobsV1Beta3GrpcTransport(channel=grpc.insecure_channel(f"localhost:{closed.grpc_port}"))
    )
    developer = make_token(closed, "ci", project, "developer")
    made = httpx.post(
        f"{closed.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs",
        json={"name": "held", "requestedState": "JOB_STATE_STOPPED"},
        headers=bearer(developer),
    ).json()
    request = {"project_id": project, "location": LOCATION, "job_id": made["id"]}
    assert jobs.get_job(request=request, metadata=metadata).id == made["id"]
    from google.api_core import exceptions

    with pytest.raises(exceptions.Unauthenticated):
        jobs.get_job(request=request)
    with pytest.raises(exceptions.Unauthenticated):
        jobs.get_job(request=request, metadata=[("authorization", "Bearer tga_forged")])
    with pytest.raises(exceptions.PermissionDenied) as refused:  # a viewer cannot cancel
        jobs.update_job(
            request={**request, "job": {"requested_state": dataflow.JobState.JOB_STATE_CANCELLED}}, metadata=metadata
        )
    assert refused.value.reason == "IAM_PERMISSION_DENIED"
    with pytest.raises(exceptions.PermissionDenied):  # another project: nothing to learn there
        jobs.get_job(request={**request, "project_id": "someone-else"}, metadata=metadata)
    assert jobs.get_job(request=request, metadata=metadata).current_state == dataflow.JobState.JOB_STATE_STOPPED


def beam_job_api(server: Server) -> Any:
    return beam_job_api_pb2_grpc.JobServiceStub(grpc.insecure_channel(f"localhost:{server.job_port}"))


def test_the_beam_job_api_checks_the_caller_and_hides_other_projects(closed: Server, project: str) -> None:
    other_project = project + "-other"
    mine, theirs = (
        make_token(closed, "mine", project, "developer"),
        make_token(closed, "theirs", other_project, "admin"),
    )
    viewer = make_token(closed, "viewer", project, "viewer")
    created = {}
    for where, token in ((project, mine), (other_project, theirs)):
        created[where] = httpx.post(
            f"{closed.base}/v1b3/projects/{where}/locations/{LOCATION}/jobs",
            json={"name": "held", "requestedState": "JOB_STATE_STOPPED"},
            headers=bearer(token),
        ).json()["id"]
    api = beam_job_api(closed)

    def as_(token: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}")]

    with pytest.raises(grpc.RpcError) as missing:
        api.GetJobs(beam_job_api_pb2.GetJobsRequest())
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    seen = {info.job_id for info in api.GetJobs(beam_job_api_pb2.GetJobsRequest(), metadata=as_(viewer)).job_info}
    assert created[project] in seen and created[other_project] not in seen
    with pytest.raises(grpc.RpcError) as hidden:  # the other project's job: as if there were none
        api.GetState(beam_job_api_pb2.GetJobStateRequest(job_id=created[other_project]), metadata=as_(viewer))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as nowhere:
        api.GetState(beam_job_api_pb2.GetJobStateRequest(job_id="no-such-job"), metadata=as_(viewer))
    assert (
        nowhere.value.code() == grpc.StatusCode.NOT_FOUND
        and nowhere.value.details() == hidden.value.details().replace(created[other_project], "no-such-job")
    )
    with pytest.raises(grpc.RpcError) as denied:
        api.Cancel(beam_job_api_pb2.CancelJobRequest(job_id=created[project]), metadata=as_(viewer))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    api.Cancel(beam_job_api_pb2.CancelJobRequest(job_id=created[project]), metadata=as_(mine))
    changes = history(closed, project, created[project], viewer)
    assert (changes[-1]["toState"], changes[-1]["caller"]) == ("JOB_STATE_CANCELLED", "mine")


def test_rest_401_and_403(closed: Server, project: str) -> None:
    jobs = f"{closed.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs"
    for headers in ({}, bearer("junk"), bearer("tgt_unknown"), {"Authorization": "Basic dXNlcjpwdw=="}):
        answer = httpx.get(jobs, headers=headers, timeout=30)
        assert answer.status_code == 401 and answer.json()["error"]["status"] == "UNAUTHENTICATED", headers
    viewer = make_token(closed, "viewer", project, "viewer")
    refused = httpx.post(jobs, json={"name": "held"}, headers=bearer(viewer), timeout=30)
    assert refused.status_code == 403 and refused.json()["error"]["status"] == "PERMISSION_DENIED"
    assert httpx.get(jobs, headers=bearer(viewer), timeout=30).json() == {"jobs": []}


def test_a_token_disabled_while_the_server_runs_is_refused_within_seconds(closed: Server, project: str) -> None:
    token = make_token(closed, "ci", project, "developer")
    listing = [str(TIDEGATE), "jobs", "list", "--server", f"http://127.0.0.1:{closed.port}", "--project", project]
    assert subprocess.run(listing, capture_output=True, text=True, env=clean_env()).returncode == 1  # no token
    with_token = clean_env() | {"TIDEGATE_TOKEN": token}
    listed = subprocess.run(listing, capture_output=True, text=True, env=with_token)
    assert listed.returncode == 0 and "Listed 0 items." in listed.stdout, listed.stderr
    assert tidegate(closed, "tokens", "disable", "ci", "--project", project).returncode == 0
    jobs = f"/v1b3/projects/{project}/locations/{LOCATION}/jobs"
    wait_for_status(closed, jobs, bearer(token), 401)
    refused = subprocess.run(listing, capture_output=True, text=True, env=with_token)
    assert refused.returncode == 1 and "disabled" in refused.stderr
    assert tidegate(closed, "tokens", "enable", "ci", "--project", project).returncode == 0
    wait_for_status(closed, jobs, bearer(token), 200)
    assert tidegate(closed, "tokens", "delete", "ci", "--project", project).returncode == 0
    wait_for_status(closed, jobs, bearer(token), 401)


def test_the_dataflow_runner_with_only_google_application_credentials(
    start_server: Callable[..., Server], client_python: Path, tmp_path: Path, project: str
) -> None:
    """Beam's DataflowRunner, without ``--no_auth``: it trades the key's assertion at tidegate's token endpoint."""
    server = start_server("sqlite", "beam")
    key_file = make_key_file(server, "pipelines", project, "developer", tmp_path)
    source, got = tmp_path / "input.txt", tmp_path / "got.txt"
    source.write_text(TEXT)
    staging = tmp_path / "staging"
    staging.mkdir()
    args = [
        f"--input={source}", f"--output={got}", "--runner=DataflowRunner",
        f"--dataflow_endpoint=http://localhost:{server.port}", f"--project={project}", f"--region={LOCATION}",
        f"--temp_location={staging}",
    ]  # fmt: skip
    done = subprocess.run(
        [str(client_python), str(PIPELINES / "wordcount.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=with_key_file(key_file),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"] == "DONE" and result["words"] == [12]
    token = make_token(server, "reader", project, "viewer")
    changes = history(server, project, result["job_id"], token)
    assert changes[0]["caller"] == f"pipelines@{project}.iam.tidegate"
    assert changes[-1]["toState"] == "JOB_STATE_DONE"
    without = subprocess.run(  # and no credential at all: refused, nothing made
        [str(client_python), str(PIPELINES / "wordcount.py"), *args, "--no_auth"],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    # Answered 401, google-auth tries to refresh the anonymous credentials Beam gave it, and cannot.
    assert without.returncode != 0 and "Anonymous credentials cannot be refreshed" in without.stderr
    listed = httpx.get(
        f"{server.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs", headers=bearer(token), timeout=30
    ).json()["jobs"]
    assert [job["id"] for job in listed] == [result["job_id"]]


def test_beyond_loopback_it_refuses_to_serve_open_unless_told_insecure(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    command = [str(TIDEGATE), "server", "--host", "0.0.0.0", "--port", str(free_port()), "--grpc-port", "0"]
    command += ["--job-port", "0", "--engines", "none", "--data-dir", str(data_dir)]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean_env())
    assert refused.returncode == 1
    assert "refusing to serve on 0.0.0.0 without authentication" in refused.stderr and "--insecure" in refused.stderr

    insecure = start_server("sqlite", "none", "--host", "0.0.0.0", "--insecure")
    assert "WARNING: --insecure" in insecure.log.read_text()
    assert httpx.get(f"{insecure.base}/v1b3/projects/p/jobs", timeout=30).status_code == 200  # open, as told

    make_token(insecure, "admin", "p", "admin")  # with a credential, no --insecure is needed: every call needs one
    secured = start_server("sqlite", "none", "--host", "0.0.0.0", "--data-dir", str(insecure.data_dir))
    assert "every call needs a credential" in secured.log.read_text()
    assert httpx.get(f"{secured.base}/v1b3/projects/p/jobs", timeout=30).status_code == 401


@pytest.mark.postgres
def test_servers_sharing_postgresql_all_refuse_a_disabled_token(
    start_server: Callable[..., Server], project: str
) -> None:
    first = start_server("postgresql")
    second = start_server("sqlite", "none", "--database-url", first.store_url)
    token = make_token(first, "ci", project, "viewer")
    urls = [f"{s.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs" for s in (first, second)]
    assert [httpx.get(url, headers=bearer(token), timeout=30).status_code for url in urls] == [200, 200]
    assert tidegate(first, "tokens", "disable", "ci", "--project", project).returncode == 0
    deadline = time.monotonic() + 30
    while any(httpx.get(url, headers=bearer(token), timeout=30).status_code != 401 for url in urls):
        assert time.monotonic() < deadline, "a server still accepts the disabled token"
        time.sleep(0.2)

"""TLS: ``tidegate server --tls-cert --tls-key`` serves REST and gRPC over TLS.

The certificates are made by each test (a CA and a server certificate it signed). The
clients trust the CA and nothing else: the official client over gRPC, httpx and the
``tidegate`` command line (``--ca-file``) over REST, and Airflow's deferrable Dataflow
hook, which always speaks gRPC over TLS.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from google.api_core import exceptions
from google.cloud import dataflow_v1beta3 as dataflow

from ..certificates import Certificates, make_certificates
from .clients import official_grpc
from .conftest import LOCATION, TIDEGATE, Server, clean_env

pytestmark = pytest.mark.slow

AIRFLOW_PROGRAM = Path(__file__).resolve().parent / "airflow_programs" / "job_status.py"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, start_server: Callable[..., Server], certificates: Certificates) -> Server:
    return start_server(request.param, grpc=True, tls=certificates)


def _trusting(certificates: Certificates) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificates.ca))


def _create(server: Server, certificates: Certificates, project: str, name: str) -> str:
    response = httpx.post(
        f"{server.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs",
        json={"name": name},
        verify=_trusting(certificates),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_rest_is_served_over_tls_only(server: Server, certificates: Certificates, project: str) -> None:
    job_id = _create(server, certificates, project, "over-tls")
    got = httpx.get(f"{server.base}/v1b3/projects/{project}/jobs/{job_id}", verify=_trusting(certificates))
    assert got.json()["id"] == job_id
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):  # the system's CAs do not know ours
        httpx.get(f"{server.base}/healthz", verify=ssl.create_default_context())
    with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port is no request at all
        httpx.get(f"http://localhost:{server.port}/healthz")
    assert server.snapshot().job_count >= 1


def test_the_official_client_over_tls_grpc(server: Server, certificates: Certificates, project: str) -> None:
    job_id = _create(server, certificates, project, "grpc-tls")
    credentials = grpc.ssl_channel_credentials(root_certificates=certificates.ca.read_bytes())
    with grpc.secure_channel(f"localhost:{server.grpc_port}", credentials) as channel:
        jobs = official_grpc(channel).jobs
        job = jobs.get_job(request={"project_id": project, "location": LOCATION, "job_id": job_id})
        assert job.id == job_id and job.current_state == dataflow.JobState.JOB_STATE_STOPPED
    other_ca = make_certificates(server.log.parent / "other").ca.read_bytes()
    for channel in (
        grpc.secure_channel(f"localhost:{server.grpc_port}", grpc.ssl_channel_credentials(root_certificates=other_ca)),
        grpc.insecure_channel(f"localhost:{server.grpc_port}"),
    ):
        with channel, pytest.raises(exceptions.ServiceUnavailable):
            official_grpc(channel).jobs.get_job(
                request={"project_id": project, "location": LOCATION, "job_id": job_id}, timeout=10
            )


def _cli(
    server: Server, project: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(TIDEGATE), "jobs", *args, "--server", server.base, "--project", project, "--format", "json"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env={**clean_env(), **(env or {})})


def test_the_command_line_trusts_the_ca_it_is_given(server: Server, certificates: Certificates, project: str) -> None:
    job_id = _create(server, certificates, project, "cli-tls")
    listed = _cli(server, project, "list", "--ca-file", str(certificates.ca))
    assert listed.returncode == 0, listed.stderr
    assert [job["id"] for job in json.loads(listed.stdout)] == [job_id]
    by_env = _cli(server, project, "describe", job_id, env={"TIDEGATE_CA_FILE": str(certificates.ca)})
    assert by_env.returncode == 0 and json.loads(by_env.stdout)["id"] == job_id, by_env.stderr
    standard = _cli(server, project, "describe", job_id, env={"SSL_CERT_FILE": str(certificates.ca)})
    assert standard.returncode == 0, standard.stderr
    untrusted = _cli(server, project, "list")
    assert untrusted.returncode == 5
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


def _airflow_states(
    airflow_python: Path, server: Server, project: str, job_ids: list[str], ca: Path | None, home: Path
) -> dict[str, dict[str, str]]:
    """What ``AsyncDataflowHook.get_job_status`` answers for each job, run in the Airflow environment."""
    connection = {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": project}}
    env = {k: v for k, v in clean_env().items() if not k.startswith(("AIRFLOW", "GRPC_", "GOOGLE_"))}
    env |= {"AIRFLOW_HOME": str(home), "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(connection)}
    if ca is not None:
        env["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(ca)  # gRPC's own roots: the hook takes no CA option
    done = subprocess.run(
        [str(airflow_python), str(AIRFLOW_PROGRAM), f"localhost:{server.grpc_port}", project, LOCATION, *job_ids],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=home,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, dict[str, str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_airflow_deferrable_hook_reads_job_states_over_tls_grpc(
    server: Server, certificates: Certificates, project: str, airflow_python: Path, tmp_path: Path
) -> None:
    held = _create(server, certificates, project, "airflow-held")
    cancelled = _create(server, certificates, project, "airflow-cancelled")
    response = httpx.put(
        f"{server.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs/{cancelled}",
        json={"requestedState": "JOB_STATE_CANCELLED"},
        verify=_trusting(certificates),
    )
    assert response.status_code == 200, response.text
    missing = "2000-01-01_00_00_00-1000000000000000000"
    states = _airflow_states(airflow_python, server, project, [held, cancelled, missing], certificates.ca, tmp_path)
    assert states[held] == {"state": "JOB_STATE_STOPPED"}
    assert states[cancelled] == {"state": "JOB_STATE_CANCELLED"}
    assert states[missing]["error"] == "NotFound"
    assert "JOB_NOT_FOUND" in states[missing]["message"]
    # Without the CA the hook cannot trust the server: its TLS channel is real.
    untrusted = _airflow_states(airflow_python, server, project, [held], None, tmp_path)
    assert untrusted[held]["error"] == "ServiceUnavailable", untrusted


def test_a_key_that_is_not_the_certificates_stops_the_server(certificates: Certificates, tmp_path: Path) -> None:
    other = make_certificates(tmp_path / "other")
    command = [str(TIDEGATE), "server", "--port", "0", "--grpc-port", "0", "--job-port", "0", "--engines", "none"]
    command += ["--data-dir", str(tmp_path / "data"), "--tls-cert", str(certificates.cert), "--tls-key", str(other.key)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean_env())
    assert done.returncode != 0
    assert "cannot use --tls-cert" in done.stderr
    alone = subprocess.run(command[:-2], capture_output=True, text=True, timeout=60, env=clean_env())
    assert alone.returncode != 0 and "go together" in alone.stderr
    assert not os.path.exists(tmp_path / "data" / "tidegate.db")  # refused before anything was made

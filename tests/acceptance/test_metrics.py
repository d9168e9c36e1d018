"""``/metrics``: a real server scraped and read with Prometheus' own parser; ``--log-format json``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from google.api_core import exceptions as api_exceptions
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from .clients import official_grpc
from .conftest import LOCATION, Server, ServerProcess, closed_port

pytestmark = pytest.mark.slow

JOB_ROUTE = "/v1b3/projects/{project_id}/locations/{location}/jobs/{job_id}"


def scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``: (name, labels) → value."""
    response = httpx.get(f"{base}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def create(base: str, project: str, name: str) -> str:
    url = f"{base}/v1b3/projects/{project}/locations/{LOCATION}/jobs"
    created = httpx.post(url, json={"name": name, "requestedState": "JOB_STATE_STOPPED"}, timeout=30)
    assert created.status_code == 200, created.text
    job_id: str = created.json()["id"]
    return job_id


def test_requests_transitions_and_jobs_of_a_server(start_server: Callable[..., Server], project: str) -> None:
    server = start_server("sqlite", "none", grpc=True)
    jobs = [create(server.base, project, f"job-{n}") for n in range(3)]
    job_url = f"{server.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs"
    assert httpx.put(f"{job_url}/{jobs[0]}", json={"requestedState": "JOB_STATE_CANCELLED"}, timeout=30).is_success
    assert httpx.get(f"{job_url}/2026-no-such-job", timeout=30).status_code == 404
    assert httpx.get(f"{server.base}/no/such/path/{project}", timeout=30).status_code == 404
    with grpc.insecure_channel(f"localhost:{server.grpc_port}") as channel:
        official = official_grpc(channel)
        official.jobs.get_job(request={"project_id": project, "location": LOCATION, "job_id": jobs[1]})
        with pytest.raises(api_exceptions.NotFound):
            official.jobs.get_job(request={"project_id": project, "location": LOCATION, "job_id": "2026-nope"})

    samples = scrape(server.base)
    assert value(samples, "tidegate_jobs", state="JOB_STATE_STOPPED", engine="none") == 2
    assert value(samples, "tidegate_jobs", state="JOB_STATE_CANCELLED", engine="none") == 1
    assert value(samples, "tidegate_job_creates_total") == 3
    transitions = value(
        samples, "tidegate_job_transitions_total", from_state="JOB_STATE_STOPPED", to_state="JOB_STATE_CANCELLED"
    )
    assert transitions == 1
    assert value(samples, "tidegate_http_requests_total", method="GET", route=JOB_ROUTE, status="404") == 1
    assert value(samples, "tidegate_http_requests_total", method="PUT", route=JOB_ROUTE, status="200") == 1
    jobs_route = "/v1b3/projects/{project_id}/locations/{location}/jobs"
    assert value(samples, "tidegate_http_requests_total", method="POST", route=jobs_route, status="200") == 3
    assert value(samples, "tidegate_http_requests_total", method="GET", route="(unmatched)", status="404") == 1
    assert value(samples, "tidegate_http_request_duration_seconds_count", method="POST", route=jobs_route) == 3
    assert (
        value(samples, "tidegate_http_request_duration_seconds_bucket", method="POST", route=jobs_route, le="+Inf") == 3
    )
    service, method = "google.dataflow.v1beta3.JobsV1Beta3", "GetJob"
    handled = "tidegate_grpc_server_handled_total"
    assert value(samples, handled, grpc_service=service, grpc_method=method, grpc_code="OK") == 1
    assert value(samples, handled, grpc_service=service, grpc_method=method, grpc_code="NOT_FOUND") == 1
    assert value(samples, "tidegate_grpc_server_handling_seconds_count", grpc_service=service, grpc_method=method) == 2
    for _, labels in samples:  # labels are templates and names, never the ids of a path
        for _, label in labels:
            assert project not in label and not any(job_id in label for job_id in jobs), label
    assert ("tidegate_scheduler_tick_lag_seconds", frozenset()) not in samples  # an API-only server has no scheduler


def test_jobs_by_state_are_the_same_on_two_servers_of_one_database(
    start_server: Callable[..., Server], server_processes: Callable[..., ServerProcess], project: str, tmp_path: Path
) -> None:
    first = start_server("postgresql", "none")
    second = server_processes(tmp_path / "second", first.store_url, "none")
    create(first.base, project, "on-first")
    create(first.base, project, "also-on-first")
    create(second.base, project, "on-second")
    for base, created in ((first.base, 2), (second.base, 1)):
        samples = scrape(base)
        assert value(samples, "tidegate_jobs", state="JOB_STATE_STOPPED", engine="none") == 3  # the database's
        assert value(samples, "tidegate_job_creates_total") == created  # the server's own


def test_a_scheduler_and_an_unreachable_flink_cluster(start_server: Callable[..., Server]) -> None:
    flink = f"http://127.0.0.1:{closed_port()}"
    server = start_server("sqlite", "flink", "--flink-rest-url", flink)
    samples = scrape(server.base)
    assert value(samples, "tidegate_engine_cluster_up", engine="flink", url=flink) == 0
    assert ("tidegate_engine_cluster_taskmanagers", frozenset({("engine", "flink"), ("url", flink)})) not in samples
    assert ("tidegate_scheduler_tick_lag_seconds", frozenset()) in samples
    assert value(samples, "tidegate_scheduler_tick_duration_seconds_count") >= 1


def test_the_json_log(start_server: Callable[..., Server]) -> None:
    server = start_server("sqlite", "none", "--log-format", "json", "--access-log")
    assert httpx.get(f"{server.base}/healthz", timeout=30).status_code == 200
    scrape(server.base)
    records = [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]  # every line
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert "color_message" not in record
    messages = {(r["logger"], r["message"]) for r in records}
    assert ("tidegate.server", f"REST API on http://127.0.0.1:{server.port} (store: {server.data_dir})") in messages
    assert any(logger == "uvicorn.access" and '"GET /healthz HTTP/1.1" 200' in m for logger, m in messages), messages
    assert all(r["time"].endswith("+00:00") for r in records)

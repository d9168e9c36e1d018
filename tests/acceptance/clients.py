"""Dataflow's Python clients pointed at a tidegate server, built as their users build them.

The official client (``google.cloud.dataflow_v1beta3``) over REST, needing the scheme in
the endpoint and anonymous credentials, or over gRPC on an insecure channel; and
``google-api-python-client``'s discovery client with its bundled discovery document and
an overridden endpoint (what Airflow's Dataflow hook uses). Nothing is fetched from outside.

``Official`` and ``Discovery`` put the same small interface over them (create a held
job, get, list page by page, update, messages, metrics, and the error a call raises), so
a test can make the same calls through each and compare what they answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import dataflow_v1beta3 as dataflow
from google.cloud.dataflow_v1beta3.services.jobs_v1_beta3.transports import JobsV1Beta3GrpcTransport
from google.cloud.dataflow_v1beta3.services.messages_v1_beta3.transports import MessagesV1Beta3GrpcTransport
from google.cloud.dataflow_v1beta3.services.metrics_v1_beta3.transports import MetricsV1Beta3GrpcTransport
from googleapiclient import discovery
from googleapiclient.errors import HttpError

from .conftest import LOCATION

__all__ = [
    "Api",
    "Discovery",
    "Official",
    "OfficialClients",
    "Refusal",
    "Seen",
    "discovery_client",
    "official_grpc",
    "official_rest",
]


@dataclass(frozen=True)
class OfficialClients:
    """The official client's three services of the Jobs API."""

    jobs: dataflow.JobsV1Beta3Client
    messages: dataflow.MessagesV1Beta3Client
    metrics: dataflow.MetricsV1Beta3Client


def official_rest(endpoint: str) -> OfficialClients:
    """The official client with ``transport="rest"`` on ``endpoint`` (``http://localhost:PORT``)."""
    options = {"api_endpoint": endpoint}
    anonymous = AnonymousCredentials()
    return OfficialClients(
        jobs=dataflow.JobsV1Beta3Client(transport="rest", client_options=options, credentials=anonymous),
        messages=dataflow.MessagesV1Beta3Client(transport="rest", client_options=options, credentials=anonymous),
        metrics=dataflow.MetricsV1Beta3Client(transport="rest", client_options=options, credentials=anonymous),
    )


def official_grpc(channel: grpc.Channel) -> OfficialClients:
    """The official client over gRPC, on a channel of the caller's (which closes it)."""
    return OfficialClients(
        jobs=dataflow.JobsV1Beta3Client(transport=JobsV1Beta3GrpcTransport(channel=channel)),
        messages=dataflow.MessagesV1Beta3Client(transport=MessagesV1Beta3GrpcTransport(channel=channel)),
        metrics=dataflow.MetricsV1Beta3Client(transport=MetricsV1Beta3GrpcTransport(channel=channel)),
    )


def discovery_client(endpoint: str) -> Any:
    """``discovery.build("dataflow", "v1b3")`` on ``endpoint``; close it before the server goes."""
    return discovery.build(
        "dataflow",
        "v1b3",
        static_discovery=True,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )


# -- one small interface over the three, for tests that run the same calls through each ---


@dataclass(frozen=True)
class Seen:
    """A job as a client answered it."""

    id: str
    name: str
    state: str
    labels: dict[str, str]
    location: str = LOCATION


@dataclass(frozen=True)
class Refusal:
    """An error as a client raised it: the canonical status, Google's reason, and the HTTP status over REST."""

    status: str
    reason: str
    http: int | None = None

    def __str__(self) -> str:
        return f"{self.http} {self.status} ({self.reason})" if self.http else f"{self.status} ({self.reason})"


class Official:
    """google-cloud-dataflow-client, over gRPC or REST."""

    def __init__(self, clients: OfficialClients, *, rest: bool) -> None:
        self.c = clients
        self.rest = rest

    @staticmethod
    def _seen(job: dataflow.Job) -> Seen:
        return Seen(job.id, job.name, dataflow.JobState(job.current_state).name, dict(job.labels), job.location)

    def create(self, project: str, name: str, labels: dict[str, str] | None = None, location: str = LOCATION) -> Seen:
        body = {
            "name": name,
            "type_": dataflow.JobType.JOB_TYPE_BATCH,
            "requested_state": dataflow.JobState.JOB_STATE_STOPPED,
            "labels": labels or {},
        }
        return self._seen(self.c.jobs.create_job(request={"project_id": project, "location": location, "job": body}))

    def submit(self, project: str, name: str, body: str) -> Seen:
        job = dataflow.Job.from_json(body, ignore_unknown_fields=True)
        job.name = name
        return self._seen(self.c.jobs.create_job(request={"project_id": project, "location": LOCATION, "job": job}))

    def get(self, project: str, job_id: str) -> Seen:
        return self._seen(self.c.jobs.get_job(request={"project_id": project, "location": LOCATION, "job_id": job_id}))

    def pages(self, project: str, list_filter: str, page_size: int = 0) -> list[tuple[list[str], bool]]:
        request = {
            "project_id": project,
            "location": LOCATION,
            "filter": dataflow.ListJobsRequest.Filter[list_filter],
            "page_size": page_size,
        }
        return [([j.id for j in p.jobs], bool(p.next_page_token)) for p in self.c.jobs.list_jobs(request=request).pages]

    def aggregated(self, project: str) -> set[tuple[str, str]]:
        return {(j.id, j.location) for j in self.c.jobs.aggregated_list_jobs(request={"project_id": project})}

    def set_labels(self, project: str, job_id: str, labels: dict[str, str]) -> Seen:
        request = {
            "project_id": project,
            "location": LOCATION,
            "job_id": job_id,
            "job": {"labels": labels},
            "update_mask": {"paths": ["labels"]},
        }
        return self._seen(self.c.jobs.update_job(request=request))

    def request_state(self, project: str, job_id: str, state: str) -> Seen:
        request = {
            "project_id": project,
            "location": LOCATION,
            "job_id": job_id,
            "job": {"requested_state": dataflow.JobState[state]},
        }
        return self._seen(self.c.jobs.update_job(request=request))

    def messages(self, project: str, job_id: str) -> list[tuple[str, str]]:
        request = {"project_id": project, "location": LOCATION, "job_id": job_id}
        return [
            (dataflow.JobMessageImportance(m.message_importance).name, m.message_text)
            for m in self.c.messages.list_job_messages(request=request)
        ]

    def metrics(self, project: str, job_id: str) -> list[tuple[str, str, dict[str, str], float]]:
        request = {"project_id": project, "location": LOCATION, "job_id": job_id}
        answer = self.c.metrics.get_job_metrics(request=request)
        return [(m.name.origin, m.name.name, dict(m.name.context), float(m.scalar)) for m in answer.metrics]

    def refusal(self, call: Callable[[], object]) -> Refusal:
        with pytest.raises(exceptions.GoogleAPICallError) as caught:
            call()
        error = caught.value
        if self.rest:
            # Over REST the client keeps the HTTP status; the canonical one is in Google's error body.
            assert error.response is not None
            return Refusal(error.response.json()["error"]["status"], str(error.reason), int(error.code or 0))
        assert error.grpc_status_code is not None
        return Refusal(error.grpc_status_code.name, str(error.reason))


class Discovery:
    """google-api-python-client's ``dataflow`` ``v1b3`` discovery client."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.jobs = service.projects().locations().jobs()

    @staticmethod
    def _seen(job: dict[str, Any]) -> Seen:
        return Seen(job["id"], job["name"], job["currentState"], job.get("labels", {}), job.get("location", ""))

    def create(self, project: str, name: str, labels: dict[str, str] | None = None, location: str = LOCATION) -> Seen:
        body = {"name": name, "type": "JOB_TYPE_BATCH", "requestedState": "JOB_STATE_STOPPED", "labels": labels or {}}
        return self._seen(self.jobs.create(projectId=project, location=location, body=body).execute())

    def submit(self, project: str, name: str, body: str) -> Seen:
        job = {**json.loads(body), "name": name}
        return self._seen(self.jobs.create(projectId=project, location=LOCATION, body=job).execute())

    def get(self, project: str, job_id: str) -> Seen:
        return self._seen(self.jobs.get(projectId=project, location=LOCATION, jobId=job_id).execute())

    def pages(self, project: str, list_filter: str, page_size: int = 0) -> list[tuple[list[str], bool]]:
        found = []
        extra = {"pageSize": page_size} if page_size else {}
        request = self.jobs.list(projectId=project, location=LOCATION, filter=list_filter, **extra)
        while request is not None:
            answer = request.execute()
            found.append(([j["id"] for j in answer.get("jobs", [])], bool(answer.get("nextPageToken"))))
            request = self.jobs.list_next(request, answer)
        return found

    def aggregated(self, project: str) -> set[tuple[str, str]]:
        answer = self.service.projects().jobs().aggregated(projectId=project).execute()
        return {(j["id"], j["location"]) for j in answer.get("jobs", [])}

    def set_labels(self, project: str, job_id: str, labels: dict[str, str]) -> Seen:
        request = self.jobs.update(
            projectId=project, location=LOCATION, jobId=job_id, body={"labels": labels}, updateMask="labels"
        )
        return self._seen(request.execute())

    def request_state(self, project: str, job_id: str, state: str) -> Seen:
        body = {"requestedState": state}
        return self._seen(self.jobs.update(projectId=project, location=LOCATION, jobId=job_id, body=body).execute())

    def messages(self, project: str, job_id: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        request = self.jobs.messages().list(projectId=project, location=LOCATION, jobId=job_id)
        while request is not None:
            answer = request.execute()
            found += [(m["messageImportance"], m["messageText"]) for m in answer.get("jobMessages", [])]
            request = self.jobs.messages().list_next(request, answer)
        return found

    def metrics(self, project: str, job_id: str) -> list[tuple[str, str, dict[str, str], float]]:
        answer = self.jobs.getMetrics(projectId=project, location=LOCATION, jobId=job_id).execute()
        return [
            (m["name"].get("origin", ""), m["name"]["name"], m["name"].get("context", {}), float(m["scalar"]))
            for m in answer.get("metrics", [])
        ]

    def refusal(self, call: Callable[[], object]) -> Refusal:
        with pytest.raises(HttpError) as caught:
            call()
        error = caught.value
        body = json.loads(error.content)["error"]
        return Refusal(body["status"], error.error_details[0]["reason"], error.status_code)


Api = Official | Discovery
"""Any of the three, behind the same interface."""

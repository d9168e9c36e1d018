"""A Flink flex template through the official client, over gRPC and REST: a bounded PyFlink job to DONE.

One server with the Beam and Flink engines (one local Flink cluster); both launches are
made first and then awaited, since a Flink submission takes 10-20 s.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import dataflow_v1beta3 as dataflow
from google.cloud.dataflow_v1beta3.services.flex_templates_service.transports import FlexTemplatesServiceGrpcTransport

from .conftest import LOCATION, Server, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = Path(__file__).resolve().parent / "template_programs" / "flink_sum.py"
TERMINAL = {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}


@pytest.fixture(scope="module")
def flink(start_server: Callable[..., Server]) -> tuple[Server, int]:
    setup = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-flink")], capture_output=True, text=True, timeout=1200, check=False
    )
    if setup.returncode != 0:
        pytest.fail(f"scripts/setup-flink failed:\n{setup.stderr[-4000:]}")
    grpc_port = free_port()
    return start_server("sqlite", "beam,flink", "--grpc-port", str(grpc_port)), grpc_port


def _spec(folder: Path) -> Path:
    (folder / PROGRAM.name).write_text(PROGRAM.read_text())
    spec = {
        "metadata": {
            "name": "Sums per key",
            "streaming": False,
            "parameters": [
                {"name": "output", "label": "Output", "helpText": "where the sums go", "regexes": ["/.+"]},
                {"name": "scale", "label": "Scale", "helpText": "a factor", "isOptional": True, "regexes": ["[0-9]+"]},
            ],
        },
        "tidegate": {"engine": "flink", "program": PROGRAM.name},
    }
    path = folder / "flink-spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_a_flink_flex_template_runs_to_done_over_grpc_and_rest(flink: tuple[Server, int], tmp_path: Path) -> None:
    server, grpc_port = flink
    spec = _spec(tmp_path)
    channel = grpc.insecure_channel(f"localhost:{grpc_port}")
    options: Any = {"api_endpoint": server.base}
    over = {
        "grpc": dataflow.FlexTemplatesServiceClient(transport=FlexTemplatesServiceGrpcTransport(channel=channel)),
        "rest": dataflow.FlexTemplatesServiceClient(
            transport="rest", client_options=options, credentials=AnonymousCredentials()
        ),
    }
    jobs = dataflow.JobsV1Beta3Client(transport="rest", client_options=options, credentials=AnonymousCredentials())
    launched: dict[str, tuple[str, Path]] = {}
    try:
        for kind, client in over.items():
            out = tmp_path / f"sums-{kind}.csv"
            response = client.launch_flex_template(
                request={
                    "project_id": "flink-templates",
                    "location": LOCATION,
                    "launch_parameter": {
                        "job_name": f"flink-sum-{kind}",
                        "container_spec_gcs_path": str(spec),
                        "parameters": {"output": str(out), "scale": "10"},
                    },
                }
            )
            assert response.job.id and response.job.name == f"flink-sum-{kind}"
            assert response.job.type_ == dataflow.JobType.JOB_TYPE_BATCH
            launched[kind] = (response.job.id, out)
    finally:
        channel.close()
    for kind, (job_id, out) in launched.items():
        deadline = time.monotonic() + 300  # a guard against hanging, not a timing check
        where = {"project_id": "flink-templates", "location": LOCATION, "job_id": job_id}
        while (state := jobs.get_job(request=where).current_state.name) not in TERMINAL:
            assert time.monotonic() < deadline, f"the {kind} job is still {state}"
            time.sleep(0.5)
        assert state == "JOB_STATE_DONE", kind
        assert sorted(out.read_text().splitlines()) == ["a,40", "b,60", "c,50"], kind

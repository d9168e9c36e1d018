"""Airflow's deferrable Dataflow hook asks tidegate for jobs' states (run in the Airflow environment).

``python job_status.py ENDPOINT PROJECT LOCATION JOB_ID...`` prints one JSON line: each job's
state as ``AsyncDataflowHook.get_job_status`` answers it, or the error it raised.

The hook is the provider's own; only its endpoint is set (the hook has no option for one,
so a subclass answers ``get_client_options``, as a DAG pointing it elsewhere would). It
opens a TLS gRPC channel, always: the CA comes from ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``,
the credentials from the Airflow connection ``google_cloud_default``
(``AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from airflow.providers.google.cloud.hooks.dataflow import AsyncDataflowHook, DataflowHook
from google.api_core.client_options import ClientOptions

ENDPOINT = sys.argv[1]


class TidegateDataflowHook(DataflowHook):
    def get_client_options(self, api_endpoint_override: str | None = None) -> ClientOptions:
        return ClientOptions(api_endpoint=api_endpoint_override or ENDPOINT)


class TidegateAsyncDataflowHook(AsyncDataflowHook):
    sync_hook_class = TidegateDataflowHook


async def main(project: str, location: str, job_ids: list[str]) -> dict[str, Any]:
    hook = TidegateAsyncDataflowHook(gcp_conn_id="google_cloud_default")
    result: dict[str, Any] = {}
    for job_id in job_ids:
        try:
            state = await hook.get_job_status(job_id, project_id=project, location=location)
            result[job_id] = {"state": state.name}
        except Exception as error:  # the test reads what the hook raised
            result[job_id] = {"error": type(error).__name__, "message": str(error)}
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[2], sys.argv[3], sys.argv[4:]))))

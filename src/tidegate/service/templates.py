"""Template use cases (LaunchTemplate, CreateJobFromTemplate, GetTemplate, LaunchFlexTemplate), part of ``JobService``.

A classic template is the Job JSON Beam's DataflowRunner writes with
``--template_location``: launching it substitutes the runtime parameters into the
pipeline options and creates the job, whose staged pipeline runs on the Beam engine.

A flex template names a program (``tidegate.templates.FlexSpec``). A Flink program
becomes a job for the Flink engine, as ``tidegate run --engine flink`` makes one. A Beam
program is run as Dataflow's launcher runs it: with DataflowRunner and
``--template_location``, so that it writes its job instead of submitting it; the job is
then created from that file, and the launch answers with it.

Every check runs before anything is written: a bad launch, or one with
``validate_only``, creates nothing. A launch whose job name an active job has is refused
with ALREADY_EXISTS (HTTP 409), as Dataflow refuses it: unlike CreateJob, which answers
that job, a launch's caller has no ``clientRequestId`` to tell it from its own. A launched
job gets a ``clientRequestId`` of its own, so that a DataflowRunner answered with it can.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from google.protobuf import json_format

from tidegate.errors import InvalidArgument, NotFound
from tidegate.jobspec import PIPELINE_ARTIFACT, JobPb, job_from_pb, parse_spec
from tidegate.lifecycle import JobType
from tidegate.model import Job, ListFilter, NewJob
from tidegate.os_user import RunAs
from tidegate.service.staging import Staging
from tidegate.service.template_files import (
    FlexSpec,
    LaunchEnvironment,
    TemplateLaunch,
    TemplateMetadata,
    check_parameters,
    parse_flex_spec,
    parse_metadata,
    runtime_parameters,
    substitute,
)
from tidegate.store import Store

__all__ = ["LAUNCH_TIMEOUT_S", "METADATA_SUFFIX", "TemplateCases", "TemplateInfo"]

METADATA_SUFFIX = "_metadata"
"""A classic template's metadata lies beside it, under its name and this suffix (as on Dataflow)."""
LAUNCH_TIMEOUT_S = 300.0
"""How long a flex template's Beam program may take to write its job."""
_FLEXRS_COST_OPTIMIZED = 2


@dataclass(frozen=True)
class TemplateInfo:
    """What GetTemplate answers: the kind of template and its metadata."""

    kind: str
    """``LEGACY`` (a classic template) or ``FLEX``."""
    metadata: TemplateMetadata
    language: str = "PYTHON"


def _read_json(staging: Staging, url: str, what: str) -> Any:
    data = staging.read(url)
    try:
        return json.loads(data)
    except ValueError as error:
        raise InvalidArgument(f"the {what} {url} is not JSON: {error}", reason="INVALID_TEMPLATE") from None


def _template_pb(data: object, url: str) -> Any:
    """A classic template's Job, from its JSON (fields of newer Beam releases are ignored)."""
    if not isinstance(data, dict) or "environment" not in data:
        raise InvalidArgument(
            f"{url} is not a classic template (a Job written by Beam's DataflowRunner with --template_location)",
            reason="INVALID_TEMPLATE",
        )
    pb = JobPb()
    try:
        json_format.ParseDict(data, pb, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError) as error:
        detail = str(error).split("\n", 1)[0]
        raise InvalidArgument(f"the template {url} is not a valid Job: {detail}", reason="INVALID_TEMPLATE") from None
    return pb


def _options(pb: Any) -> dict[str, Any]:
    """The job's ``sdkPipelineOptions`` as a dict (with its ``options`` and ``display_data``)."""
    if not pb.environment.HasField("sdk_pipeline_options"):
        return {}
    result: dict[str, Any] = json_format.MessageToDict(pb.environment.sdk_pipeline_options)
    return result


def _apply(pb: Any, options: Mapping[str, Any], environment: LaunchEnvironment) -> None:
    """Write the pipeline options back into the job, with the launch environment applied."""
    sdk = _options(pb)
    merged = dict(sdk.get("options") or {}) | dict(options)
    merged.update(environment.options())
    merged.pop("template_location", None)  # the job was made from a template; it is not one
    env = pb.environment
    if environment.temp_location:
        env.temp_storage_prefix = environment.temp_location
        merged["temp_location"] = environment.temp_location
    if environment.num_workers:
        pool = env.worker_pools[0] if env.worker_pools else env.worker_pools.add()
        pool.num_workers = environment.num_workers
        merged["num_workers"] = environment.num_workers
    if environment.max_workers:
        merged["max_num_workers"] = environment.max_workers
    if environment.experiments:
        env.experiments.extend(e for e in environment.experiments if e not in env.experiments)
        merged["experiments"] = list(dict.fromkeys([*(merged.get("experiments") or []), *environment.experiments]))
    if environment.flexrs_cost_optimized:
        env.flex_resource_scheduling_goal = _FLEXRS_COST_OPTIMIZED
    pb.labels.update(environment.labels)
    env.sdk_pipeline_options.Clear()
    json_format.ParseDict({**sdk, "options": merged}, env.sdk_pipeline_options)


class TemplateCases:
    """The template half of ``JobService`` (mixed in; it supplies the attributes below)."""

    store: Store
    default_location: str
    staging: Staging
    launcher_python: str = sys.executable
    """The Python that runs flex templates' Beam programs: it needs apache-beam[gcp] (DataflowRunner)."""
    launcher_endpoint: str = "http://localhost"
    run_as: RunAs | None = None
    """The user flex templates' programs run as (``--run-as``); None: the server's."""
    """The launcher's ``--dataflow_endpoint``: this server, spelled ``localhost`` so that Beam stages locally."""

    def create_new_job(self, new: NewJob) -> Job:
        raise NotImplementedError

    def check_new_job(self, new: NewJob) -> None:
        raise NotImplementedError

    # -- GetTemplate -------------------------------------------------------------------

    def get_template(self, gcs_path: str) -> TemplateInfo:
        """The template's metadata: a classic template's ``_metadata`` file (or its runtime options), a flex spec's."""
        _need_path(gcs_path, "gcsPath")
        data = _read_json(self.staging, gcs_path, "template")
        if isinstance(data, dict) and "tidegate" in data:
            spec = parse_flex_spec(data, gcs_path)
            return TemplateInfo("FLEX", spec.metadata, spec.language or "PYTHON")
        return TemplateInfo("LEGACY", self._classic_metadata(gcs_path, _template_pb(data, gcs_path)))

    def _classic_metadata(self, gcs_path: str, pb: Any) -> TemplateMetadata:
        where = gcs_path + METADATA_SUFFIX
        raw = self.staging.read_if_present(where)
        if raw is not None:
            try:
                data = json.loads(raw)
            except ValueError as error:
                raise InvalidArgument(f"the metadata {where} is not JSON: {error}", reason="INVALID_TEMPLATE") from None
            metadata = parse_metadata(data, where)
            return metadata if metadata.name else replace(metadata, name=pb.name)
        return runtime_parameters(pb.name, _options(pb).get("display_data") or [])

    # -- classic templates -------------------------------------------------------------

    def launch_template(self, launch: TemplateLaunch, gcs_path: str) -> Job | None:
        """LaunchTemplate / CreateJobFromTemplate: the job made from a classic template (None with validate_only)."""
        _need_path(gcs_path, "gcsPath")
        pb = _template_pb(_read_json(self.staging, gcs_path, "template"), gcs_path)
        parameters = check_parameters(self._classic_metadata(gcs_path, pb), launch.parameters)
        return self._create(pb, launch, parameters)

    def _create(
        self,
        pb: Any,
        launch: TemplateLaunch,
        parameters: Mapping[str, str],
        artifacts: Mapping[str, bytes] | None = None,
    ) -> Job | None:
        """Create (or with validate_only, only check) the job a template describes, its parameters set."""
        location = launch.location or self.default_location
        for name in ("id", "project_id", "location", "client_request_id", "current_state", "requested_state"):
            pb.ClearField(name)
        pb.name = launch.job_name
        options = {**parameters, "job_name": launch.job_name, "project": launch.project_id, "region": location}
        _apply(pb, options, launch.environment)
        self._replacing(pb, launch)
        new = job_from_pb(pb, launch.project_id, location)
        if artifacts:
            new = replace(new, artifacts={**new.artifacts, **artifacts})
        return self._create_or_check(new, launch)

    def _create_or_check(self, new: NewJob, launch: TemplateLaunch) -> Job | None:
        # A launched job carries a clientRequestId of its own, as the job Beam's DataflowRunner submits does:
        # a DataflowRunner whose create is answered with it then knows it is not its own.
        new = replace(new, client_request_id=_request_id(), caller=launch.caller)
        self.check_new_job(new)
        if launch.validate_only:
            return None
        return self.create_new_job(new)  # as Dataflow's launches: a name an active job has is ALREADY_EXISTS

    def _replacing(self, pb: Any, launch: TemplateLaunch) -> None:
        """``update``: the new job replaces the running one of the same name."""
        if not launch.update:
            return
        location = launch.location or self.default_location
        page = self.store.list_jobs(launch.project_id, location, ListFilter.ACTIVE, 10, "", launch.job_name)
        running = [job for job in page.items if job.name == launch.job_name]
        if not running:
            raise NotFound(
                f"update: no active job named {launch.job_name!r} in project {launch.project_id}, location {location}",
                reason="JOB_NOT_FOUND",
            )
        pb.replace_job_id = running[0].id
        pb.transform_name_mapping.update(launch.transform_name_mapping)

    # -- flex templates ----------------------------------------------------------------

    def launch_flex_template(self, launch: TemplateLaunch, spec_path: str) -> Job | None:
        """LaunchFlexTemplate: the job the spec's program makes (None with validate_only)."""
        _need_path(spec_path, "containerSpecGcsPath")
        spec = parse_flex_spec(_read_json(self.staging, spec_path, "flex template spec"), spec_path)
        parameters = check_parameters(spec.metadata, launch.parameters)
        launch = replace(launch, environment=launch.environment.over(spec.default_environment))
        program = self.staging.read(spec.program)
        if spec.engine == "flink":
            return self._launch_flink(spec, launch, parameters, program)
        if launch.validate_only:  # the program is not run: checking the job it would make is running it
            pb = JobPb(name=launch.job_name, type_=int(JobType.JOB_TYPE_BATCH))
            return self._create(pb, launch, {})
        return self._launch_beam(spec, launch, parameters, program)

    def _launch_flink(
        self, spec: FlexSpec, launch: TemplateLaunch, parameters: Mapping[str, str], program: bytes
    ) -> Job | None:
        """A job for the Flink engine, as ``tidegate run --engine flink`` creates (the program kept with it)."""
        args = list(spec.args)
        if spec.program.endswith(".sql"):
            program = substitute(program.decode("utf-8", "replace"), parameters).encode()
        else:
            args += [f"--{name}={value}" for name, value in sorted(parameters.items())]
        job_type = JobType.JOB_TYPE_STREAMING if spec.metadata.streaming else JobType.JOB_TYPE_BATCH
        pb = JobPb(name=launch.job_name, type_=int(job_type))
        own = {"engine": "flink", "program": spec.program, "args": args}
        _apply(pb, {"tidegate": own}, launch.environment)
        self._replacing(pb, launch)
        new = job_from_pb(pb, launch.project_id, launch.location or self.default_location)
        artifact = parse_spec(new.spec, new.type).program_artifact
        return self._create_or_check(replace(new, artifacts={artifact: program}), launch)

    def _launch_beam(
        self, spec: FlexSpec, launch: TemplateLaunch, parameters: Mapping[str, str], program: bytes
    ) -> Job | None:
        """Run the Beam program as Dataflow's launcher does, then create the job it wrote."""
        for location in (launch.environment.staging_location, launch.environment.temp_location):
            if location:  # the launcher writes there: a folder the server trusts, or gs://
                self.staging.local_path(location)
        with tempfile.TemporaryDirectory(prefix="tidegate-flex-") as tmp:
            folder = Path(tmp)
            own = Staging([folder])  # what the launch itself writes
            local = urlparse(spec.program)
            script = Path(local.path if local.scheme == "file" else spec.program)
            if local.scheme not in ("", "file") or self.run_as is not None:  # a copy to run (its user may read)
                script = folder / Path(local.path).name
                script.write_bytes(program)
            staging = launch.environment.staging_location or launch.environment.temp_location
            if not staging:
                staging = str(folder / "staging")
                Path(staging).mkdir()
            if self.run_as is not None:  # the folder becomes the program's user's (the server reads it safely)
                self.run_as.give(*(p for p in (folder, script, Path(staging)) if p.is_relative_to(folder)))
            job_file = folder / "job.json"
            args = [*spec.args, *(f"--{name}={value}" for name, value in sorted(parameters.items()))]
            self._run_launcher(script.resolve(), args, launch, staging, job_file)
            pb = _template_pb(
                _read_json(own, str(job_file), "job written by the flex template's program"), str(job_file)
            )
            pipeline_url = urlparse(str(_options(pb).get("options", {}).get("pipelineUrl") or ""))
            if pipeline_url.path and pipeline_url.scheme in ("", "file") and own.allows(pipeline_url.path):
                return self._create(pb, launch, {}, {PIPELINE_ARTIFACT: own.read(pipeline_url.geturl())})
            return self._create(pb, launch, {})

    def _run_launcher(self, script: Path, args: list[str], launch: TemplateLaunch, staging: str, out: Path) -> None:
        location = launch.location or self.default_location
        command = [self.launcher_python, str(script), *args, "--runner=DataflowRunner", "--no_auth"]
        command.append(f"--dataflow_endpoint={self.launcher_endpoint}")
        command += [f"--project={launch.project_id}", f"--region={location}", f"--job_name={launch.job_name}"]
        command += [f"--temp_location={staging}", f"--staging_location={staging}", f"--template_location={out}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")} | {"PYTHONUNBUFFERED": "1"}
        as_user: dict[str, Any] = {}
        if self.run_as is not None:
            env = self.run_as.environment(env)
            as_user = self.run_as.popen_kwargs()
        try:
            proc = subprocess.Popen(
                command,
                cwd=script.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **as_user,
            )
        except OSError as error:
            raise InvalidArgument(
                f"cannot run the flex template's program with {self.launcher_python}: {error}",
                reason="FLEX_TEMPLATE_LAUNCH_FAILED",
            ) from error
        try:
            output, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise InvalidArgument(
                f"the flex template's program {script.name} wrote no job within {LAUNCH_TIMEOUT_S:.0f} s",
                reason="FLEX_TEMPLATE_LAUNCH_FAILED",
            ) from None
        finally:  # whatever the program started goes with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode == 0 and out.exists():
            return
        tail = output.decode("utf-8", "replace").strip()[-2000:]
        hint = ""
        if "apitools" in tail or "No module named 'apache_beam" in tail:
            hint = (
                f" (flex templates' Beam programs run with {self.launcher_python}, which needs apache-beam[gcp]:"
                " start the server with --launcher-python naming one that has it)"
            )
        how = f"exited with {proc.returncode}" if proc.returncode else "ended without writing a job"
        raise InvalidArgument(
            f"the flex template's program {script.name} {how}{hint}: {tail}", reason="FLEX_TEMPLATE_LAUNCH_FAILED"
        )


def _request_id() -> str:
    """A fresh ``clientRequestId`` in the form Beam's DataflowRunner gives one: time, then a random number."""
    return f"{datetime.now(UTC):%Y%m%d%H%M%S%f}-{secrets.randbelow(9000) + 1000}"


def _need_path(path: str, what: str) -> None:
    if not path:
        raise InvalidArgument(f"{what} is required: the template's location", reason="MISSING_TEMPLATE_PATH")

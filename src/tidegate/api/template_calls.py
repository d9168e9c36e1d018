"""``TemplatesService`` and ``FlexTemplatesService`` over the service layer, shared by REST and gRPC.

Each call takes Dataflow's request message (gRPC receives it; REST builds it from the
path, the query and the body) and answers Dataflow's response message. An empty
location means the server's default one, as elsewhere.
"""

from __future__ import annotations

from typing import Any

from google.cloud import dataflow_v1beta3 as dataflow

from tidegate.api import wire
from tidegate.auth import OPEN, Caller
from tidegate.errors import InvalidArgument, Unimplemented
from tidegate.model import Job
from tidegate.service.jobs import JobService, check_scope
from tidegate.service.template_files import LaunchEnvironment, TemplateLaunch, TemplateMetadata
from tidegate.service.templates import TemplateInfo

__all__ = ["MESSAGES", "TemplateCalls", "environment_of", "metadata_to_pb"]

MESSAGES: dict[str, Any] = {
    name: getattr(dataflow, name).pb()
    for name in (
        "CreateJobFromTemplateRequest",
        "LaunchTemplateRequest",
        "LaunchTemplateParameters",
        "LaunchTemplateResponse",
        "GetTemplateRequest",
        "GetTemplateResponse",
        "LaunchFlexTemplateRequest",
        "LaunchFlexTemplateResponse",
        "TemplateMetadata",
    )
}
"""The raw protobuf classes of the template messages, by name."""

_FLEXRS_COST_OPTIMIZED = 2
_PYTHON = int(dataflow.SDKInfo.Language.PYTHON)
_TEMPLATE_TYPES = {kind.name: int(kind) for kind in list(dataflow.GetTemplateResponse.TemplateType)}


def environment_of(pb: Any) -> LaunchEnvironment:
    """A ``RuntimeEnvironment`` or ``FlexTemplateRuntimeEnvironment`` as the parts tidegate honours."""
    flexrs = pb.flexrs_goal == _FLEXRS_COST_OPTIMIZED if "flexrs_goal" in pb.DESCRIPTOR.fields_by_name else False
    staging = pb.staging_location if "staging_location" in pb.DESCRIPTOR.fields_by_name else ""
    if pb.num_workers < 0 or pb.max_workers < 0:
        raise InvalidArgument("numWorkers and maxWorkers must not be negative", reason="INVALID_ENVIRONMENT")
    return LaunchEnvironment(
        num_workers=pb.num_workers,
        max_workers=pb.max_workers,
        temp_location=pb.temp_location,
        staging_location=staging,
        experiments=tuple(pb.additional_experiments),
        labels=dict(pb.additional_user_labels),
        pipeline_options=tuple(pb.additional_pipeline_options),
        flexrs_cost_optimized=flexrs,
    )


def metadata_to_pb(metadata: TemplateMetadata) -> Any:
    """``google.dataflow.v1beta3.TemplateMetadata``."""
    pb = MESSAGES["TemplateMetadata"](
        name=metadata.name, description=metadata.description, streaming=metadata.streaming
    )
    for parameter in metadata.parameters:
        item = pb.parameters.add(
            name=parameter.name,
            label=parameter.label,
            help_text=parameter.help_text,
            is_optional=parameter.optional,
            regexes=list(parameter.regexes),
        )
        if parameter.default is not None:
            item.default_value = parameter.default
    return pb


def _template_response(info: TemplateInfo) -> Any:
    response = MESSAGES["GetTemplateResponse"]()
    response.status.code = 0
    response.metadata.CopyFrom(metadata_to_pb(info.metadata))
    response.template_type = _TEMPLATE_TYPES[info.kind]
    response.runtime_metadata.sdk_info.language = _PYTHON
    for parameter in response.metadata.parameters:
        response.runtime_metadata.parameters.add().CopyFrom(parameter)
    return response


def _job_name(name: str) -> str:
    if not name:
        raise InvalidArgument("jobName is required to launch a template", reason="MISSING_JOB_NAME")
    return name


def _launch(request: Any, params: Any, transform_name_mapping: Any, caller: Caller) -> TemplateLaunch:
    """A LaunchTemplate or LaunchFlexTemplate request's launch (their parameters differ in name only)."""
    return TemplateLaunch(
        project_id=request.project_id,
        location=request.location or None,
        job_name=_job_name(params.job_name),
        parameters=dict(params.parameters),
        environment=environment_of(params.environment),
        validate_only=request.validate_only,
        update=params.update,
        transform_name_mapping=dict(transform_name_mapping),
        caller=caller.name,
    )


def _launched(response_type: str, job: Job | None) -> Any:
    """A launch's response: the job, or none for a ``validate_only`` launch."""
    response = MESSAGES[response_type]()
    if job is not None:
        response.job.CopyFrom(wire.job_to_pb(job, wire.JobView.SUMMARY))
    return response


class TemplateCalls:
    """The template RPCs, message in, message out."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    def create_job_from_template(self, request: Any, caller: Caller = OPEN) -> Any:
        """CreateJobFromTemplate: the job made from the classic template at ``gcs_path``."""
        launch = TemplateLaunch(
            project_id=request.project_id,
            location=request.location or None,
            job_name=_job_name(request.job_name),
            parameters=dict(request.parameters),
            environment=environment_of(request.environment),
            caller=caller.name,
        )
        job = self.service.launch_template(launch, request.gcs_path)
        assert job is not None  # only validate_only launches create none
        return wire.job_to_pb(job, wire.JobView.SUMMARY)

    def launch_template(self, request: Any, caller: Caller = OPEN) -> Any:
        """LaunchTemplate: a classic template's job (none with ``validate_only``)."""
        if request.HasField("dynamic_template"):
            raise Unimplemented(
                "dynamic templates are not supported: launch a classic template with gcsPath",
                reason="DYNAMIC_TEMPLATE_UNSUPPORTED",
            )
        params = request.launch_parameters
        launch = _launch(request, params, params.transform_name_mapping, caller)
        return _launched("LaunchTemplateResponse", self.service.launch_template(launch, request.gcs_path))

    def get_template(self, request: Any, caller: Caller = OPEN) -> Any:
        """GetTemplate: the template's metadata (the only view there is)."""
        check_scope(request.project_id, request.location or None)
        return _template_response(self.service.get_template(request.gcs_path))

    def launch_flex_template(self, request: Any, caller: Caller = OPEN) -> Any:
        """LaunchFlexTemplate: the job the spec's program makes (none with ``validate_only``)."""
        params = request.launch_parameter
        if params.HasField("container_spec") and not params.container_spec_gcs_path:
            raise InvalidArgument(
                "an inline containerSpec names a container image, which tidegate cannot run: give"
                " containerSpecGcsPath, a spec that names the program (see tidegate's templates reference)",
                reason="INLINE_CONTAINER_SPEC_UNSUPPORTED",
            )
        if params.launch_options:
            raise InvalidArgument(
                "launchOptions are not supported: pass the program's options as parameters",
                reason="LAUNCH_OPTIONS_UNSUPPORTED",
            )
        launch = _launch(request, params, params.transform_name_mappings, caller)
        job = self.service.launch_flex_template(launch, params.container_spec_gcs_path)
        return _launched("LaunchFlexTemplateResponse", job)

"""Dataflow templates as domain values: metadata, declared parameters, flex template specs.

Pure: no I/O. ``service_templates`` reads the files and launches the jobs; this module
says what the files mean and whether a launch's parameters fit them.

- A classic template is the Job JSON that Beam's DataflowRunner writes with
  ``--template_location=PATH``; its parameters are the pipeline's runtime options
  (``RuntimeValueProvider``), declared by an optional ``PATH_metadata`` file
  (``{"name", "description", "parameters": [{"name", "label", "helpText",
  "isOptional", "regexes", "defaultValue"}]}``).
- A flex template is a spec file (``ContainerSpec`` JSON) whose ``tidegate`` key names
  the program to run: ``{"engine": "beam" | "flink", "program": PATH, "args": [...]}``.
  See ``docs/reference/templates.md``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from tidegate.errors import InvalidArgument

__all__ = [
    "FlexSpec",
    "LaunchEnvironment",
    "Parameter",
    "TemplateLaunch",
    "TemplateMetadata",
    "check_parameters",
    "parse_flex_spec",
    "parse_metadata",
    "runtime_parameters",
    "substitute",
]

_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RUNTIME_VALUE = re.compile(r"RuntimeValueProvider\(option: (\w+), type: (\w+), default_value: (.*)\)", re.S)
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
ENGINES = ("beam", "flink")


@dataclass(frozen=True)
class Parameter:
    """A template's declared parameter (Dataflow's ``ParameterMetadata``)."""

    name: str
    label: str = ""
    help_text: str = ""
    optional: bool = False
    regexes: tuple[str, ...] = ()
    """The value must match each of them, whole."""
    default: str | None = None


@dataclass(frozen=True)
class TemplateMetadata:
    """What a template declares of itself (Dataflow's ``TemplateMetadata``)."""

    name: str
    description: str = ""
    parameters: tuple[Parameter, ...] = ()
    streaming: bool = False


@dataclass(frozen=True)
class LaunchEnvironment:
    """The runtime environment a launch asks for (the parts of ``RuntimeEnvironment`` tidegate honours)."""

    num_workers: int = 0
    max_workers: int = 0
    temp_location: str = ""
    staging_location: str = ""
    experiments: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    pipeline_options: tuple[str, ...] = ()
    """``additionalPipelineOptions``: ``name=value`` each."""
    flexrs_cost_optimized: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    def over(self, defaults: LaunchEnvironment) -> LaunchEnvironment:
        """This environment with ``defaults`` filling what it leaves unset (lists and labels are merged)."""
        return LaunchEnvironment(
            num_workers=self.num_workers or defaults.num_workers,
            max_workers=self.max_workers or defaults.max_workers,
            temp_location=self.temp_location or defaults.temp_location,
            staging_location=self.staging_location or defaults.staging_location,
            experiments=tuple(dict.fromkeys((*defaults.experiments, *self.experiments))),
            labels={**defaults.labels, **self.labels},
            pipeline_options=(*defaults.pipeline_options, *self.pipeline_options),
            flexrs_cost_optimized=self.flexrs_cost_optimized or defaults.flexrs_cost_optimized,
        )

    def options(self) -> dict[str, str]:
        """``pipeline_options`` as a dict; INVALID_ARGUMENT for an entry without ``=``."""
        result: dict[str, str] = {}
        for entry in self.pipeline_options:
            name, equals, value = entry.partition("=")
            name = name.strip().removeprefix("--")
            if not equals or not _PARAMETER_NAME.fullmatch(name):
                raise InvalidArgument(
                    f"invalid additionalPipelineOptions entry {entry!r}: expected name=value",
                    reason="INVALID_ENVIRONMENT",
                )
            result[name] = value
        return result


@dataclass(frozen=True)
class TemplateLaunch:
    """One launch of a template: where the job goes, its name, parameters and environment."""

    project_id: str
    location: str | None
    job_name: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    environment: LaunchEnvironment = field(default_factory=LaunchEnvironment)
    validate_only: bool = False
    update: bool = False
    """Replace the running job of the same name (``transform_name_mapping`` maps its steps)."""
    transform_name_mapping: Mapping[str, str] = field(default_factory=dict)
    caller: str = ""
    """Who launches it (recorded in the job's history)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))
        object.__setattr__(self, "transform_name_mapping", MappingProxyType(dict(self.transform_name_mapping)))


@dataclass(frozen=True)
class FlexSpec:
    """A flex template spec: the program, its metadata and the default environment."""

    engine: str
    program: str
    """Where the program lies, resolved against the spec's own location."""
    metadata: TemplateMetadata
    default_environment: LaunchEnvironment = field(default_factory=LaunchEnvironment)
    args: tuple[str, ...] = ()
    image: str = ""
    language: str = ""


def _bad(where: str, detail: str) -> InvalidArgument:
    return InvalidArgument(f"invalid template metadata in {where}: {detail}", reason="INVALID_TEMPLATE_METADATA")


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(where, f"{key} must be a string")
    return value


def _parameter(data: object, where: str) -> Parameter:
    if not isinstance(data, dict):
        raise _bad(where, "each parameter must be a JSON object")
    name = _text(data, "name", where)
    if not _PARAMETER_NAME.fullmatch(name):
        raise _bad(where, f"invalid parameter name {name!r}")
    optional = data.get("isOptional", False)
    if not isinstance(optional, bool):
        raise _bad(where, f"isOptional of parameter {name} must be true or false")
    regexes = data.get("regexes") or []
    if not isinstance(regexes, list) or not all(isinstance(r, str) for r in regexes):
        raise _bad(where, f"regexes of parameter {name} must be a list of strings")
    for pattern in regexes:
        try:
            re.compile(pattern)
        except re.error as error:
            raise _bad(where, f"regex {pattern!r} of parameter {name} does not compile: {error}") from None
    default = data.get("defaultValue")
    if default is not None and not isinstance(default, str):
        raise _bad(where, f"defaultValue of parameter {name} must be a string")
    return Parameter(
        name=name,
        label=_text(data, "label", where),
        help_text=_text(data, "helpText", where),
        optional=optional,
        regexes=tuple(regexes),
        default=default,
    )


def parse_metadata(data: object, where: str) -> TemplateMetadata:
    """Template metadata from its JSON (Dataflow's ``TemplateMetadata``); keys tidegate has no use for are ignored."""
    if not isinstance(data, dict):
        raise _bad(where, "expected a JSON object")
    raw = data.get("parameters")
    raw = [] if raw is None else raw
    if not isinstance(raw, list):
        raise _bad(where, "parameters must be a list")
    parameters = tuple(_parameter(item, where) for item in raw)
    names = [p.name for p in parameters]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise _bad(where, f"parameters declared twice: {', '.join(twice)}")
    streaming = data.get("streaming", False)
    if not isinstance(streaming, bool):
        raise _bad(where, "streaming must be true or false")
    return TemplateMetadata(
        name=_text(data, "name", where),
        description=_text(data, "description", where),
        parameters=parameters,
        streaming=streaming,
    )


def runtime_parameters(name: str, display_data: Iterable[Any]) -> TemplateMetadata:
    """A classic template's own parameters: the pipeline's runtime options, read from its display data.

    Beam's DataflowRunner lists every option in ``sdkPipelineOptions.display_data``; an
    unset ``add_value_provider_argument`` option shows as ``RuntimeValueProvider(option:
    NAME, type: TYPE, default_value: REPR)``. All are optional: the pipeline has its defaults.
    """
    found: dict[str, Parameter] = {}
    for item in display_data:
        value = item.get("value") if isinstance(item, dict) else None
        match = _RUNTIME_VALUE.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            continue
        option, kind, default_repr = match.groups()
        try:
            default = ast.literal_eval(default_repr)
        except (ValueError, SyntaxError):
            default = default_repr
        found[option] = Parameter(
            name=option,
            label=option,
            help_text=f"a runtime option of type {kind}",
            optional=True,
            default=None if default is None else str(default),
        )
    return TemplateMetadata(name=name, parameters=tuple(found[k] for k in sorted(found)))


def check_parameters(metadata: TemplateMetadata, given: Mapping[str, str]) -> dict[str, str]:
    """The launch's parameters with the declared defaults filled in; INVALID_ARGUMENT unless they fit.

    Every parameter must be declared, every required one given (or defaulted), and
    every value must match each of its parameter's regexes, whole.
    """
    declared = {p.name: p for p in metadata.parameters}
    problems: list[tuple[str, str]] = []
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        text = f"unknown parameter(s) {', '.join(unknown)} (the template declares: {known})"
        problems.append(("UNKNOWN_TEMPLATE_PARAMETER", text))
    merged = {p.name: p.default for p in metadata.parameters if p.default is not None}
    merged.update({name: value for name, value in given.items() if name in declared})
    missing = sorted(p.name for p in metadata.parameters if not p.optional and p.name not in merged)
    if missing:
        problems.append(("MISSING_TEMPLATE_PARAMETER", f"missing required parameter(s) {', '.join(missing)}"))
    for name in sorted(merged):
        for pattern in declared[name].regexes:
            if re.fullmatch(pattern, merged[name]) is None:
                problems.append(
                    ("TEMPLATE_PARAMETER_MISMATCH", f"parameter {name}={merged[name]!r} does not match {pattern!r}")
                )
    if problems:
        raise InvalidArgument(
            "The template parameters are invalid: " + "; ".join(text for _, text in problems),
            reason=problems[0][0],
        )
    return merged


def substitute(script: str, parameters: Mapping[str, str]) -> str:
    """A Flink SQL script's ``${name}`` placeholders replaced by the parameters (each must be set)."""
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(script)} - set(parameters))
    if unknown:
        raise InvalidArgument(
            f"the SQL script uses ${{{unknown[0]}}}, which no parameter sets ({', '.join(unknown)})",
            reason="MISSING_TEMPLATE_PARAMETER",
        )
    return _PLACEHOLDER.sub(lambda m: parameters[m.group(1)], script)


def _spec_error(where: str, detail: str) -> InvalidArgument:
    return InvalidArgument(f"invalid flex template spec {where}: {detail}", reason="INVALID_FLEX_TEMPLATE")


def _environment(data: object, where: str) -> LaunchEnvironment:
    if data is None:
        return LaunchEnvironment()
    if not isinstance(data, dict):
        raise _spec_error(where, "defaultEnvironment must be a JSON object")
    labels = data.get("additionalUserLabels") or {}
    experiments = data.get("additionalExperiments") or []
    options = data.get("additionalPipelineOptions") or []
    workers = data.get("numWorkers", 0)
    most = data.get("maxWorkers", 0)
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise _spec_error(where, "defaultEnvironment.additionalUserLabels must map names to strings")
    for key, value in (("additionalExperiments", experiments), ("additionalPipelineOptions", options)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _spec_error(where, f"defaultEnvironment.{key} must be a list of strings")
    for key, number in (("numWorkers", workers), ("maxWorkers", most)):
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise _spec_error(where, f"defaultEnvironment.{key} must be a whole number, not {number!r}")
    texts = {key: data.get(key) or "" for key in ("tempLocation", "stagingLocation", "flexrsGoal")}
    if not all(isinstance(v, str) for v in texts.values()):
        raise _spec_error(where, "defaultEnvironment: tempLocation, stagingLocation and flexrsGoal are strings")
    return LaunchEnvironment(
        num_workers=workers,
        max_workers=most,
        temp_location=texts["tempLocation"],
        staging_location=texts["stagingLocation"],
        experiments=tuple(experiments),
        labels=labels,
        pipeline_options=tuple(options),
        flexrs_cost_optimized=texts["flexrsGoal"] == "FLEXRS_COST_OPTIMIZED",
    )


def _resolve(program: str, spec_location: str) -> str:
    """A program path relative to the spec's folder (local or ``gs://``); absolute ones as they are."""
    if "://" in program or program.startswith("/"):
        return program
    base = spec_location.removeprefix("file://")
    folder = base.rsplit("/", 1)[0] if "/" in base else "."
    return f"{folder}/{program}"


def parse_flex_spec(data: object, where: str) -> FlexSpec:
    """A flex template spec from its JSON (``where`` is the spec's location: relative programs lie beside it)."""
    if not isinstance(data, dict):
        raise _spec_error(where, "expected a JSON object")
    own = data.get("tidegate")
    if not isinstance(own, dict):
        raise _spec_error(
            where,
            'it names no program: add "tidegate": {"engine": "beam" | "flink", "program": "main.py"}'
            " (a container image cannot run here)",
        )
    engine = own.get("engine", "beam")
    program = own.get("program")
    args = own.get("args") or []
    if engine not in ENGINES:
        raise _spec_error(where, f"tidegate.engine must be beam or flink, not {engine!r}")
    if not isinstance(program, str) or not program:
        raise _spec_error(where, "tidegate.program must name the pipeline program")
    suffixes = (".py",) if engine == "beam" else (".py", ".sql")
    if not program.endswith(suffixes):
        kind = "a PyFlink program (.py) or Flink SQL script (.sql)"
        if engine == "beam":
            kind = "a Beam Python pipeline (.py)"
        raise _spec_error(where, f"tidegate.program must be {kind}, not {program!r}")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise _spec_error(where, "tidegate.args must be a list of strings")
    sdk = data.get("sdkInfo") or {}
    language = sdk.get("language", "") if isinstance(sdk, dict) else ""
    metadata = parse_metadata(data.get("metadata") or {}, where)
    if not metadata.name:
        metadata = replace(metadata, name=program.rsplit("/", 1)[-1])
    return FlexSpec(
        engine=engine,
        program=_resolve(program, where),
        metadata=metadata,
        default_environment=_environment(data.get("defaultEnvironment"), where),
        args=tuple(args),
        image=str(data.get("image") or ""),
        language=str(language),
    )

"""Template metadata, parameter validation and flex template specs (``tidegate.templates``), without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from tidegate.errors import InvalidArgument
from tidegate.service.template_files import (
    LaunchEnvironment,
    Parameter,
    TemplateMetadata,
    check_parameters,
    parse_flex_spec,
    parse_metadata,
    runtime_parameters,
    substitute,
)

METADATA = TemplateMetadata(
    name="wc",
    parameters=(
        Parameter("input", regexes=("gs://.+|/.+",)),
        Parameter("output"),
        Parameter("suffix", optional=True, regexes=("[!?]*",)),
        Parameter("shards", optional=True, regexes=("[0-9]+",), default="3"),
    ),
)


def refusal(given: dict[str, str]) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        check_parameters(METADATA, given)
    return caught.value


def test_good_parameters_come_back_with_the_defaults() -> None:
    assert check_parameters(METADATA, {"input": "/in", "output": "o"}) == {"input": "/in", "output": "o", "shards": "3"}
    given = {"input": "gs://b/in", "output": "o", "suffix": "!?", "shards": "12"}
    assert check_parameters(METADATA, given) == given


def test_an_unknown_parameter_is_named_with_the_declared_ones() -> None:
    error = refusal({"input": "/in", "output": "o", "colour": "red"})
    assert error.reason == "UNKNOWN_TEMPLATE_PARAMETER"
    assert "colour" in error.message and "input, output, shards, suffix" in error.message


def test_a_missing_required_parameter_is_refused() -> None:
    error = refusal({"input": "/in"})
    assert error.reason == "MISSING_TEMPLATE_PARAMETER"
    assert "output" in error.message


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ({"input": "relative", "output": "o"}, "input"),
        ({"input": "/in", "output": "o", "suffix": "x"}, "suffix"),
        ({"input": "/in", "output": "o", "shards": "3a"}, "shards"),  # a partial match is no match
    ],
)
def test_a_value_must_match_its_regexes_whole(given: dict[str, str], name: str) -> None:
    error = refusal(given)
    assert error.reason == "TEMPLATE_PARAMETER_MISMATCH"
    assert f"parameter {name}=" in error.message


def test_every_problem_is_told_at_once() -> None:
    error = refusal({"colour": "red", "input": "relative"})
    assert error.reason == "UNKNOWN_TEMPLATE_PARAMETER"
    assert "colour" in error.message and "missing required parameter(s) output" in error.message
    assert "input='relative'" in error.message


def test_a_template_without_parameters_takes_none() -> None:
    assert check_parameters(TemplateMetadata(name="plain"), {}) == {}
    with pytest.raises(InvalidArgument, match="declares: none"):
        check_parameters(TemplateMetadata(name="plain"), {"x": "1"})


def test_metadata_is_read_as_dataflow_writes_it() -> None:
    data = {
        "name": "Word count",
        "description": "Counts words",
        "parameters": [
            {"name": "input", "label": "Input", "helpText": "the text", "regexes": ["/.+"], "paramType": "TEXT"},
            {"name": "suffix", "label": "Suffix", "helpText": "", "isOptional": True, "defaultValue": "!"},
        ],
    }
    metadata = parse_metadata(data, "gs://b/t_metadata")
    assert metadata == TemplateMetadata(
        name="Word count",
        description="Counts words",
        parameters=(
            Parameter("input", "Input", "the text", False, ("/.+",)),
            Parameter("suffix", "Suffix", "", True, (), "!"),
        ),
    )


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ([], "expected a JSON object"),
        ({"parameters": {}}, "parameters must be a list"),
        ({"parameters": [{"name": "1st"}]}, "invalid parameter name"),
        ({"parameters": [{"name": "a", "isOptional": "yes"}]}, "isOptional"),
        ({"parameters": [{"name": "a", "regexes": ["("]}]}, "does not compile"),
        ({"parameters": [{"name": "a"}, {"name": "a"}]}, "declared twice"),
        ({"parameters": [{"name": "a", "defaultValue": 3}]}, "defaultValue"),
    ],
)
def test_bad_metadata_is_refused_clearly(data: Any, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words) as caught:
        parse_metadata(data, "t_metadata")
    assert caught.value.reason == "INVALID_TEMPLATE_METADATA"


def test_runtime_parameters_come_from_the_display_data() -> None:
    display_data = [
        {"key": "runner", "value": "DataflowRunner"},
        {"key": "input", "value": "RuntimeValueProvider(option: input, type: str, default_value: None)"},
        {"key": "suffix", "value": "RuntimeValueProvider(option: suffix, type: str, default_value: '!')"},
        {"key": "n", "value": "RuntimeValueProvider(option: n, type: int, default_value: 5)"},
    ]
    metadata = runtime_parameters("job", display_data)
    assert [(p.name, p.optional, p.default) for p in metadata.parameters] == [
        ("input", True, None), ("n", True, "5"), ("suffix", True, "!"),
    ]  # fmt: skip


def test_sql_placeholders_are_substituted() -> None:
    assert substitute("INSERT INTO ${sink} SELECT ${n}", {"sink": "out", "n": "2"}) == "INSERT INTO out SELECT 2"
    with pytest.raises(InvalidArgument, match="sink"):
        substitute("INSERT INTO ${sink}", {})


def test_a_flex_spec_names_its_program_beside_it() -> None:
    spec = parse_flex_spec(
        {
            "image": "gcr.io/x",
            "sdkInfo": {"language": "PYTHON"},
            "metadata": {"name": "m", "parameters": [{"name": "out"}]},
            "defaultEnvironment": {"numWorkers": 2, "additionalUserLabels": {"a": "b"}},
            "tidegate": {"engine": "flink", "program": "job.sql", "args": ["x"]},
        },
        "gs://bucket/templates/spec.json",
    )
    assert (spec.engine, spec.program, spec.args) == ("flink", "gs://bucket/templates/job.sql", ("x",))
    assert spec.default_environment.num_workers == 2
    assert spec.metadata.parameters == (Parameter("out"),)
    assert parse_flex_spec({"tidegate": {"program": "/abs/main.py"}}, "/t/spec.json").program == "/abs/main.py"
    assert parse_flex_spec({"tidegate": {"program": "main.py"}}, "file:///t/s.json").program == "/t/main.py"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"image": "gcr.io/x"}, "names no program"),
        ({"tidegate": {"engine": "spark", "program": "a.py"}}, "beam or flink"),
        ({"tidegate": {"engine": "beam", "program": "a.sql"}}, "Beam Python pipeline"),
        ({"tidegate": {"program": ""}}, "must name the pipeline program"),
        ({"tidegate": {"program": "a.py", "args": "x"}}, "list of strings"),
        ({"tidegate": {"program": "a.py"}, "defaultEnvironment": {"numWorkers": -1}}, "whole number"),
    ],
)
def test_bad_flex_specs_are_refused_clearly(data: Any, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words) as caught:
        parse_flex_spec(data, "spec.json")
    assert caught.value.reason in ("INVALID_FLEX_TEMPLATE", "INVALID_TEMPLATE_METADATA")


def test_a_launch_environment_fills_in_from_the_defaults() -> None:
    defaults = LaunchEnvironment(num_workers=2, temp_location="/tmp/t", experiments=("a",), labels={"x": "1"})
    given = LaunchEnvironment(experiments=("b", "a"), labels={"y": "2"}, pipeline_options=("k=v",))
    merged = given.over(defaults)
    assert (merged.num_workers, merged.temp_location) == (2, "/tmp/t")
    assert merged.experiments == ("a", "b") and dict(merged.labels) == {"x": "1", "y": "2"}
    assert merged.options() == {"k": "v"}
    with pytest.raises(InvalidArgument, match="name=value"):
        LaunchEnvironment(pipeline_options=("novalue",)).options()

"""Requests for every method of Dataflow's REST API, generated from its discovery document.

The discovery document (``dataflow.v1b3.json``, shipped in google-api-python-client) lists
each method's HTTP method, path, parameters and request schema. ``requests(method, world)``
is a Hypothesis strategy of requests for one method: path and query parameters of the
right kinds (or not), bodies built from the request schema, and everywhere the values
that have broken servers: floats and booleans for enums, unknown enum names, NUL, lone
surrogates, invalid UTF-8 bytes, huge numbers, deep nesting, long strings. Many requests
name the world's real project, locations and jobs, so that they reach the handlers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import googleapiclient
from hypothesis import strategies as st

from tidegate.lifecycle import JobState
from tidegate.model import MessageImportance
from tidegate.store import Store

PROJECT = "fuzz"
"""The project the world's jobs live in."""
DISCOVERY = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "dataflow.v1b3.json"
MAX_DEPTH = 3
"""How deep bodies follow the schema's references (the rest of the schema is left out)."""


@dataclass(frozen=True)
class Method:
    """One method of the discovery document."""

    id: str
    http_method: str
    path: str
    """``v1b3/projects/{projectId}/…``: ``{name}`` a segment, ``{+name}`` one or more."""
    parameters: dict[str, Any] = field(hash=False, compare=False)
    request: str | None = None
    """The request body's schema, if it has one."""

    @property
    def path_parameters(self) -> list[str]:
        return [name for name, spec in self.parameters.items() if spec.get("location") == "path"]

    @property
    def query_parameters(self) -> list[str]:
        return [name for name, spec in self.parameters.items() if spec.get("location") == "query"]


@dataclass(frozen=True)
class World:
    """What lives on the server: requests name these more often than anything else."""

    project: str
    locations: Sequence[str]
    job_ids: Sequence[str]
    job_names: Sequence[str]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    """Percent-encoded, as sent."""
    query: str
    body: bytes | None
    headers: dict[str, str]

    @property
    def url(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    def __str__(self) -> str:
        body = "" if self.body is None else f" {self.body[:300]!r}{'…' if len(self.body) > 300 else ''}"
        return f"{self.method} {self.url[:500]}{body}"


@cache
def document() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DISCOVERY.read_text())
    return data


def methods() -> list[Method]:
    """Every method of the document, each (HTTP method, path) once."""
    found: dict[tuple[str, str], Method] = {}

    def walk(resources: dict[str, Any]) -> None:
        for resource in resources.values():
            for spec in resource.get("methods", {}).values():
                method = Method(
                    spec["id"],
                    spec["httpMethod"],
                    spec["path"],
                    spec.get("parameters", {}),
                    spec.get("request", {}).get("$ref"),
                )
                found.setdefault((method.http_method, method.path), method)
            walk(resource.get("resources", {}))

    walk(document()["resources"])
    return list(found.values())


def fingerprint(store: Store) -> Any:
    """Everything a refused request must leave as it was: every job (each column, its version too), its
    state history and messages, the world's snapshots."""
    ids = sorted(store.job_ids_in_states(list(JobState), 1_000_000))
    jobs = []
    for job_id in ids:
        messages = store.list_messages(job_id, MessageImportance.JOB_MESSAGE_IMPORTANCE_UNKNOWN, None, None, 100_000)
        jobs.append((store.get_job(job_id), tuple(store.history(job_id)), tuple(messages.items)))
    return store.count_jobs(), tuple(jobs), tuple(store.list_snapshots(PROJECT, None))


# -- values that have broken servers --------------------------------------------------------

NASTY_TEXT = [
    "",
    "\x00",
    "a\x00b",
    "\ud800",  # a lone surrogate: JSON can carry it (\ud800), UTF-8 cannot
    "x\udfffy",
    "\ufffd",
    "\u202e",
    "é" * 50,
    "🌊" * 10,
    "x" * 5000,
    "../../../../etc/passwd",
    "/etc/shadow",
    "gs://bucket/object",
    "file:///etc/shadow",
    "%00",
    "%FF",
    "-1",
    "9" * 40,
    "1e999",
    "NaN",
    "true",
    "null",
    "JOB_STATE_BOGUS",
    "job_state_cancelled",
    " JOB_STATE_CANCELLED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_DRAINED",
    "5.7",
    "2026-13-45T25:61:61Z",
    "9999-12-31T23:59:59.999999999Z",
    "0000-01-01T00:00:00Z",
    "1s",
    "-315576000001s",
    "'; DROP TABLE jobs; --",
]
NASTY_NUMBERS: list[Any] = [0, -1, 1, 5.7, -0.0, 1e308, 2**31, 2**63, 2**64, -(2**63) - 1, 10**30, True, False]


def _nested(depth: int) -> Any:
    value: Any = "deep"
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


NASTY_VALUES: list[Any] = [
    *NASTY_TEXT,
    *NASTY_NUMBERS,
    None,
    [],
    {},
    [None],
    {"": None},
    _nested(40),
    _nested(5000),  # deeper than Python's JSON parser goes
]
nasty = st.sampled_from(NASTY_VALUES)
nasty_text = st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=30))


# -- bodies from the schemas ----------------------------------------------------------------


def _schema_value(spec: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    """A value for a property: of its kind mostly, anything nasty sometimes."""
    return st.one_of(_proper(spec, depth), nasty) if depth else _proper(spec, depth)


def _proper(spec: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if "$ref" in spec:
        return schema_body(spec["$ref"], depth + 1)
    kind, form = spec.get("type"), spec.get("format")
    if "enum" in spec:
        names = spec["enum"]
        return st.one_of(st.sampled_from(names), st.integers(-2, len(names) + 2), st.sampled_from(["BOGUS", 2.5]))
    if kind == "string":
        if form in ("int64", "uint64"):
            return st.one_of(st.integers(-(2**64), 2**64).map(str), st.integers(-(2**63), 2**63 - 1))
        if form == "google-datetime":
            return st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123456789Z", "yesterday"])
        if form == "google-duration":
            return st.sampled_from(["3600s", "0.5s", "-1s", "forever", "315576000001s"])
        if form == "byte":
            return st.sampled_from(["aGVsbG8=", "not base64!"])
        return st.one_of(st.text(max_size=20), st.sampled_from(["fuzz", "job-1", "us-central1"]))
    if kind == "integer":
        return st.integers(-(2**33), 2**33)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(_schema_value(spec.get("items", {}), depth), max_size=3)
    if kind == "object":
        extra = spec.get("additionalProperties")
        values = _schema_value(extra, depth) if isinstance(extra, dict) else st.text(max_size=10)
        return st.dictionaries(st.text(max_size=10), values, max_size=3)
    return st.recursive(  # "any": JSON of every kind
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=5,
    )


@cache
def schema_body(name: str, depth: int = 0) -> st.SearchStrategy[Any]:
    """A JSON object of the schema ``name``: some of its properties (by their JSON names), of their kinds or not."""
    if depth > MAX_DEPTH:
        return st.just({})
    properties = document()["schemas"][name].get("properties", {})
    optional = {key: st.deferred(lambda spec=spec: _schema_value(spec, depth)) for key, spec in properties.items()}
    return st.fixed_dictionaries({}, optional=optional)


def _job_body(world: World) -> st.SearchStrategy[dict[str, Any]]:
    """A Job that could be created or could update a job: a good name and state, maybe more."""
    names = st.one_of(
        st.sampled_from(list(world.job_names) or ["fuzz"]), st.from_regex(r"[a-z][-a-z0-9]{0,8}", fullmatch=True)
    )
    states = st.sampled_from(
        ["JOB_STATE_CANCELLED", "JOB_STATE_DRAINED", "JOB_STATE_STOPPED", "JOB_STATE_RUNNING", 5, 7]
    )
    core = st.fixed_dictionaries(
        {"name": names},
        optional={
            "requestedState": st.one_of(states, nasty),
            "type": st.one_of(st.sampled_from(["JOB_TYPE_BATCH", "JOB_TYPE_STREAMING", 1, 2]), nasty),
            "labels": st.dictionaries(
                st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.one_of(st.just("v"), nasty), max_size=3
            ),
            "clientRequestId": st.one_of(st.text(max_size=10), nasty),
        },
    )
    return st.tuples(core, schema_body("Job", MAX_DEPTH - 1)).map(lambda pair: {**pair[1], **pair[0]})


def body_for(method: Method, world: World) -> st.SearchStrategy[Any]:
    assert method.request is not None
    shaped = schema_body(method.request)
    if method.request == "Job":
        shaped = st.one_of(_job_body(world), _job_body(world), shaped)
    return st.one_of(shaped, shaped, shaped, nasty)


def encode(value: Any, how: str) -> bytes:
    """A JSON body, well formed or not: ``how`` picks the encoding's flaw."""
    try:
        text = json.dumps(value, ensure_ascii=how == "ascii", allow_nan=True)
    except (RecursionError, ValueError):
        text = '{"a": ' * 5000 + "1" + "}" * 5000
    raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8
    if how == "latin-1":
        return text.encode("latin-1", "replace")
    if how == "invalid-utf8":
        return raw.replace(b'"', b'"\xff\xfe', 1) if b'"' in raw else b"\xff" + raw
    if how == "truncated":
        return raw[: max(0, len(raw) // 2)]
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "nul":
        return raw.replace(b":", b":\x00", 1)
    return raw


ENCODINGS = ["plain", "plain", "plain", "ascii", "invalid-utf8", "truncated", "bom", "nul", "latin-1"]


# -- paths and queries ----------------------------------------------------------------------


def _segment(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


RAW_SEGMENTS = ["%FF", "%C3%28", "%ED%A0%80", "%00", "%2F", "..", ".", "%2e%2e", "a%", "%zz", "%E2%82"]
"""Percent-encodings that do not decode to UTF-8 text, or that mean more than a segment."""


def _path_value(name: str, world: World) -> st.SearchStrategy[str]:
    known: list[str] = {
        "projectId": [world.project],
        "location": list(world.locations),
        "jobId": list(world.job_ids) or ["2026-01-01_00_00_00-1"],
        "snapshotId": ["snap-1"],
        "stageId": ["stage-1", "F0"],
    }.get(name, [])
    good = st.sampled_from(known).map(_segment) if known else st.sampled_from(["projects/fuzz/locations/us-central1/x"])
    return st.one_of(good, good, good, nasty_text.map(_segment), st.sampled_from(RAW_SEGMENTS))


def _query_value(spec: dict[str, Any]) -> st.SearchStrategy[str]:
    kind, form = spec.get("type"), spec.get("format")
    if "enum" in spec:
        proper: st.SearchStrategy[str] = st.one_of(
            st.sampled_from(spec["enum"]), st.integers(-1, len(spec["enum"])).map(str), st.just("2.5")
        )
    elif kind == "integer":
        proper = st.one_of(st.integers(-5, 2000).map(str), st.just(str(2**70)))
    elif kind == "boolean":
        proper = st.sampled_from(["true", "false", "1", "yes"])
    elif form == "google-datetime":
        proper = st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z", "not a time"])
    else:
        proper = st.one_of(st.text(max_size=12), st.just("ZmFrZQ"))
    return st.one_of(proper, proper, nasty_text)


def requests(method: Method, world: World) -> st.SearchStrategy[Request]:
    """Requests for ``method``: its path filled in, some of its query parameters, a body if it takes one."""

    @st.composite
    def build(draw: st.DrawFn) -> Request:
        path = "/" + method.path
        for name in method.path_parameters:
            value = draw(_path_value(name, world))
            path = path.replace("{+" + name + "}", value).replace("{" + name + "}", value)
        pairs: list[str] = []
        for name in method.query_parameters:
            if draw(st.booleans()):
                pairs.append(f"{quote(name)}={_segment(draw(_query_value(method.parameters[name])))}")
        if draw(st.booleans()):
            pairs.append("%24alt=json%3Benum-encoding%3Dint")
        if draw(st.integers(0, 9)) == 0:
            pairs.append(f"{_segment(draw(nasty_text))}={draw(st.sampled_from(RAW_SEGMENTS))}")
        body = None
        headers = {"content-type": "application/json"}
        if method.request is not None:
            choice = draw(st.integers(0, 19))
            if choice == 0:
                body = b""
            elif choice == 1:
                body = draw(st.binary(max_size=64))
            else:
                body = encode(draw(body_for(method, world)), draw(st.sampled_from(ENCODINGS)))
        elif draw(st.integers(0, 9)) == 0:
            body = b'{"unexpected": "body"}'
        return Request(method.http_method, path, "&".join(pairs), body, headers)

    return build()

"""A job's graph: from a real Beam pipeline proto, from Dataflow steps, from Flink's plan; with progress."""

from __future__ import annotations

from datetime import UTC, datetime

import apache_beam as beam
import pytest
from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf import json_format

from tidegate.engines.beam_graph import pipeline_graph
from tidegate.engines.flink_cluster import job_graph
from tidegate.lifecycle import JobState, JobType
from tidegate.model import GraphEdge, GraphNode, Job, JobGraph, MetricValue, StageDetails
from tidegate.service.graphs import progress, steps_graph

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _job(state: JobState = JobState.JOB_STATE_RUNNING) -> Job:
    return Job(
        id="j", project_id="p", location="l", name="n", type=JobType.JOB_TYPE_BATCH, current_state=state,
        current_state_time=NOW, requested_state=JobState.JOB_STATE_RUNNING, create_time=NOW, start_time=NOW,
        spec=b"", labels={}, client_request_id="", replace_job_id="", replaced_by_job_id="",
        created_from_snapshot_id="", version=1,
    )  # fmt: skip


def test_a_beam_pipeline_is_drawn_by_its_top_level_transforms() -> None:
    pipeline = beam.Pipeline()
    numbers = pipeline | "Numbers" >> beam.Create([1, 2, 3])
    evens = numbers | "Evens" >> beam.Filter(lambda v: v % 2 == 0)
    odds = numbers | "Odds" >> beam.Filter(lambda v: v % 2 == 1)
    _ = (evens, odds) | "Merge" >> beam.Flatten() | "Format" >> beam.Map(str)
    graph = pipeline_graph(pipeline.to_runner_api().SerializeToString())
    assert graph.origin == "pipeline"
    names = {node.id: node.name for node in graph.nodes}
    assert sorted(names.values()) == ["Evens", "Format", "Merge", "Numbers", "Odds"]
    edges = {(names[e.source], names[e.target]) for e in graph.edges}
    assert edges == {
        ("Numbers", "Evens"),
        ("Numbers", "Odds"),
        ("Evens", "Merge"),
        ("Odds", "Merge"),
        ("Merge", "Format"),
    }
    numbers_node = next(n for n in graph.nodes if n.name == "Numbers")
    assert numbers_node.kind == "Composite" and "Numbers/Impulse" in numbers_node.steps
    assert numbers_node.outputs == ("Numbers/Map(decode).None",)  # as the Beam engine names its element count
    evens_node = next(n for n in graph.nodes if n.name == "Evens")
    assert evens_node.kind == "ParDo" and evens_node.steps == ("Evens",) and evens_node.outputs == ("Evens.None",)


def test_bytes_that_are_no_pipeline_are_refused() -> None:
    with pytest.raises(ValueError, match="not a Beam pipeline"):
        pipeline_graph(b"\xff\xff\xff not a proto")


def test_dataflow_steps_are_drawn_with_their_inputs() -> None:
    steps = [
        json_format.ParseDict(step, dataflow.Step.pb()())
        for step in (
            {
                "kind": "ParallelRead",
                "name": "s1",
                "properties": {"user_name": "Read", "output_info": [{"user_name": "Read.out"}]},
            },
            {
                "kind": "ParallelDo",
                "name": "s2",
                "properties": {"user_name": "Parse", "parallel_input": {"@type": "OutputReference", "step_name": "s1"}},
            },
            {
                "kind": "Flatten",
                "name": "s3",
                "properties": {
                    "user_name": "Join",
                    "inputs": [{"step_name": "s1"}, {"step_name": "s2"}, {"step_name": "nope"}],
                },
            },
        )
    ]
    graph = steps_graph(steps)
    assert [(n.id, n.name, n.kind) for n in graph.nodes] == [
        ("s1", "Read", "ParallelRead"),
        ("s2", "Parse", "ParallelDo"),
        ("s3", "Join", "Flatten"),
    ]
    assert graph.nodes[0].outputs == ("Read.out",)
    assert [(e.source, e.target) for e in graph.edges] == [("s1", "s2"), ("s1", "s3"), ("s2", "s3")]


def test_flinks_plan_is_drawn_by_vertex_with_its_chained_operators() -> None:
    details = {  # the shape of Flink's GET /jobs/:id (vertices, and the plan with each node's inputs)
        "vertices": [
            {"id": "v1", "name": "Source: numbers -> Map", "status": "RUNNING"},
            {"id": "v2", "name": "Window -> Sink: out", "status": "RUNNING"},
        ],
        "plan": {
            "jid": "f",
            "nodes": [
                {"id": "v1", "operator": "", "description": "Source: numbers<br/>-&gt; Map", "inputs": []},
                {
                    "id": "v2",
                    "operator": "",
                    "description": "Window",
                    "inputs": [{"num": 0, "id": "v1", "ship_strategy": "HASH"}],
                },
            ],
        },
    }
    graph = job_graph(details)
    assert graph.origin == "flink-plan"
    assert [(n.id, n.name, tuple(n.steps)) for n in graph.nodes] == [
        ("v1", "Source: numbers -> Map", ("Source: numbers", "Map")),
        ("v2", "Window -> Sink: out", ("Window", "Sink: out")),
    ]
    assert graph.edges == (GraphEdge("v1", "v2", "HASH"),)
    unnamed = job_graph({"plan": details["plan"]})  # no vertex names: the plan's description, without HTML
    assert unnamed.nodes[0].name == "Source: numbers -> Map"


def test_progress_counts_elements_and_takes_each_steps_state_from_its_stages() -> None:
    graph = JobGraph(
        origin="pipeline",
        nodes=(
            GraphNode("a", "Read", steps=("Read/Impulse", "Read/Map"), outputs=("Read/Map.None",)),
            GraphNode("b", "Parse", steps=("Parse",), outputs=("Parse.None",)),
            GraphNode("c", "Write", steps=("Write/Sink",)),
        ),
        edges=(GraphEdge("a", "b"), GraphEdge("b", "c")),
    )
    metrics = [
        MetricValue("ElementCount", "Read/Map", 10, "dataflow/v1b3", pcollection="Read/Map.None"),
        MetricValue("ElementCount", "Parse", 7, "dataflow/v1b3", pcollection="Parse.None"),
        MetricValue("parsed", "Parse", 7, "user", namespace="app"),
    ]
    stages = [
        StageDetails("S01", "EXECUTION_STATE_SUCCEEDED", steps=("Read/Impulse", "Read/Map")),
        StageDetails("S02", "EXECUTION_STATE_RUNNING", steps=("Parse", "Write/Sink")),
    ]
    view = progress(_job(), graph, metrics, stages)
    by_name = {s.node.name: s for s in view.steps}
    assert (by_name["Read"].state, by_name["Read"].elements_out, by_name["Read"].elements_in) == ("SUCCEEDED", 10, None)
    assert (by_name["Parse"].state, by_name["Parse"].elements_out, by_name["Parse"].elements_in) == ("RUNNING", 7, 10)
    assert [m.name for m in by_name["Parse"].counters] == ["parsed"]
    assert (by_name["Write"].elements_out, by_name["Write"].elements_in) == (None, 7)
    assert [e.elements for e in view.edges] == [10, 7]
    done = progress(_job(JobState.JOB_STATE_DONE), graph, metrics, [])
    assert {s.state for s in done.steps} == {"SUCCEEDED"}  # every step of a job that succeeded did
    assert {s.state for s in progress(_job(), graph, [], []).steps} == {""}  # no stage names them yet


def test_flink_operators_are_counted_by_the_last_operator_of_their_chain() -> None:
    graph = job_graph({"vertices": [{"id": "v1", "name": "Source: numbers -> Map"}]})
    metrics = [
        MetricValue("numRecordsOut", "Source__numbers", 50, "dataflow/v1b3"),
        MetricValue("numRecordsOut", "Map", 42, "dataflow/v1b3"),
    ]
    stages = [StageDetails("v1", "FINISHED", steps=("Source: numbers", "Map"))]
    (step,) = progress(_job(), graph, metrics, stages).steps
    assert (step.state, step.elements_out) == ("SUCCEEDED", 42)

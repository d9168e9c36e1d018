"""A Beam pipeline's graph, read from its runner-API proto (the ``pipeline.pb`` a Beam job brings).

The nodes are the pipeline's top-level transforms, the ones the user applied (a composite
such as ``Create`` or ``WriteToText`` is one node, as Dataflow's console draws it); the
edges are the PCollections between them. Each node names its leaf transforms (how stages
list it) and its output PCollections as the Beam engine's element counts name them
(``{producing leaf transform}.{tag}``, see ``beam_report.Names``).
"""

from __future__ import annotations

from typing import Any

from tidegate.model import GraphEdge, GraphNode, JobGraph

__all__ = ["pipeline_graph"]

_KINDS = {
    "beam:transform:pardo:v1": "ParDo",
    "beam:transform:group_by_key:v1": "GroupByKey",
    "beam:transform:combine_per_key:v1": "CombinePerKey",
    "beam:transform:combine_globally:v1": "CombineGlobally",
    "beam:transform:flatten:v1": "Flatten",
    "beam:transform:impulse:v1": "Impulse",
    "beam:transform:reshuffle:v1": "Reshuffle",
    "beam:transform:write_files:v1": "WriteFiles",
    "beam:transform:read:v1": "Read",
    "beam:transform:window_into:v1": "WindowInto",
}


def _kind(transform: Any) -> str:
    urn = transform.spec.urn
    if urn in _KINDS:
        return _KINDS[urn]
    if transform.subtransforms:
        return "Composite"
    return urn.split(":")[-2] if urn.count(":") >= 2 else (urn or "Transform")


def _top_level(proto: Any) -> list[str]:
    """The transforms the user applied: Beam wraps them in one unnamed root transform."""
    transforms = proto.components.transforms
    roots = list(proto.root_transform_ids)
    while len(roots) == 1 and transforms[roots[0]].subtransforms:
        root = transforms[roots[0]]
        if root.unique_name and not root.unique_name.startswith("ref_AppliedPTransform"):
            break
        roots = list(root.subtransforms)
    return roots


def _leaves(transforms: Any, tid: str) -> list[str]:
    transform = transforms[tid]
    if not transform.subtransforms:
        return [tid]
    return [leaf for sub in transform.subtransforms for leaf in _leaves(transforms, sub)]


def pipeline_graph(data: bytes) -> JobGraph:
    """The graph of a serialized ``beam_runner_api_pb2.Pipeline``; raises ``ValueError`` if it is not one."""
    from apache_beam.portability.api import beam_runner_api_pb2
    from google.protobuf.message import DecodeError

    proto = beam_runner_api_pb2.Pipeline()
    try:
        proto.ParseFromString(data)
    except DecodeError as error:
        raise ValueError(f"not a Beam pipeline: {error}") from error
    transforms = proto.components.transforms
    # Each PCollection, by the leaf transform that produces it: the name its element count carries.
    produced: dict[str, str] = {}
    for transform in transforms.values():
        if not transform.subtransforms:
            for tag, pid in transform.outputs.items():
                produced[pid] = f"{transform.unique_name}.{tag}"
    top = [tid for tid in _top_level(proto) if tid in transforms]
    writer: dict[str, str] = {}
    nodes: list[GraphNode] = []
    for tid in top:
        transform = transforms[tid]
        leaves = _leaves(transforms, tid)
        outputs = [pid for pid in transform.outputs.values() if pid in produced]
        for pid in outputs:
            writer[pid] = tid
        nodes.append(
            GraphNode(
                id=tid,
                name=transform.unique_name or tid,
                kind=_kind(transform),
                steps=tuple(transforms[leaf].unique_name for leaf in leaves),
                outputs=tuple(produced[pid] for pid in outputs),
            )
        )
    edges: list[GraphEdge] = []
    for tid in top:
        for pid in dict.fromkeys(transforms[tid].inputs.values()):
            source = writer.get(pid)
            if source is not None and source != tid:
                edges.append(GraphEdge(source=source, target=tid, collection=produced.get(pid, "")))
    return JobGraph(origin="pipeline", nodes=tuple(nodes), edges=tuple(edges))

"""Metrics for monitoring, in Prometheus' format: what every layer records, and what ``/metrics`` serves.

Low in the layers (it imports nothing of tidegate), so that every layer can record:

- the API adapters: requests and their latencies per API method (``tidegate_http_…`` by
  route template, never a raw path; ``tidegate_grpc_server_…`` by gRPC method);
- the service: job transitions and creates (``tidegate_job_transitions_total``, ``tidegate_job_creates_total``);
- the scheduler: its ticks (``tidegate_scheduler_tick_…``) and every call it makes of an
  engine (``tidegate_engine_call_…``);
- at scrape time, through ``register_scrape``: the jobs by state and engine, counted in the
  store (the same on every server of one database), and each engine's cluster health.

Counters and histograms are this process's own: Prometheus sums them over the servers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "ClusterHealth",
    "JobCount",
    "call_engine",
    "cluster_families",
    "engine_call",
    "exposition",
    "job_created",
    "job_transition",
    "jobs_family",
    "register_scrape",
    "scheduler_tick",
    "timed_grpc",
    "timed_http",
]

T = TypeVar("T")
# No ``…_created`` series beside every counter: the process's start time says it.
disable_created_metrics()  # type: ignore[no-untyped-call]
CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: an API call takes a millisecond or so, an engine's launch or savepoint seconds."""

_HTTP_REQUESTS = Counter(
    "tidegate_http_requests",
    "REST requests answered, by method, route template and status",
    ["method", "route", "status"],
)
_HTTP_LATENCY = Histogram(
    "tidegate_http_request_duration_seconds",
    "Time to answer a REST request, by method and route template",
    ["method", "route"],
    buckets=_LATENCY,
)
_GRPC_HANDLED = Counter(
    "tidegate_grpc_server_handled",
    "gRPC calls answered, by service, method and status code",
    ["grpc_service", "grpc_method", "grpc_code"],
)
_GRPC_LATENCY = Histogram(
    "tidegate_grpc_server_handling_seconds",
    "Time to answer a gRPC call, by service and method",
    ["grpc_service", "grpc_method"],
    buckets=_LATENCY,
)
_TRANSITIONS = Counter(
    "tidegate_job_transitions",
    "Job state changes this server made, by source and target state",
    ["from_state", "to_state"],
)
_CREATED = Counter("tidegate_job_creates", "Jobs this server created")
_ENGINE_LATENCY = Histogram(
    "tidegate_engine_call_duration_seconds",
    "Time of each call the scheduler makes of an engine, by engine and call",
    ["engine", "call"],
    buckets=_LATENCY,
)
_ENGINE_ERRORS = Counter(
    "tidegate_engine_call_errors", "Engine calls that raised, by engine and call", ["engine", "call"]
)
_TICK_DURATION = Histogram(
    "tidegate_scheduler_tick_duration_seconds", "Time of one scheduler tick (a pass over every job)", buckets=_LATENCY
)


_HTTP_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_GRPC_CHILDREN: dict[tuple[str, str], tuple[Any, Any]] = {}
"""The labelled series of each request kind, found once (``labels()`` costs microseconds a call)."""


def timed_http(method: str, route: str, status: int, seconds: float) -> None:
    """One REST request: ``route`` is the route's template (``/v1b3/projects/{project_id}/…``)."""
    key = (method, route, status)
    children = _HTTP_CHILDREN.get(key)
    if children is None:
        children = _HTTP_REQUESTS.labels(method, route, str(status)), _HTTP_LATENCY.labels(method, route)
        _HTTP_CHILDREN[key] = children
    children[0].inc()
    children[1].observe(seconds)


def timed_grpc(full_method: str, code: str, seconds: float) -> None:
    """One gRPC call: ``full_method`` as gRPC names it (``/google.dataflow.v1beta3.JobsV1Beta3/GetJob``)."""
    key = (full_method, code)
    children = _GRPC_CHILDREN.get(key)
    if children is None:
        service, _, method = full_method.lstrip("/").rpartition("/")
        children = _GRPC_HANDLED.labels(service, method, code), _GRPC_LATENCY.labels(service, method)
        _GRPC_CHILDREN[key] = children
    children[0].inc()
    children[1].observe(seconds)


def job_transition(from_state: str, to_state: str) -> None:
    _TRANSITIONS.labels(from_state, to_state).inc()


def job_created() -> None:
    _CREATED.inc()


@contextmanager
def engine_call(engine: str, call: str) -> Iterator[None]:
    """Time one call of an engine (and count it when it raises)."""
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        _ENGINE_ERRORS.labels(engine, call).inc()
        raise
    finally:
        _ENGINE_LATENCY.labels(engine, call).observe(time.perf_counter() - start)


def call_engine(engine: str, call: str, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, a call of an engine, timed as ``engine_call`` times it."""
    with engine_call(engine, call):
        return function(*args)


class _Ticks(Collector):
    """The scheduler's lag: how long past its interval the next tick is overdue (0 while it keeps time).

    Read at scrape time, so a loop stuck in a long tick (an engine that does not answer) shows
    a lag that grows.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: float | None = None
        self._running = False
        self._interval = 0.0

    def started(self, interval: float) -> None:
        with self._lock:
            self._started, self._running, self._interval = time.monotonic(), True, interval

    def ended(self) -> None:
        with self._lock:
            self._running = False

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            started, interval = self._started, self._interval
        if started is None:
            return
        lag = GaugeMetricFamily(
            "tidegate_scheduler_tick_lag_seconds",
            "How long past its interval the scheduler's next tick is overdue (0 while it keeps time)",
        )
        lag.add_metric([], max(0.0, time.monotonic() - started - interval))
        yield lag


_TICKS = _Ticks()
REGISTRY.register(_TICKS)


@contextmanager
def scheduler_tick(interval: float) -> Iterator[None]:
    """One scheduler tick, due every ``interval`` seconds."""
    _TICKS.started(interval)
    start = time.perf_counter()
    try:
        yield
    finally:
        _TICK_DURATION.observe(time.perf_counter() - start)
        _TICKS.ended()


@dataclass(frozen=True)
class JobCount:
    state: str
    engine: str
    """The engine the job runs (or ran) on; ``none`` before it has a run."""
    count: int


def jobs_family(counts: Iterable[JobCount]) -> Metric:
    family = GaugeMetricFamily(
        "tidegate_jobs",
        "Jobs in the database, by state and engine (the same on every server)",
        labels=["state", "engine"],
    )
    for count in counts:
        family.add_metric([count.state, count.engine], count.count)
    return family


@dataclass(frozen=True)
class ClusterHealth:
    """What an engine's cluster says of itself (a Flink cluster's ``/overview``)."""

    engine: str
    url: str
    up: bool
    taskmanagers: int = 0
    slots_total: int = 0
    slots_available: int = 0


def cluster_families(clusters: Iterable[ClusterHealth]) -> list[Metric]:
    up = GaugeMetricFamily(
        "tidegate_engine_cluster_up", "1 when the engine's cluster answers, else 0", labels=["engine", "url"]
    )
    managers = GaugeMetricFamily(
        "tidegate_engine_cluster_taskmanagers", "The cluster's task managers (workers)", labels=["engine", "url"]
    )
    slots = GaugeMetricFamily(
        "tidegate_engine_cluster_slots",
        "The cluster's task slots, total and available",
        labels=["engine", "url", "kind"],
    )
    for cluster in clusters:
        up.add_metric([cluster.engine, cluster.url], 1.0 if cluster.up else 0.0)
        if cluster.up:
            managers.add_metric([cluster.engine, cluster.url], cluster.taskmanagers)
            slots.add_metric([cluster.engine, cluster.url, "total"], cluster.slots_total)
            slots.add_metric([cluster.engine, cluster.url, "available"], cluster.slots_available)
    return [up, managers, slots]


class _Scrape(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


def register_scrape(collect: Callable[[], Iterable[Metric]]) -> Callable[[], None]:
    """Have ``collect()`` add metric families at every scrape; returns the function that stops it."""
    collector = _Scrape(collect)
    REGISTRY.register(collector)
    return lambda: REGISTRY.unregister(collector)


def exposition() -> bytes:
    """Every metric of this process, in Prometheus' text format (``CONTENT_TYPE``)."""
    return bytes(generate_latest(REGISTRY))

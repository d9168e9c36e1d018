"""What the metrics say of a Flink cluster (its recorded ``/overview``), of engine calls, and the JSON log's records."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tidegate import telemetry
from tidegate.engines.flink_cluster import FlinkRestClient
from tidegate.server import configure_logging

OVERVIEW = {  # Flink 1.20's GET /overview, as a local cluster with one task manager answers it
    "taskmanagers": 1,
    "slots-total": 4,
    "slots-available": 3,
    "jobs-running": 1,
    "jobs-finished": 0,
    "jobs-cancelled": 2,
    "jobs-failed": 0,
    "flink-version": "1.20.1",
    "flink-commit": "5d5e8b9",
}


class _Overview(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(OVERVIEW).encode() if self.path == "/overview" else b"{}"
        self.send_response(200 if self.path == "/overview" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def flink_overview() -> Iterator[str]:
    """An HTTP server answering ``/overview`` with a recorded Flink answer."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Overview)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _families(clusters: list[telemetry.ClusterHealth]) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in telemetry.cluster_families(clusters)}


def test_a_cluster_that_answers(flink_overview: str) -> None:
    client = FlinkRestClient(flink_overview)
    try:
        health = client.health("flink")
    finally:
        client.close()
    assert health == telemetry.ClusterHealth("flink", flink_overview, True, 1, 4, 3)
    families = _families([health])
    where = {"engine": "flink", "url": flink_overview}
    assert families["tidegate_engine_cluster_up"] == [(where, 1.0)]
    assert families["tidegate_engine_cluster_taskmanagers"] == [(where, 1.0)]
    assert families["tidegate_engine_cluster_slots"] == [
        ({**where, "kind": "total"}, 4.0),
        ({**where, "kind": "available"}, 3.0),
    ]


def test_a_cluster_that_does_not(flink_overview: str) -> None:
    client = FlinkRestClient(flink_overview + "/not-flink")  # answers 404
    try:
        health = client.health("flink")
    finally:
        client.close()
    assert not health.up
    assert _families([health])["tidegate_engine_cluster_up"] == [({"engine": "flink", "url": health.url}, 0.0)]


def _sample(name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(telemetry.exposition().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_engine_calls_are_timed_and_their_errors_counted() -> None:
    before = _sample("tidegate_engine_call_duration_seconds_count", engine="unit", call="poll")
    errors = _sample("tidegate_engine_call_errors_total", engine="unit", call="poll")
    assert telemetry.call_engine("unit", "poll", lambda x: x + 1, 1) == 2
    with pytest.raises(ValueError), telemetry.engine_call("unit", "poll"):
        raise ValueError("engine trouble")
    assert _sample("tidegate_engine_call_duration_seconds_count", engine="unit", call="poll") == before + 2
    assert _sample("tidegate_engine_call_errors_total", engine="unit", call="poll") == errors + 1


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers, root.level = handlers, level


def test_the_json_log_has_one_object_per_record_with_its_exception(root_logger: logging.Logger) -> None:
    configure_logging("json")
    [handler] = root_logger.handlers
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.setStream(out)
    log = logging.getLogger("tidegate.test")
    log.info("started %s", "well")
    try:
        raise RuntimeError("the store went away")
    except RuntimeError:
        log.exception("tick failed")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert {k: first[k] for k in ("level", "logger", "message")} == {
        "level": "INFO",
        "logger": "tidegate.test",
        "message": "started well",
    }
    assert second["level"] == "ERROR" and second["message"] == "tick failed"
    assert second["exception"].startswith("Traceback (most recent call last):")
    assert second["exception"].endswith("RuntimeError: the store went away")
    assert first["time"].endswith("+00:00")


def test_the_text_log_is_left_alone(root_logger: logging.Logger) -> None:
    handlers = list(root_logger.handlers)
    configure_logging("text")
    assert root_logger.handlers == handlers

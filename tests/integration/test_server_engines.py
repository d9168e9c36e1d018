"""The server's engines: built by name, closed at shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.config import Settings
from tidegate.engines.base import SavepointStopper
from tidegate.engines.flink import FlinkEngine
from tidegate.server import build_engines, close_engines


def test_the_flink_engine_uses_the_given_cluster_and_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, engines=("flink",), flink_rest_url="http://localhost:18081")
    engines = build_engines(settings.engines, settings)
    engine = engines["flink"]
    assert isinstance(engine, FlinkEngine) and isinstance(engine, SavepointStopper)
    assert engine.rest_url == "http://localhost:18081"
    assert engine.state_dir == (tmp_path / "flink").absolute()
    close_engines(engines)  # no local cluster to stop: nothing is started


def test_an_unknown_engine_stops_the_server() -> None:
    with pytest.raises(SystemExit, match="known: beam, flink"):
        build_engines(("spark",))

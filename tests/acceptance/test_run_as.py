"""``tidegate server --run-as USER``: jobs' code runs as another user, who reaches none of the server's state.

A real server (run as root, as this test suite is) with the Beam engine, each job a real
``tidegate run`` of a real pipeline whose steps look around them: the user they run as,
what of the server's they can read, what tidegate settings they see. The user is
``nobody``. It needs a Python it can run: this suite's own may live where only root can
read (a Python under root's home); then the test makes one, a virtual environment of a
system Python of the same version that reads the suite's packages.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import TIDEGATE, ServerProcess, clean_env
from .test_run_adoption import submit
from .test_run_command import CLIENT_PYTHON, SLOW_PIPELINE, history, jobs, tidegate_run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="starting processes as another user needs root"),
]

USER = "nobody"
SECRET = "tidegate-test-secret-7f3a"

PROBE = '''"""Writes what its step finds about itself into --found (a JSON file)."""
import argparse
import json
import os
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

parser = argparse.ArgumentParser()
parser.add_argument("--found")
parser.add_argument("--peek", action="append", default=[])
known, rest = parser.parse_known_args()


def probe(_):
    found = {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "groups": os.getgroups(),
        "tidegate_env": sorted(k for k in os.environ if k.startswith("TIDEGATE_")),
        "home": os.environ.get("HOME"),
        "peeks": {},
    }
    for path in known.peek:
        try:
            with open(path, "rb") as f:
                f.read(1)
            found["peeks"][path] = "read"
        except OSError as error:
            found["peeks"][path] = type(error).__name__
    with open(known.found, "w") as f:
        json.dump(found, f)
    return 0


with beam.Pipeline(options=PipelineOptions(rest)) as pipeline:
    pipeline | beam.Create([0]) | "Probe" >> beam.Map(probe)
'''

PLANT = '''"""Swaps its run's stderr for a link to a file only the server may read, then dies unreported."""
import json
import os
import signal
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

target = sys.argv[1]


def plant(_):
    pid = json.load(open("status.json"))["pid"]  # the pipeline process (the run's folder is the working one)
    os.remove("stderr.log")
    os.symlink(target, "stderr.log")
    os.kill(pid, signal.SIGKILL)
    return 0


with beam.Pipeline(options=PipelineOptions(sys.argv[2:])) as pipeline:
    pipeline | beam.Create([0]) | "Plant" >> beam.Map(plant)
'''


def _runs_as(python: Path | str, uid: int) -> bool:
    try:
        subprocess.run([str(python), "-c", "import apache_beam"], user=uid, cwd="/", check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def _open_to_all(path: Path) -> None:
    """Let anyone pass through ``path`` and its parents (what a user needs to reach a file inside)."""
    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if mode & 0o011 != 0o011:
            folder.chmod(mode | 0o011)


@pytest.fixture(scope="module")
def user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no user {USER} on this machine")


def _reachable(python: Path, uid: int, folder: Path) -> Path:
    """``python``, or a Python ``uid`` can run with the same packages: a virtual environment in ``folder``."""
    if _runs_as(python, uid):
        return python
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(f"python{version}", path="/usr/local/bin:/usr/bin:/bin")
    if system is None:
        pytest.fail(f"no Python {version} that {USER} can run, and {python} is out of its reach")
    paths = "import sysconfig, json; p = sysconfig.get_paths(); print(json.dumps([p['purelib'], p['platlib']]))"
    theirs = json.loads(subprocess.run([str(python), "-c", paths], check=True, capture_output=True).stdout)
    subprocess.run([system, "-m", "venv", "--without-pip", str(folder)], check=True)
    reachable = folder / "bin" / "python"
    site = Path(json.loads(subprocess.run([str(reachable), "-c", paths], check=True, capture_output=True).stdout)[0])
    (site / "tidegate-suite.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in dict.fromkeys(theirs))
    )
    subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
    _open_to_all(folder)
    assert _runs_as(reachable, uid), f"{USER} cannot run {reachable} with Beam"
    return reachable


@pytest.fixture(scope="module")
def pythons(user: pwd.struct_passwd) -> Iterator[tuple[Path, Path]]:
    """Pythons the user can run with this suite's packages (tidegate, Beam) and the Beam client's (Beam[gcp])."""
    folder = Path(tempfile.mkdtemp(prefix="tidegate-run-as-python-"))
    try:
        yield (
            _reachable(Path(sys.executable), user.pw_uid, folder / "worker"),
            _reachable(CLIENT_PYTHON, user.pw_uid, folder / "launcher"),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def shared(user: pwd.struct_passwd) -> Iterator[Path]:
    """A folder the job's user can write its findings into."""
    folder = Path(tempfile.mkdtemp(prefix="tidegate-run-as-"))
    folder.chmod(0o777)
    _open_to_all(folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def run_as_flags(pythons: tuple[Path, Path]) -> list[str]:
    worker, launcher = pythons
    return ["--run-as", USER, "--worker-python", str(worker), "--launcher-python", str(launcher)]


@pytest.fixture
def data_parent() -> Iterator[Path]:
    """A folder for data directories whose parents let the user through to their run folders.

    pytest's own temporary folders do not: a folder of its own under the system's temporary one.
    """
    parent = Path(tempfile.mkdtemp(prefix="tidegate-run-as-data-"))
    _open_to_all(parent)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def run_as_server(
    server_processes: Callable[..., ServerProcess], run_as_flags: list[str], data_parent: Path
) -> Iterator[ServerProcess]:
    server = server_processes(data_parent / "data", "", "beam", *run_as_flags)
    (server.data_dir / "secret.txt").write_text(SECRET)
    (server.data_dir / "secret.txt").chmod(0o600)
    yield server
    server.terminate()


def _wait_state(server: ServerProcess, project: str, job_id: str, states: set[str], timeout: float = 120) -> dict:
    url = f"{server.base}/v1b3/projects/{project}/locations/us-central1/jobs/{job_id}"
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(url, timeout=30).json()
        if job.get("currentState") in states or time.monotonic() > deadline:
            return dict(job)
        time.sleep(0.2)


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_a_pipeline_runs_as_the_user_and_reaches_none_of_the_servers_state(
    run_as_server: ServerProcess, shared: Path, tmp_path: Path, project: str, user: pwd.struct_passwd
) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    found = shared / "found.json"
    data = run_as_server.data_dir
    peeks = [data / "tidegate.db", data / "secret.txt", data / "worker-id", data / "staging"]
    done = tidegate_run(
        run_as_server,  # type: ignore[arg-type]  # only .base is used
        project,
        "--python",
        str(CLIENT_PYTHON),
        str(script),
        f"--found={found}",
        *(f"--peek={p}" for p in peeks),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    [job] = jobs(run_as_server, project)  # type: ignore[arg-type]
    assert history(run_as_server, project, job["id"])[-1] == "JOB_STATE_DONE"  # type: ignore[arg-type]
    seen = json.loads(found.read_text())
    assert (seen["uid"], seen["euid"]) == (user.pw_uid, user.pw_uid)
    assert 0 not in seen["groups"]
    assert seen["home"] == user.pw_dir
    assert seen["tidegate_env"] == []
    assert seen["peeks"] == {str(p): "PermissionError" for p in peeks}, seen
    assert found.stat().st_uid == user.pw_uid
    # What the server keeps stays the server's alone, with the runs' folders only passable.
    assert data.stat().st_mode & 0o777 == 0o711
    assert (data / "runs").stat().st_mode & 0o777 == 0o711
    assert (data / "tidegate.db").stat().st_mode & 0o077 == 0


def test_a_link_the_jobs_code_plants_is_not_followed_by_the_server(
    run_as_server: ServerProcess, tmp_path: Path, project: str
) -> None:
    script = tmp_path / "plant.py"
    script.write_text(PLANT)
    done = tidegate_run(
        run_as_server,  # type: ignore[arg-type]
        project,
        "--python",
        str(CLIENT_PYTHON),
        str(script),
        str(run_as_server.data_dir / "secret.txt"),
        cwd=tmp_path,
    )
    assert done.returncode != 0  # the job failed: its pipeline process was killed
    [job] = jobs(run_as_server, project)  # type: ignore[arg-type]
    ended = _wait_state(run_as_server, project, str(job["id"]), {"JOB_STATE_FAILED"})
    assert ended["currentState"] == "JOB_STATE_FAILED", ended
    url = f"{run_as_server.base}/v1b3/projects/{project}/locations/us-central1/jobs/{job['id']}/messages"
    messages = httpx.get(url, params={"minimumImportance": "JOB_MESSAGE_DEBUG"}, timeout=30).json()
    text = json.dumps(messages) + json.dumps(ended) + done.stdout + done.stderr
    assert "killed by SIGKILL" in text  # the death was seen and told, from what the server could read
    assert SECRET not in text


def test_a_cancel_stops_every_process_of_the_users_run(
    run_as_server: ServerProcess, tmp_path: Path, project: str, user: pwd.struct_passwd
) -> None:
    script = tmp_path / "slow.py"
    script.write_text(SLOW_PIPELINE)
    command = [str(TIDEGATE), "run", "--server", run_as_server.base, "--project", project]
    command += ["--python", str(CLIENT_PYTHON), str(script)]
    follower = subprocess.Popen(command, env=clean_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (listed := jobs(run_as_server, project)) and time.monotonic() < deadline:  # type: ignore[arg-type]
            time.sleep(0.2)
        [job] = listed
        job_id = str(job["id"])
        running = _wait_state(run_as_server, project, job_id, {"JOB_STATE_RUNNING"})
        assert running["currentState"] == "JOB_STATE_RUNNING", running
        workdir = run_as_server.data_dir / "runs" / job_id
        working = [pid for pid in _processes_of(user.pw_uid) if _works_in(pid, workdir)]
        assert working, "no process of the user works in the run's folder"
        url = f"{run_as_server.base}/v1b3/projects/{project}/locations/us-central1/jobs/{job_id}"
        httpx.put(url, json={"requestedState": "JOB_STATE_CANCELLED"}, timeout=30).raise_for_status()
        ended = _wait_state(run_as_server, project, job_id, {"JOB_STATE_CANCELLED"})
        assert ended["currentState"] == "JOB_STATE_CANCELLED", ended
        deadline = time.monotonic() + 10
        while (left := [pid for pid in working if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"processes of {USER} outlived the cancel: {left}"
    finally:
        follower.send_signal(signal.SIGINT)
        follower.communicate(timeout=60)


def _works_in(pid: int, folder: Path) -> bool:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(folder)
    except OSError:
        return False


FLEX_PROBE = '''"""A flex template's program that notes who runs it, at launch and in its step."""
import argparse
import json
import os

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

parser = argparse.ArgumentParser()
parser.add_argument("--found", required=True)
known, rest = parser.parse_known_args()
with open(known.found + ".launch", "w") as f:
    json.dump({"uid": os.getuid(), "tidegate_env": sorted(k for k in os.environ if k.startswith("TIDEGATE_"))}, f)


def probe(_):
    with open(known.found + ".run", "w") as f:
        json.dump({"uid": os.getuid()}, f)
    return 0


with beam.Pipeline(options=PipelineOptions(rest)) as pipeline:
    pipeline | beam.Create([0]) | "Probe" >> beam.Map(probe)
'''


def test_a_flex_templates_program_runs_as_the_user_at_launch_and_as_a_job(
    run_as_server: ServerProcess, shared: Path, tmp_path: Path, project: str, user: pwd.struct_passwd
) -> None:
    (tmp_path / "flex_probe.py").write_text(FLEX_PROBE)
    spec = tmp_path / "flex.json"
    metadata = {"name": "probe", "parameters": [{"name": "found", "label": "Found", "helpText": "where to write"}]}
    spec.write_text(
        json.dumps(
            {
                "metadata": metadata,
                "sdkInfo": {"language": "PYTHON"},
                "tidegate": {"engine": "beam", "program": "flex_probe.py"},
            }
        )
    )
    found = shared / "flex"
    url = f"{run_as_server.base}/v1b3/projects/{project}/locations/us-central1/flexTemplates:launch"
    body = {
        "launchParameter": {
            "jobName": "flex-probe",
            "containerSpecGcsPath": str(spec),
            "parameters": {"found": str(found)},
        }
    }
    response = httpx.post(url, json=body, timeout=240)
    assert response.status_code == 200, response.text
    job_id = response.json()["job"]["id"]
    ended = _wait_state(run_as_server, project, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"})
    assert ended["currentState"] == "JOB_STATE_DONE", ended
    launched = json.loads(Path(str(found) + ".launch").read_text())
    assert launched == {"uid": user.pw_uid, "tidegate_env": []}
    assert json.loads(Path(str(found) + ".run").read_text()) == {"uid": user.pw_uid}


def test_a_run_as_the_user_outlives_a_killed_server_and_its_restart_takes_it_back(
    server_processes: Callable[..., ServerProcess],
    run_as_flags: list[str],
    data_parent: Path,
    shared: Path,
    tmp_path: Path,
    project: str,
    user: pwd.struct_passwd,
) -> None:
    data_dir = data_parent / "data"
    first = server_processes(data_dir, "", "beam", *run_as_flags)
    output = shared / "out.txt"
    job_id = submit(CLIENT_PYTHON, first.base, project, tmp_path, output, seconds=10)
    assert _wait_state(first, project, job_id, {"JOB_STATE_RUNNING"})["currentState"] == "JOB_STATE_RUNNING"
    first.kill()
    again = server_processes(data_dir, "", "beam", *run_as_flags, port=first.port)
    ended = _wait_state(again, project, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"})
    assert ended["currentState"] == "JOB_STATE_DONE", ended
    assert sorted(int(x) for x in output.read_text().split()) == list(range(40))
    assert output.stat().st_uid == user.pw_uid
    url = f"{again.base}/v1b3/projects/{project}/locations/us-central1/jobs/{job_id}/messages"
    texts = [
        m.get("messageText", "") for m in httpx.get(url, params={"pageSize": 1000}, timeout=30).json()["jobMessages"]
    ]
    assert any("Taken back by server" in text for text in texts)
    again.terminate()


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--run-as", "tidegate-no-such-user"], "no such user"),
        (["--run-as", USER, "--worker-python", "/nonexistent/bin/python3"], "cannot run /nonexistent/bin/python3"),
    ],
)
def test_a_server_that_cannot_run_jobs_as_the_user_refuses_to_start(
    tmp_path: Path, flags: list[str], says: str
) -> None:
    command = [str(TIDEGATE), "server", "--port", "0", "--grpc-port", "0", "--job-port", "0"]
    command += ["--data-dir", str(tmp_path / "data"), *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean_env())
    assert done.returncode != 0
    assert says in done.stderr, done.stderr
    assert not (tmp_path / "data" / "tidegate.db").exists()  # refused before anything was made

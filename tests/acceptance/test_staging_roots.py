"""Staged files are read only from the server's staging roots, and its data directory is its user's alone.

A client names files in many places: a Beam job's ``pipelineUrl``, a classic template's
``gcsPath``, a flex template's spec, a Flink job's ``tidegate.program``. Outside the
staging roots (here: the data directory's staging folder, the system's temporary folder
and the test suite's folder, see ``staging_roots``) each is refused with one message,
whether or not the file exists, and nothing is created or copied.
"""

from __future__ import annotations

import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidegate.model import ListFilter

from .conftest import LOCATION, TIDEGATE, Server, ServerProcess, clean_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, start_server: Callable[..., Server]) -> Server:
    """A server whose one staging root is its data directory's staging folder."""
    return start_server(request.param, roots=[])


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """Paths outside the server's roots: some that exist (its own database too), some that do not."""
    folder = tmp_path_factory.mktemp("outside")
    (folder / "pipeline.pb").write_bytes(b"")
    (folder / "job.py").write_text("print('hello')\n")
    existing = ["/etc/shadow", "/etc/passwd", str(folder / "pipeline.pb"), str(folder / "job.py"), str(folder)]
    return existing, ["/etc/no-such-file", str(folder / "missing.pb"), str(folder / "missing" / "x.py")]


def _refusal(server: Server, method: str, path: str, body: dict[str, Any], url: str) -> str:
    before = server.snapshot()
    response = httpx.request(method, f"{server.base}{path}", json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["details"][0]["reason"] == "STAGED_FILE_NOT_ALLOWED", error
    assert server.snapshot() == before
    message: str = error["message"]
    return message.replace(url, "URL", 1)


def _pipeline_job(url: str) -> dict[str, Any]:
    return {"name": "staged", "environment": {"sdkPipelineOptions": {"options": {"pipelineUrl": url}}}}


def _flink_job(program: str) -> dict[str, Any]:
    options = {"tidegate": {"engine": "flink", "program": program}}
    return {"name": "flink", "type": "JOB_TYPE_STREAMING", "environment": {"sdkPipelineOptions": {"options": options}}}


def _cases(project: str) -> list[tuple[str, str, Callable[[str], dict[str, Any]]]]:
    located = f"/v1b3/projects/{project}/locations/{LOCATION}"
    return [
        ("POST", f"{located}/jobs", _pipeline_job),
        ("POST", f"{located}/jobs", lambda url: _pipeline_job(f"file://{url}")),
        ("POST", f"{located}/templates", lambda url: {"jobName": "t", "gcsPath": url}),
        ("POST", f"{located}/templates:launch?gcsPath={url_marker}", lambda url: {"jobName": "t"}),
        (
            "POST",
            f"{located}/flexTemplates:launch",
            lambda url: {"launchParameter": {"jobName": "t", "containerSpecGcsPath": url}},
        ),
    ]


url_marker = "{url}"


def test_files_outside_the_roots_are_refused_alike(
    server: Server, project: str, outside: tuple[list[str], list[str]]
) -> None:
    located = f"/v1b3/projects/{project}/locations/{LOCATION}"
    urls = [*outside[0], *outside[1]]
    for method, path, body in _cases(project):
        messages = set()
        for url in urls:
            messages.add(_refusal(server, method, path.replace(url_marker, url), body(url), url))
        assert len(messages) == 1, (path, messages)
    python = [url for url in urls if url.endswith(".py")]
    programs = {_refusal(server, "POST", f"{located}/jobs", _flink_job(p), p) for p in python}
    assert len(programs) == 1
    template = _refusal(server, "GET", f"{located}/templates:get?gcsPath=/etc/shadow", {}, "/etc/shadow")
    assert "staging roots" in template


def test_a_link_out_of_a_root_is_refused(server: Server, project: str) -> None:
    assert server.data_dir is not None
    link = server.data_dir / "staging" / f"{project}.pb"
    link.symlink_to("/etc/passwd")
    body = _pipeline_job(str(link))
    _refusal(server, "POST", f"/v1b3/projects/{project}/locations/{LOCATION}/jobs", body, str(link))
    dotted = f"{server.data_dir}/staging/../tidegate.db"  # the database is in the data directory, not a root
    _refusal(server, "POST", f"/v1b3/projects/{project}/locations/{LOCATION}/jobs", _pipeline_job(dotted), dotted)


def test_a_file_in_the_data_directorys_staging_folder_is_read(server: Server, project: str) -> None:
    assert server.data_dir is not None
    staged = server.data_dir / "staging" / f"{project}.pb"
    staged.write_bytes(b"")  # an empty pipeline: the job is created (an API-only server never runs it)
    response = httpx.post(
        f"{server.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs", json=_pipeline_job(str(staged)), timeout=60
    )
    assert response.status_code == 200, response.text
    assert server.store.get_artifact(response.json()["id"], "pipeline.pb") == b""
    roots = httpx.get(f"{server.base}/tidegate/v1/staging", timeout=60).json()["stagingRoots"]
    assert roots[0] == str((server.data_dir / "staging").resolve())


def _modes(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): stat.S_IMODE(path.lstat().st_mode) for path in folder.rglob("*")}


def test_the_data_directory_is_the_servers_users_alone(
    server_processes: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "runs" / "old").mkdir(parents=True)
    (data_dir / "runs" / "old" / "pipeline.pb").write_bytes(b"left by an older tidegate")
    (data_dir / "worker-id").write_text("old-worker\n")
    for path in [data_dir, data_dir / "runs", data_dir / "runs" / "old"]:
        path.chmod(0o755)
    (data_dir / "runs" / "old" / "pipeline.pb").chmod(0o644)
    (data_dir / "worker-id").chmod(0o664)
    process = server_processes(data_dir, "", "none")
    created = httpx.post(f"{process.base}/v1b3/projects/modes/locations/{LOCATION}/jobs", json={"name": "m"})
    assert created.status_code == 200, created.text
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    modes = _modes(data_dir)
    assert {"tidegate.db", "staging", "worker-id", "runs/old/pipeline.pb"} <= set(modes)
    loose = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
    assert not loose, loose
    assert modes["tidegate.db"] == 0o600 and modes["staging"] == 0o700


def test_the_command_line_stages_into_the_servers_staging_folder(server: Server, tmp_path: Path) -> None:
    """``tidegate run --engine flink`` copies a program from outside the roots into one (the server reads it there)."""
    program = tmp_path / "job.sql"
    program.write_text("SELECT 1;\n")
    command = [str(TIDEGATE), "run", "--engine", "flink", "--batch", "--server", server.base, "--project", "cli"]
    proc = subprocess.Popen(
        [*command, str(program)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while not (jobs := server.store.list_jobs("cli", LOCATION, ListFilter.ALL, 10, "", "").items):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "tidegate run created no job"
            time.sleep(0.1)
    finally:  # an API-only server never runs the job: tidegate run would follow it forever
        proc.terminate()
        proc.communicate(timeout=30)
    (job,) = jobs
    assert server.store.get_artifact(job.id, "program.sql") == b"SELECT 1;\n"

"""``tidegate run PIPELINE.py [ARGS]``: a pipeline script submitted to a real server and followed to its end.

The scripts are the acceptance pipelines (``beam_pipelines``) and small ones written by
the tests; they run with the Beam client environment (``scripts/setup-beam-client``): tidegate's own
environment has Beam without its Google Cloud extra, which DataflowRunner needs.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import mentioning

from .conftest import TIDEGATE, Server, clean_env, closed_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = Path(__file__).resolve().parent / "beam_pipelines"
CLIENT_PYTHON = ROOT / ".beam-client-venv" / "bin" / "python"
TEXT = "the quick brown fox\njumps over the lazy dog\nthe dog sleeps\n"
SLOW_PIPELINE = '''"""A pipeline that sleeps until it is cancelled; it waits for its result like most scripts."""
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def slow(value):
    time.sleep(600)
    return value


with beam.Pipeline(options=PipelineOptions(sys.argv[1:])) as pipeline:
    pipeline | beam.Create([1]) | "Sleep" >> beam.Map(slow)
'''


@pytest.fixture(scope="module")
def client_python() -> Path:
    subprocess.run(["bash", str(ROOT / "scripts" / "setup-beam-client")], check=True)
    return CLIENT_PYTHON


@pytest.fixture(scope="module")
def beam_server(start_server: Callable[..., Server]) -> Server:
    return start_server("sqlite", "beam")


def tidegate_run(
    server: Server, project: str, *args: str, timeout: float = 240, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(TIDEGATE), "run", "--server", server.base, "--project", project, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=clean_env(), cwd=cwd)


def jobs(server: Server, project: str) -> list[dict[str, object]]:
    listed = httpx.get(f"{server.base}/v1b3/projects/{project}/locations/us-central1/jobs", timeout=30).json()
    return list(listed.get("jobs", []))


def history(server: Server, project: str, job_id: object) -> list[str]:
    url = f"{server.base}/tidegate/v1/projects/{project}/locations/us-central1/jobs/{job_id}/history"
    return [h["toState"] for h in httpx.get(url, timeout=30).json()["stateHistory"]]


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("ERROR: (tidegate)")]
    assert len(lines) == 1, done.stderr[-4000:]
    return lines[0]


def test_a_word_count_is_submitted_and_followed_to_done(
    beam_server: Server, client_python: Path, tmp_path: Path, project: str
) -> None:
    source = tmp_path / "input.txt"
    source.write_text(TEXT)
    got = tmp_path / "counts.txt"
    script = str(PIPELINES / "wordcount.py")
    done = tidegate_run(
        beam_server, project, "--python", str(client_python), script, f"--input={source}", f"--output={got}"
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    [job] = jobs(beam_server, project)
    assert str(job["name"]).startswith("wordcount-")
    out = done.stdout
    assert f"tidegate: job {job['id']} created" in out
    assert f"tidegate: job {job['id']} is Done" in out
    assert "BASIC" in out and f"Job {job['id']} is now JOB_STATE_DONE" in out  # the job's messages, as they came
    assert out.index("created") < out.index("is Done")
    assert '"state": "DONE"' in out  # the script's own output passes through
    expected = collections.Counter(TEXT.split())
    assert sorted(got.read_text().splitlines()) == sorted(f"{w}: {n}" for w, n in expected.items())
    assert history(beam_server, project, job["id"])[-1] == "JOB_STATE_DONE"


PRINTING_PIPELINE = '''"""A pipeline whose steps print, as a user's debugging does."""
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions


def shout(value):
    print(f"tidegate-test printed {value}", flush=True)
    print(f"tidegate-test complained {value}", file=sys.stderr, flush=True)
    return value


with beam.Pipeline(options=PipelineOptions(sys.argv[1:])) as pipeline:
    pipeline | beam.Create(["a", "b", "c"]) | "Shout" >> beam.Map(shout)
'''


def all_logs(server: Server, project: str, job_id: object) -> tuple[list[dict[str, str]], bool]:
    """Every kept log line of the job, page by page (two lines a page), and whether the log is complete."""
    url = f"{server.base}/tidegate/v1/projects/{project}/locations/us-central1/jobs/{job_id}/logs"
    entries: list[dict[str, str]] = []
    offset = ""
    while True:
        page = httpx.get(url, params={"offset": offset, "pageSize": 2}, timeout=30).json()
        entries += page["entries"]
        if not page["entries"]:
            return entries, page["complete"]
        offset = page["nextOffset"]


def test_what_a_pipeline_prints_is_kept_with_the_job_page_by_page(
    beam_server: Server, client_python: Path, tmp_path: Path, project: str
) -> None:
    script = tmp_path / "printing.py"
    script.write_text(PRINTING_PIPELINE)
    done = tidegate_run(beam_server, project, "--python", str(client_python), str(script))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    [job] = jobs(beam_server, project)
    entries, complete = all_logs(beam_server, project, job["id"])
    assert complete
    printed = {(e["source"], e["text"]) for e in entries}
    for value in "abc":
        assert ("stdout", f"tidegate-test printed {value}") in printed, entries
        assert ("stderr", f"tidegate-test complained {value}") in printed, entries
    shown = subprocess.run(
        [str(TIDEGATE), "jobs", "logs", str(job["id"]), "--server", beam_server.base, "--project", project],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert shown.returncode == 0, shown.stderr
    assert {f"tidegate-test printed {v}" for v in "abc"} <= set(shown.stdout.splitlines())
    metrics = subprocess.run(
        [str(TIDEGATE), "jobs", "metrics", str(job["id"]), "--server", beam_server.base, "--project", project],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert metrics.returncode == 0 and metrics.stdout.splitlines()[0].split() == [
        "NAME",
        "STEP",
        "VALUE",
        "ORIGIN",
        "UPDATE_TIME",
    ]
    scraped = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(httpx.get(f"{beam_server.base}/metrics", timeout=30).text)
        for sample in family.samples
    }
    for call in ("launch", "poll", "messages", "logs"):  # the scheduler's calls of the engine, timed
        assert scraped[("tidegate_engine_call_duration_seconds_count", (("call", call), ("engine", "beam")))] >= 1
    assert scraped[("tidegate_jobs", (("engine", "beam"), ("state", "JOB_STATE_DONE")))] >= 1
    base = f"{beam_server.base}/tidegate/v1/projects/{project}/locations/us-central1/jobs"
    refused = httpx.get(f"{base}/{job['id']}/logs", params={"offset": "x"}, timeout=30)
    assert refused.status_code == 400 and "offset" in refused.json()["error"]["message"]
    missing = httpx.get(f"{base}/2026-no-such-job/logs", timeout=30)
    assert missing.status_code == 404


def test_relative_paths_mean_what_they_mean_where_tidegate_run_runs(
    beam_server: Server, client_python: Path, tmp_path: Path, project: str
) -> None:
    """As with a local run: the job reads and writes relative to the folder ``tidegate run`` ran in."""
    (tmp_path / "input.txt").write_text(TEXT)
    (tmp_path / "out").mkdir()
    script = str(PIPELINES / "wordcount.py")
    done = tidegate_run(
        beam_server,
        project,
        "--python",
        str(client_python),
        script,
        "--input=input.txt",
        "--output=out/counts.txt",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    expected = collections.Counter(TEXT.split())
    got = (tmp_path / "out" / "counts.txt").read_text()
    assert sorted(got.splitlines()) == sorted(f"{w}: {n}" for w, n in expected.items())
    assert f"Relative paths resolve against {tmp_path}" in done.stdout


def test_a_failing_pipeline_exits_1_with_the_error(
    beam_server: Server, client_python: Path, tmp_path: Path, project: str
) -> None:
    done = tidegate_run(beam_server, project, "--python", str(client_python), str(PIPELINES / "failing.py"))
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    [job] = jobs(beam_server, project)
    line = error_line(done)
    assert line.startswith(f"ERROR: (tidegate) job {job['id']} failed: ValueError: tidegate-test: the number three")
    assert f"tidegate: job {job['id']} is Failed" in done.stdout
    assert "ERROR" in done.stdout and "Traceback" in done.stdout  # the error message was shown as it came
    assert "more lines (tidegate jobs messages shows them)" in done.stdout  # long tracebacks are cut short


def test_ctrl_c_cancels_the_job_and_stops_the_script(
    beam_server: Server, client_python: Path, tmp_path: Path, project: str
) -> None:
    script = tmp_path / "sleepy.py"
    script.write_text(SLOW_PIPELINE)
    out = tmp_path / "out.txt"
    command = [str(TIDEGATE), "run", "--server", beam_server.base, "--project", project]
    command += ["--python", str(client_python), str(script)]
    with out.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.PIPE, text=True, env=clean_env())
        try:
            deadline = time.monotonic() + 120
            while " is Running" not in out.read_text():
                assert proc.poll() is None, out.read_text()
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1, stderr
    [job] = jobs(beam_server, project)
    assert f"job {job['id']} was cancelled (Ctrl-C)" in stderr
    assert f"cancelling job {job['id']}" in out.read_text()
    assert history(beam_server, project, job["id"])[-2:] == ["JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"]
    assert mentioning(script) == []


def test_a_refused_submission_exits_4_with_the_servers_reason(
    beam_server: Server, client_python: Path, tmp_path: Path, project: str
) -> None:
    script = str(PIPELINES / "failing.py")
    done = tidegate_run(beam_server, project, "--python", str(client_python), script, "--streaming")
    assert done.returncode == 4, done.stdout[-4000:] + done.stderr[-4000:]
    line = error_line(done)
    assert "the server refused the job: tidegate cannot run Beam streaming pipelines" in line
    assert "(HTTP 400)" in line
    assert jobs(beam_server, project) == []


def test_a_job_name_an_active_job_has_ends_with_one_line_and_exit_4(
    beam_server: Server, client_python: Path, tmp_path: Path, project: str
) -> None:
    url = f"{beam_server.base}/v1b3/projects/{project}/locations/us-central1/jobs"
    body = {"name": "taken", "requestedState": "JOB_STATE_STOPPED", "clientRequestId": "20260101000000000000-1234"}
    held = httpx.post(url, json=body, timeout=30).json()
    script = tmp_path / "slow.py"
    script.write_text(SLOW_PIPELINE)
    done = tidegate_run(beam_server, project, "--python", str(client_python), str(script), "--job_name=taken")
    assert done.returncode == 4, done.stdout[-4000:] + done.stderr[-4000:]
    line = error_line(done)  # DataflowRunner raised DataflowJobAlreadyExistsError: Beam's words, no traceback
    assert f"no job was created: There is already active job named taken with id: {held['id']}" in line
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    assert [job["id"] for job in jobs(beam_server, project)] == [held["id"]]
    assert history(beam_server, project, held["id"]) == ["JOB_STATE_STOPPED"]


def test_a_script_that_submits_nothing_is_an_error(beam_server: Server, tmp_path: Path, project: str) -> None:
    script = tmp_path / "nothing.py"
    script.write_text("print('no pipeline here')\n")
    done = tidegate_run(beam_server, project, "--python", sys.executable, str(script))
    assert done.returncode == 1
    assert "ended without submitting a job" in error_line(done)
    assert "no pipeline here" in done.stdout


def test_the_flink_engine_hook_reaches_the_server(beam_server: Server, tmp_path: Path, project: str) -> None:
    program = tmp_path / "program.py"
    program.write_text("print('a PyFlink program')\n")
    done = tidegate_run(beam_server, project, "--engine", "flink", str(program))
    assert done.returncode == 1  # this server runs Beam only: the job fails with the reason
    assert "this server has no 'flink' engine" in error_line(done)
    [job] = jobs(beam_server, project)
    assert job["clientRequestId"]  # its own: an answer with another job of the name would not carry it


def test_usage_and_unreachable_server(tmp_path: Path, project: str) -> None:
    missing = subprocess.run(
        [str(TIDEGATE), "run", str(tmp_path / "missing.py")], capture_output=True, text=True, env=clean_env()
    )
    assert missing.returncode == 2
    assert "no such pipeline file" in missing.stderr
    script = tmp_path / "p.py"
    script.write_text("")
    server = f"http://127.0.0.1:{closed_port()}"
    unreachable = subprocess.run(
        [str(TIDEGATE), "run", "--server", server, str(script)], capture_output=True, text=True, env=clean_env()
    )
    assert unreachable.returncode == 5
    assert "cannot reach the tidegate server" in unreachable.stderr


def test_a_python_without_the_dataflow_runner_is_named(beam_server: Server, tmp_path: Path, project: str) -> None:
    no_beam = tmp_path / "python"
    no_beam.write_text("#!/bin/sh\necho 'ImportError: no Beam here' >&2\nexit 1\n")
    no_beam.chmod(0o755)
    script = tmp_path / "pipeline.py"
    script.write_text("")
    done = tidegate_run(beam_server, project, "--python", str(no_beam), str(script))
    assert done.returncode == 2
    assert "cannot run Beam's DataflowRunner (it needs apache-beam[gcp])" in error_line(done)


def test_the_default_python_is_tidegates_own(beam_server: Server, project: str) -> None:
    """tidegate's environment can submit with DataflowRunner itself (it has google-cloud-storage, which it needs)."""
    done = tidegate_run(beam_server, project, str(PIPELINES / "failing.py"), "--streaming")
    assert f"running failing.py with {Path(sys.executable).parent}/python" in done.stdout
    assert done.returncode == 4, done.stdout[-4000:] + done.stderr[-4000:]  # the create reached the server
    assert "cannot run Beam streaming pipelines" in error_line(done)

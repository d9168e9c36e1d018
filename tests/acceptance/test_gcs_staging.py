"""``gs://`` through tidegate's GCS emulator: Beam's DataflowRunner staging, and jobs reading and writing GCS.

The server starts the emulator itself (``--gcs-emulator PORT``), reads the staged
``pipeline.pb`` from it, and hands ``STORAGE_EMULATOR_HOST`` to its jobs; the client
(``scripts/setup-beam-client``) is pointed at the same emulator, as a user would be.
``tidegate gcs-emulator`` runs on its own, with google-cloud-storage as its client.
"""

from __future__ import annotations

import collections
import json
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidegate.gcs_emulator import GcsEmulator, ensure_bucket

from .conftest import PIPELINES, TEXT, TIDEGATE, Server, clean_env, free_port

pytestmark = pytest.mark.slow

EXPECTED = sorted(f"{word}: {count}" for word, count in collections.Counter(TEXT.split()).items())
BUCKET = "tidegate-staging"
GCSIO_SCRIPT = """
import json
from google.cloud import storage
from apache_beam.io.gcp.gcsio import GcsIO

gcs = GcsIO(storage_client=storage.Client.create_anonymous_client())
payload = bytes(range(256)) * 4096
with gcs.open("gs://made/dir/big.bin", "wb") as f:  # Beam's resumable BlobWriter
    f.write(payload)
with gcs.open("gs://made/dir/small.txt", "wb") as f:
    f.write(b"hello")
with gcs.open("gs://made/dir/big.bin") as f:
    f.seek(1000)
    ranged = f.read(10) == payload[1000:1010]
listed = sorted([p, s] for p, s in gcs.list_files("gs://made/dir/"))
exists = [gcs.exists("gs://made/dir/small.txt"), gcs.exists("gs://made/none")]
gcs.copy("gs://made/dir/small.txt", "gs://made/copy.txt")
gcs.delete_batch(["gs://made/dir/small.txt"])
after = sorted(p for p, _ in gcs.list_files("gs://made/"))
bucket = gcs.get_bucket("made") is not None and gcs.get_bucket("nothere") is None
print(json.dumps({"bucket": bucket, "listed": listed, "range": ranged, "exists": exists, "after": after}))
"""


@pytest.fixture(scope="module")
def emulator_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gcs_server(start_server: Callable[..., Server], emulator_port: int) -> Server:
    return start_server("sqlite", "beam", "--gcs-emulator", str(emulator_port), "--gcs-bucket", BUCKET)


def emulator(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def objects(port: int, bucket: str, prefix: str = "") -> list[str]:
    listed = httpx.get(f"{emulator(port)}/storage/v1/b/{bucket}/o", params={"prefix": prefix}, timeout=30).json()
    return [item["name"] for item in listed.get("items", [])]


def read_object(port: int, bucket: str, name: str) -> str:
    response = httpx.get(f"{emulator(port)}/storage/v1/b/{bucket}/o/{name.replace('/', '%2F')}?alt=media", timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def run_wordcount(python: Path, port: int, *args: str) -> dict[str, Any]:
    env = clean_env() | {"STORAGE_EMULATOR_HOST": emulator(port)}
    done = subprocess.run(
        [str(python), str(PIPELINES / "wordcount.py"), *args], capture_output=True, text=True, timeout=240, env=env
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def dataflow_args(server: Server, project: str, temp_location: str) -> list[str]:
    return [
        "--runner=DataflowRunner",
        f"--dataflow_endpoint=http://localhost:{server.port}",
        "--no_auth",
        f"--project={project}",
        "--region=us-central1",
        f"--temp_location={temp_location}",
    ]


def test_dataflow_runner_stages_to_gs_and_the_word_count_is_done(
    gcs_server: Server, emulator_port: int, client_python: Path, tmp_path: Path, project: str
) -> None:
    source = tmp_path / "input.txt"
    source.write_text(TEXT)
    got = tmp_path / "counts.txt"
    args = dataflow_args(gcs_server, project, f"gs://{BUCKET}/{project}/tmp")
    result = run_wordcount(client_python, emulator_port, f"--input={source}", f"--output={got}", *args)
    assert result["state"] == "DONE"
    assert result["words"] == [12]
    assert sorted(got.read_text().splitlines()) == EXPECTED
    staged = [name for name in objects(emulator_port, BUCKET, f"{project}/tmp/") if name.endswith("/pipeline.pb")]
    assert len(staged) == 1  # gs:// staging goes to a folder of the job's own (a local one does not)
    url = f"{gcs_server.base}/v1b3/projects/{project}/locations/us-central1/jobs/{result['job_id']}"
    job = httpx.get(url, params={"view": "JOB_VIEW_ALL"}, timeout=30).json()
    assert job["currentState"] == "JOB_STATE_DONE"
    options = job["environment"]["sdkPipelineOptions"]["options"]
    assert options["pipelineUrl"] == f"gs://{BUCKET}/{staged[0]}"


def test_a_job_writes_gs_paths(
    gcs_server: Server, emulator_port: int, client_python: Path, tmp_path: Path, project: str
) -> None:
    """The job's processes inherit the server's STORAGE_EMULATOR_HOST.

    The input stays local: a ``gs://`` input makes the client look for Google credentials at
    construction, which Beam retries for about 16 s when there are none.
    """
    source = tmp_path / "input.txt"
    source.write_text(TEXT)
    args = dataflow_args(gcs_server, project, f"gs://{BUCKET}/{project}/tmp")
    output = f"gs://{BUCKET}/{project}/out/counts.txt"
    result = run_wordcount(client_python, emulator_port, f"--input={source}", f"--output={output}", *args)
    assert result["state"] == "DONE"
    assert sorted(read_object(emulator_port, BUCKET, f"{project}/out/counts.txt").splitlines()) == EXPECTED


def test_a_missing_emulator_is_a_clear_refusal(
    start_server: Callable[..., Server], client_python: Path, tmp_path: Path, project: str
) -> None:
    """A gs:// staging location on a server without an emulator: the create says why."""
    with GcsEmulator(port=0, buckets=[BUCKET]) as own:  # the client's emulator, unknown to the server
        plain = start_server("sqlite", "beam")
        env = clean_env() | {"STORAGE_EMULATOR_HOST": own.url}
        args = dataflow_args(plain, project, f"gs://{BUCKET}/tmp")
        command = [str(client_python), str(PIPELINES / "failing.py"), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert "tidegate reads gs:// paths from a GCS emulator" in done.stdout + done.stderr


def test_the_gcs_emulator_command_serves_beams_gcsio(client_python: Path, tmp_path: Path) -> None:
    data = tmp_path / "gcs"

    def start() -> tuple[subprocess.Popen[str], str]:
        command = [str(TIDEGATE), "gcs-emulator", "--port", "0", "--data-dir", str(data), "--bucket", "made"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=clean_env())
        assert proc.stdout is not None
        first = proc.stdout.readline()
        found = re.search(r"GCS emulator on (http://\S+)", first)
        assert found, first
        return proc, found.group(1)

    def stop(proc: subprocess.Popen[str]) -> int:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(15)
        finally:
            assert proc.stdout is not None
            proc.stdout.close()

    proc, url = start()
    try:
        env = clean_env() | {"STORAGE_EMULATOR_HOST": url}
        done = subprocess.run(
            [str(client_python), "-c", GCSIO_SCRIPT], capture_output=True, text=True, timeout=120, env=env
        )
        assert done.returncode == 0, done.stderr[-4000:]
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {
            "bucket": True,
            "listed": [["gs://made/dir/big.bin", 1048576], ["gs://made/dir/small.txt", 5]],
            "range": True,
            "exists": [True, False],
            "after": ["gs://made/copy.txt", "gs://made/dir/big.bin"],
        }
        assert ensure_bucket(url, "second", "p") is True
        assert ensure_bucket(url, "second", "p") is False
    finally:
        assert stop(proc) == 0
    proc, url = start()  # the data folder survives a restart
    try:
        response = httpx.get(f"{url}/storage/v1/b/made/o/copy.txt?alt=media", timeout=10)
        assert response.text == "hello"
        taken = subprocess.run(
            [str(TIDEGATE), "gcs-emulator", "--port", url.rsplit(":", 1)[1]],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=30,
        )
        assert taken.returncode == 1
        assert "cannot serve the GCS emulator" in taken.stderr
    finally:
        assert stop(proc) == 0

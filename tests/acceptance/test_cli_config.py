"""``tidegate config set|get|list|unset`` and where the other commands point: flag > env > config file > default."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import httpx
import pytest

from .conftest import LOCATION, TIDEGATE, Server, clean_env, closed_port

pytestmark = pytest.mark.slow


def tidegate(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**clean_env(), "TIDEGATE_CONFIG": str(config), **env}
    return subprocess.run([str(TIDEGATE), *args], capture_output=True, text=True, timeout=60, env=environment)


def test_set_get_list_unset(tmp_path: Path) -> None:
    config = tmp_path / "nested" / "config.toml"
    listed = tidegate(config, "config", "list", "--format", "json")
    assert listed.returncode == 0, listed
    assert json.loads(listed.stdout)["settings"] == {
        "server": {"value": "http://127.0.0.1:8080", "source": "default"},
        "project": {"value": "local", "source": "default"},
        "region": {"value": "us-central1", "source": "default"},
        "token": {"value": "", "source": "default"},
    }
    assert not config.exists()  # reading makes no file

    assert (
        tidegate(config, "config", "set", "server", "http://example.test:9000/").stdout
        == "Updated property [server].\n"
    )
    assert tidegate(config, "config", "set", "project", "my-project").returncode == 0
    assert tomllib.loads(config.read_text()) == {"server": "http://example.test:9000", "project": "my-project"}
    assert tidegate(config, "config", "get", "project").stdout == "my-project\n"
    assert tidegate(config, "config", "get", "region").stdout == "us-central1\n"
    got = tidegate(config, "config", "get", "project", "--format", "json", TIDEGATE_PROJECT="from-env")
    assert json.loads(got.stdout) == {"value": "from-env", "source": "TIDEGATE_PROJECT"}

    table = tidegate(config, "config", "list")
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows == [
        ["KEY", "VALUE", "SOURCE"],
        ["server", "http://example.test:9000", "config", "file"],
        ["project", "my-project", "config", "file"],
        ["region", "us-central1", "default"],
        ["token", "default"],  # none: an empty value
    ]
    assert str(config) in table.stderr

    assert tidegate(config, "config", "set", "token", "tgt_secret1234").returncode == 0
    shown = tidegate(config, "config", "get", "token").stdout
    assert shown == "********1234\n" and "secret" not in tidegate(config, "config", "list").stdout  # masked
    assert (config.stat().st_mode & 0o077) == 0  # a file with a secret in it: the user's alone
    assert tidegate(config, "config", "unset", "token").returncode == 0

    assert tidegate(config, "config", "unset", "project").stdout == "Unset property [project].\n"
    assert tomllib.loads(config.read_text()) == {"server": "http://example.test:9000"}
    assert tidegate(config, "config", "unset", "project").returncode == 0  # unset twice is fine


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["config", "set", "colour", "blue"], ["unknown setting", "server, project, region"]),
        (["config", "get", "colour"], ["unknown setting"]),
        (["config", "set", "server", "localhost:8080"], ["http:// or https://"]),
        (["config", "set", "project", " spaced "], ["project"]),
        (["config", "set", "server"], []),
        (["config"], []),
    ],
)
def test_bad_settings_are_exit_2_and_change_nothing(tmp_path: Path, args: list[str], words: list[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text('project = "kept"\n')
    done = tidegate(config, *args)
    assert done.returncode == 2, done
    assert done.stdout == "" and done.stderr.startswith("ERROR: (tidegate) ") and len(done.stderr.splitlines()) == 1
    for word in words:
        assert word in done.stderr
    assert config.read_text() == 'project = "kept"\n'


def test_a_broken_config_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("server = \n")
    done = tidegate(config, "jobs", "list")
    assert done.returncode == 2 and str(config) in done.stderr, done
    config.write_text('server = "nonsense"\n')
    done = tidegate(config, "jobs", "list")
    assert done.returncode == 2 and "config file" in done.stderr and "nonsense" in done.stderr, done


def test_commands_point_where_the_settings_say(server: Server, tmp_path: Path, project: str) -> None:
    """The flag wins over the environment, which wins over the config file, which wins over the default."""
    created = httpx.post(
        f"{server.base}/v1b3/projects/{project}/locations/{LOCATION}/jobs",
        json={"name": "pointed", "requestedState": "JOB_STATE_STOPPED"},
        timeout=30,
    ).json()
    config = tmp_path / "config.toml"
    nowhere = f"http://127.0.0.1:{closed_port()}"

    def ids(*args: str, **env: str) -> list[str]:
        done = tidegate(config, "jobs", "list", "--format", "json", *args, **env)
        assert done.returncode == 0, done
        return [job["id"] for job in json.loads(done.stdout)]

    unreachable = tidegate(config, "jobs", "list")  # the default server: nothing there
    assert unreachable.returncode == 5 and "127.0.0.1:8080" in unreachable.stderr, unreachable

    assert tidegate(config, "config", "set", "server", server.base).returncode == 0
    assert tidegate(config, "config", "set", "project", project).returncode == 0
    assert ids() == [created["id"]]  # the config file's server and project
    assert ids(TIDEGATE_PROJECT=f"{project}-other") == []  # the environment wins over the file
    assert ids("--project", project, TIDEGATE_PROJECT=f"{project}-other") == [created["id"]]  # the flag wins
    assert ids(TIDEGATE_REGION="europe-west1") == []
    assert tidegate(config, "config", "set", "region", "europe-west1").returncode == 0
    assert ids() == [] and ids("--region", LOCATION) == [created["id"]]
    far = tidegate(config, "jobs", "list", TIDEGATE_SERVER=nowhere)
    assert far.returncode == 5 and nowhere in far.stderr, far
    described = tidegate(config, "jobs", "describe", created["id"], "--region", LOCATION)
    assert described.returncode == 0 and f"id: {created['id']}" in described.stdout, described

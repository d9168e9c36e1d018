"""Reading staged files: only inside the staging roots, one refusal for everything else."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tidegate.errors import InvalidArgument
from tidegate.service.staging import Staging


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    (folder / "pipeline.pb").write_bytes(b"staged")
    return folder


def _readers(staging: Staging) -> list[Callable[[str], bytes | None]]:
    return [staging.read, staging.read_if_present]


@pytest.mark.parametrize("url", ["/tmp/pipeline\x00.pb", "file:///tmp/pipeline\x00.pb", "gs://bucket/a\x00b"])
def test_a_nul_in_a_staging_url_is_invalid_argument(url: str, root: Path) -> None:
    for read in _readers(Staging([root])):
        with pytest.raises(InvalidArgument, match="NUL"):
            read(url)


def test_files_in_a_root_are_read(root: Path) -> None:
    staging = Staging([root])
    for url in (str(root / "pipeline.pb"), f"file://{root}/pipeline.pb", f"{root}/sub/../pipeline.pb"):
        assert staging.read(url) == b"staged"
        assert staging.read_if_present(url) == b"staged"
    assert staging.read_if_present(str(root / "missing.pb")) is None
    with pytest.raises(InvalidArgument) as caught:
        staging.read(str(root / "missing.pb"))
    assert caught.value.reason == "STAGED_FILE_UNREADABLE"


def _refusal(staging: Staging, url: str) -> str:
    messages = set()
    for read in _readers(staging):
        with pytest.raises(InvalidArgument) as caught:
            read(url)
        assert caught.value.reason == "STAGED_FILE_NOT_ALLOWED"
        messages.add(caught.value.message.replace(f"file {url}:", "file URL:", 1))
    (message,) = messages
    return message


def test_a_path_outside_the_roots_is_refused_alike_whether_or_not_it_exists(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.pb"
    secret.write_bytes(b"not yours")
    (root / "link.pb").symlink_to(secret)
    (root / "dir-link").symlink_to(tmp_path)
    staging = Staging([root])
    urls = [
        str(secret),
        str(tmp_path / "missing.pb"),
        f"{root}/../secret.pb",
        f"{root}/../missing.pb",
        str(root / "link.pb"),
        str(root / "dir-link" / "secret.pb"),
        str(root / "dir-link" / "missing.pb"),
        f"file://{secret}",
        "/etc/shadow",
        "/etc/no-such-file",
        "/",
    ]
    assert len({_refusal(staging, url) for url in urls}) == 1


def test_no_root_reads_no_local_file(root: Path) -> None:
    _refusal(Staging(), str(root / "pipeline.pb"))


def test_a_root_named_through_a_link_is_its_target(root: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(root)
    staging = Staging([tmp_path / "alias"])
    assert staging.read(str(root / "pipeline.pb")) == b"staged"
    assert staging.read(str(tmp_path / "alias" / "pipeline.pb")) == b"staged"


def test_only_regular_files_are_read(root: Path) -> None:
    os.mkfifo(root / "fifo")  # opening it for reading would wait for a writer forever
    (root / "folder").mkdir()
    staging = Staging([root])
    for name in ("fifo", "folder"):
        with pytest.raises(InvalidArgument) as caught:
            staging.read(str(root / name))
        assert caught.value.reason == "STAGED_FILE_UNREADABLE"


@pytest.mark.parametrize("url", ["file://elsewhere/etc/passwd", "http://localhost/pipeline.pb", "s3://b/o"])
def test_other_schemes_and_hosts_are_refused(root: Path, url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        Staging([root]).read(url)
    assert caught.value.reason == "STAGED_FILE_UNREADABLE"
    assert "only local paths" in caught.value.message

"""The operating-system user that jobs' code runs as (``tidegate server --run-as USER``).

The server keeps its state (the database, credentials, staged files) owner-only; a job's
code would otherwise run with the server's rights over all of it. With ``--run-as``, the
processes that run a job's code (a Beam pipeline and its SDK workers, a flex template's
program) are started as that user, and only the job's own run folder is handed to it. The
server must be root to start processes as another user; what supervises a run (and keeps
its lease in the database) stays the server's.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["RunAs", "open_for_append", "open_untrusted"]


def open_untrusted(path: Path) -> BinaryIO:
    """``path`` opened to read, refusing what a run's user could plant there for the server to read.

    A run's user owns its folder: it could put a symbolic link to a file only the server may
    read, or a FIFO that blocks whoever opens it, in place of a file the server reads back.
    Neither is followed or waited on: ``OSError`` instead.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_for_append(path: Path) -> int:
    """A descriptor appending to ``path`` (created if missing), never through a symbolic link or into a FIFO."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    os.set_blocking(fd, True)
    return fd


@dataclass(frozen=True)
class RunAs:
    """A user to start processes as: its ids, supplementary groups and home."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    @classmethod
    def named(cls, name: str) -> RunAs:
        """The user called ``name`` (or with that numeric id); ``ValueError`` with what to do if there is none."""
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, OverflowError):
            raise ValueError(f"--run-as {name}: no such user on this machine") from None
        groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid))))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "uid": self.uid, "gid": self.gid, "groups": list(self.groups), "home": self.home}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> RunAs:
        return cls(str(value["name"]), int(value["uid"]), int(value["gid"]), tuple(value["groups"]), str(value["home"]))

    def popen_kwargs(self) -> dict[str, Any]:
        """What ``subprocess.Popen`` takes to start its process as this user."""
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}

    def become(self) -> None:
        """Drop this process's rights to this user's (groups first: after setuid they could not change)."""
        os.setgroups(list(self.groups))
        os.setgid(self.gid)
        os.setuid(self.uid)

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` with this user's ``HOME``, ``USER`` and ``LOGNAME``."""
        return {**env, "HOME": self.home, "USER": self.name, "LOGNAME": self.name}

    def give(self, *paths: Path) -> None:
        """Make these files and folders (which the server just made: nothing of the user's is walked) this user's."""
        for path in paths:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], *, stdin: int | None = None) -> int:
        """Fork and exec ``argv`` as this user (``stdin``: a descriptor to read from); the child's pid.

        What ``os.posix_spawn`` does, which cannot change the user.
        """
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child execs or exits at once
            try:
                if stdin is not None:
                    os.dup2(stdin, 0)
                self.become()
                os.execve(argv[0], list(argv), dict(env))
            except BaseException as error:
                os.write(2, f"tidegate: cannot start {argv[0]} as {self.name}: {error}\n".encode())
            finally:
                os._exit(127)
        return pid

    def check(self, python: str, module: str, env: Mapping[str, str]) -> None:
        """``RuntimeError`` with what to do unless this user can run ``python -c "import module"`` with ``env``."""
        if os.geteuid() != 0:
            raise RuntimeError(f"--run-as {self.name}: the server must run as root to start processes as another user")
        try:
            result = subprocess.run(
                [python, "-c", f"import {module}"],
                capture_output=True,
                timeout=60,
                cwd="/",
                env=self.environment(env),
                check=False,
                **self.popen_kwargs(),
            )
        except OSError as error:
            problem = str(error)
        else:
            if result.returncode == 0:
                return
            lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
            problem = lines[-1] if lines else f"exit status {result.returncode}"
        raise RuntimeError(
            f"--run-as {self.name}: that user cannot run {python} with tidegate ({problem}); install tidegate"
            " where that user can read it, or name a Python it can run with --worker-python"
        )

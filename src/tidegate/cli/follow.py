"""Following a job until it ends: its state changes and messages as they come, across server restarts.

Used by ``tidegate jobs follow`` and ``tidegate run``. Messages are read page by page with
``pageToken``; the last page is read again on the next poll (the token that led to it
still works), so late messages are never missed and, with their ids remembered, none is
shown twice. A server out of reach (stopped, restarting, killed) is asked again and
again, less often as it stays away, until it answers: the follower then goes on from
where it was, and what happened meanwhile is shown once.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

from tidegate.cli.client import EXIT_ERROR, Client, CliError, short_state
from tidegate.failures import root_cause

__all__ = [
    "POLL_SECONDS",
    "TERMINAL",
    "Follower",
    "Interrupts",
    "Patient",
    "failure_cause",
    "follow",
    "outcome",
    "say",
]

T = TypeVar("T")

POLL_SECONDS = 0.5
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
"""Waits between tries while the server is out of reach (the last one repeats)."""
MESSAGE_PAGE = 100
LONG_MESSAGE = 8
"""Messages of more lines are shown by their first and last lines (all of them with ``verbose``)."""
TERMINAL = frozenset(
    {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_UPDATED", "JOB_STATE_DRAINED"}
)


def failure_cause(errors: list[str]) -> str:
    """Why a job failed, from its error messages (oldest first): the root exception's line of the last one."""
    return root_cause(errors[-1]) if errors else "no error message"


@dataclass
class Interrupts:
    """Ctrl-C while following: the first asks for a cancel (when cancelling), the second stops following."""

    cancels: bool = True
    count: int = 0
    previous: Any = None

    def __enter__(self) -> Interrupts:
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count >= 2 or not self.cancels:
            raise KeyboardInterrupt


@dataclass
class Follower:
    """Shows one job's state changes and messages as they come."""

    client: Client
    path: str
    importance: str
    verbose: bool = False
    state: str = ""
    job: dict[str, Any] = field(default_factory=dict)
    _token: str = ""
    _seen: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def poll(self) -> dict[str, Any]:
        """One look: new messages, then the state (a state is shown after the messages that led to it)."""
        self.messages()
        job: dict[str, Any] = self.client.call("GET", self.path)
        state = str(job.get("currentState", ""))
        if state in TERMINAL:
            self.messages()  # a job's last messages are written with its last transition
        self.job = job
        if state != self.state:
            self.state = state
            say(f"job {job.get('id', '')} is {short_state(state)}")
        return job

    def messages(self) -> None:
        """Show the messages not shown yet, oldest first."""
        params: dict[str, Any] = {"minimumImportance": self.importance, "pageSize": MESSAGE_PAGE}
        while True:
            if self._token:
                params["pageToken"] = self._token
            page = self.client.call("GET", self.path + "/messages", params=params)
            for message in page.get("jobMessages", []):
                key = str(message.get("id", "")) or repr(sorted(message.items()))
                if key in self._seen:
                    continue
                self._seen.add(key)
                self._show(message)
            if not page.get("nextPageToken"):
                return
            self._token = page["nextPageToken"]

    def _show(self, message: dict[str, Any]) -> None:
        importance = str(message.get("messageImportance", "")).removeprefix("JOB_MESSAGE_")
        text = str(message.get("messageText", "")).rstrip()
        if importance == "ERROR":
            self.errors.append(text)
        first, _, rest = text.partition("\n")
        more = rest.splitlines()
        if len(more) > LONG_MESSAGE and not self.verbose:  # a traceback: its first and root-cause lines say it
            more = [f"… {len(more)} more lines (tidegate jobs messages shows them) …", f"=> {root_cause(text)}"]
        lines = [f"{message.get('time', '')}  {importance:<8}  {first}", *(f"    {line}" for line in more)]
        print("\n".join(lines), flush=True)


def say(text: str) -> None:
    """One line of tidegate's own, told apart from the job's messages and the script's output."""
    print(f"tidegate: {text}", flush=True)


@dataclass
class Patient:
    """Calls that wait out a server out of reach: retried, less often as it stays away, until it answers.

    The first failure and the return are each told once (``say``); Ctrl-C stops the wait.
    """

    client: Client
    what: str
    away: bool = False
    tries: int = 0

    def __call__(self, call: Callable[[], T]) -> T:
        while True:
            try:
                result = call()
            except CliError as error:
                if not error.passing:
                    raise
                if not self.away:
                    self.away = True
                    say(f"lost the server ({' '.join(str(error).split())}); retrying until it is back (Ctrl-C stops)")
                time.sleep(RETRY_SECONDS[min(self.tries, len(RETRY_SECONDS) - 1)])
                self.tries += 1
                continue
            if self.away:
                self.away, self.tries = False, 0
                say(f"the server at {self.client.server} answers again; following {self.what} on")
            return result


def follow(follower: Follower, interrupts: Interrupts, job_id: str, *, cancel_path: str = "") -> dict[str, Any]:
    """Follow until the job ends; a Ctrl-C asks for a cancel once (with ``cancel_path``).

    A server out of reach is retried until it answers again (Ctrl-C stops following).
    """
    cancelled = False
    patient = Patient(follower.client, f"job {job_id}")
    while True:
        job = patient(follower.poll)
        if job.get("currentState") in TERMINAL:
            return job
        if interrupts.count and cancel_path and not cancelled:
            cancelled = True
            say(f"cancelling job {job_id} (Ctrl-C again to stop following; the job goes on)")
            with contextlib.suppress(CliError):  # it may have ended meanwhile: the next poll tells
                follower.client.call("PUT", cancel_path, body={"requestedState": "JOB_STATE_CANCELLED"})
        time.sleep(POLL_SECONDS)


def outcome(job: dict[str, Any], follower: Follower, interrupted: bool) -> int:
    """0 for a job that ended well; otherwise ``CliError`` with a one-line reason (a failure's root cause).

    Ending well: DONE; DRAINED (a streaming job stopped as asked, its in-flight data
    written); UPDATED (replaced by a job that carries its state on).
    """
    state = str(job.get("currentState", ""))
    job_id = job.get("id", "")
    if state == "JOB_STATE_UPDATED" and job.get("replacedByJobId"):
        say(
            f"job {job_id} was replaced by job {job['replacedByJobId']} (tidegate jobs follow {job['replacedByJobId']})"
        )
    if state in ("JOB_STATE_DONE", "JOB_STATE_DRAINED", "JOB_STATE_UPDATED"):
        return 0
    if state == "JOB_STATE_FAILED":
        raise CliError(f"job {job_id} failed: {failure_cause(follower.errors)}", EXIT_ERROR)
    if state == "JOB_STATE_CANCELLED":
        raise CliError(f"job {job_id} was cancelled{' (Ctrl-C)' if interrupted else ''}", EXIT_ERROR)
    raise CliError(f"job {job_id} ended {short_state(state)}", EXIT_ERROR)

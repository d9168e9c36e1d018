"""Following a job as it runs: its state changes and messages as they come; Ctrl-C cancels it.

Used by ``tidegate run``. Messages are read page by page with ``pageToken``; the last page
is read again on the next poll (the token that led to it still works), so late messages
are never missed and, with their ids remembered, none is shown twice.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from tidegate.cli.client import EXIT_ERROR, Client, CliError, short_state

__all__ = ["POLL_SECONDS", "TERMINAL", "Follower", "Interrupts", "follow", "last_line", "outcome", "say"]

POLL_SECONDS = 0.5
MESSAGE_PAGE = 100
LONG_MESSAGE = 8
"""Messages of more lines are shown by their first and last lines (all of them with ``verbose``)."""
TERMINAL = frozenset(
    {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_UPDATED", "JOB_STATE_DRAINED"}
)


def last_line(text: str) -> str:
    """The last non-blank line (of a traceback: the exception)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@dataclass
class Interrupts:
    """Ctrl-C while following: the first asks for a cancel, the second stops following."""

    count: int = 0
    previous: Any = None

    def __enter__(self) -> Interrupts:
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count >= 2:
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
        self.job = self.client.call("GET", self.path)
        state = str(self.job.get("currentState", ""))
        if state != self.state:
            self.state = state
            say(f"job {self.job.get('id', '')} is {short_state(state)}")
        if state in TERMINAL:
            self.messages()  # a job's last messages are written with its last transition
        return self.job

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
        if len(more) > LONG_MESSAGE and not self.verbose:  # a traceback: its first and last lines say it
            more = [f"… {len(more) - 1} more lines (tidegate jobs messages shows them) …", more[-1]]
        lines = [f"{message.get('time', '')}  {importance:<8}  {first}", *(f"    {line}" for line in more)]
        print("\n".join(lines), flush=True)


def say(text: str) -> None:
    """One line of tidegate's own, told apart from the job's messages and the script's output."""
    print(f"tidegate: {text}", flush=True)


def follow(follower: Follower, interrupts: Interrupts, job_id: str, *, cancel_path: str) -> dict[str, Any]:
    """Follow until the job ends; a Ctrl-C asks for a cancel once."""
    cancelled = False
    while True:
        job = follower.poll()
        if job.get("currentState") in TERMINAL:
            return job
        if interrupts.count and not cancelled:
            cancelled = True
            say(f"cancelling job {job_id} (Ctrl-C again to stop following; the job goes on)")
            with contextlib.suppress(CliError):  # it may have ended meanwhile: the next poll tells
                follower.client.call("PUT", cancel_path, body={"requestedState": "JOB_STATE_CANCELLED"})
        time.sleep(POLL_SECONDS)


def outcome(job: dict[str, Any], follower: Follower, interrupted: bool) -> int:
    """0 for a job that ended well; otherwise ``CliError`` with a one-line reason (a failure's last error line).

    Ending well: DONE; DRAINED (a streaming job stopped as asked, its in-flight data
    written); UPDATED (replaced by a job that carries its state on).
    """
    state = str(job.get("currentState", ""))
    job_id = job.get("id", "")
    if state in ("JOB_STATE_DONE", "JOB_STATE_DRAINED", "JOB_STATE_UPDATED"):
        return 0
    if state == "JOB_STATE_FAILED":
        reason = last_line(follower.errors[-1]) if follower.errors else "no error message"
        raise CliError(f"job {job_id} failed: {reason}", EXIT_ERROR)
    if state == "JOB_STATE_CANCELLED":
        raise CliError(f"job {job_id} was cancelled{' (Ctrl-C)' if interrupted else ''}", EXIT_ERROR)
    raise CliError(f"job {job_id} ended {short_state(state)}", EXIT_ERROR)

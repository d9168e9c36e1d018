"""SQL for SQLite and PostgreSQL.

Every change to a job is one transaction: the row is read (locked in PostgreSQL,
under ``BEGIN IMMEDIATE`` in SQLite), a pure decision is made from it, and the row,
its state-history row and its job message are written together. Two racing requests
therefore never both win: the second one is decided on the first one's result.
"""

from __future__ import annotations

import base64
import enum
import functools
import json
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from tidegate.errors import FailedPrecondition, InvalidArgument, NotFound, TidegateError
from tidegate.lifecycle import TERMINAL_STATES, Actor, JobState, JobType, is_legal
from tidegate.model import (
    NO_RUNTIME_PARAMS,
    AutoscalingEvent,
    Job,
    JobMessage,
    ListFilter,
    MessageImportance,
    NewJob,
    Page,
    RuntimeParams,
    StateChange,
)
from tidegate.store.autoscaling import Autoscaling
from tidegate.store.credentials import Credentials
from tidegate.store.db import from_micros, micros, time_range
from tidegate.store.logs import Logs
from tidegate.store.runs import Runs
from tidegate.store.seen import SeenJobs
from tidegate.store.snapshots import Snapshots

__all__ = ["Change", "CreateOutcome", "Store"]

_TERMINAL = ", ".join(str(int(s)) for s in sorted(TERMINAL_STATES))
_IS_ACTIVE = f"current_state NOT IN ({_TERMINAL})"
_NAMED_ACTIVE = f"project_id = %s AND location = %s AND name = %s AND {_IS_ACTIVE}"
"""The active jobs of one name in a project and location: the name's owners."""
_NAME_RACES = 3
"""How many times a create tries again when the active job that held its name ends meanwhile."""
_IS_TERMINATED = f"current_state IN ({_TERMINAL})"
_JOB_COLUMNS = (
    "id, project_id, location, name, job_type, current_state, current_state_time, requested_state,"
    " create_time, start_time, spec, labels, client_request_id, replace_job_id, replaced_by_job_id,"
    " created_from_snapshot_id, version, runtime_params"
)
_SELECT = _JOB_COLUMNS + ", seq"
_SEQ = 18  # where _SELECT has the seq


_HISTORY_INSERT = "INSERT INTO job_state_history (job_id, source_state, target_state, actor, time, reason, caller)"
_MESSAGE_INSERT = "INSERT INTO job_messages (job_id, time, importance, text)"


def _history_row(
    job_id: str, t: int, source: JobState | None, target: JobState, actor: Actor, reason: str, caller: str
) -> tuple[Any, ...]:
    return (job_id, None if source is None else int(source), int(target), actor.value, t, _printable(reason), caller)


def _message_row(job_id: str, t: int, importance: MessageImportance, text: str) -> tuple[Any, ...]:
    return (job_id, t, int(importance), _printable(text))


def _printable(text: str) -> str:
    """What a job's code printed, as a text field keeps it: a NUL (which no text field takes) as U+FFFD."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class CreateOutcome(enum.Enum):
    """What a create did: made the job, or answered one that was there (and wrote nothing)."""

    CREATED = "created"
    REPEATED = "repeated"
    """The create repeats an earlier one (same name and ``clientRequestId``): that job."""
    NAME_TAKEN = "name taken"
    """Another active job has the name: that job, which carries its own ``clientRequestId``."""
    ALREADY_UPDATED = "already updated"
    """``replaceJobId`` names a job that is UPDATED: the job that replaced it."""


@dataclass(frozen=True)
class Change:
    """What to do to a job, decided from the job as it is now.

    ``target`` is a new state, taken by ``actor`` along a legal edge only. Any field
    left ``None`` stays as it is. ``message`` is written as a job message with the
    change; a state change without one gets a message naming the new state.
    """

    target: JobState | None = None
    actor: Actor = Actor.SERVICE
    reason: str = ""
    requested: JobState | None = None
    labels: Mapping[str, str] | None = None
    replaced_by_job_id: str | None = None
    message: tuple[MessageImportance, str] | None = None
    caller: str = ""
    """Who asked for the change (recorded with its state-history row)."""
    runtime_params: RuntimeParams | None = None
    autoscaling: AutoscalingEvent | None = None
    """An autoscaling event written with the change (its ``time`` is the change's)."""


def _token(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


# The shapes a page token may take for each listing: a kind, then that many int64 keys.
_TOKEN_SHAPES: dict[ListFilter | str, set[tuple[str, int]]] = {
    ListFilter.UNKNOWN: {("u", 1)},
    ListFilter.ACTIVE: {("a", 1)},
    ListFilter.ALL: {("a", 1), ("t", 0), ("t", 2)},
    ListFilter.TERMINATED: {("t", 2)},
    "messages": {("m", 1)},
}


def _untoken(token: str, listing: ListFilter | str) -> tuple[str, list[int]]:
    """A page token's kind and keys, if it is one this listing hands out; else INVALID_ARGUMENT."""
    invalid = InvalidArgument(f"invalid page token {token!r} for this listing", reason="INVALID_PAGE_TOKEN")
    try:
        parts = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError as exc:
        raise invalid from exc
    if not isinstance(parts, list) or not parts or not isinstance(parts[0], str):
        raise invalid
    kind, keys = parts[0], parts[1:]
    if (kind, len(keys)) not in _TOKEN_SHAPES[listing]:
        raise invalid
    if not all(type(k) is int and 0 <= k < 2**63 for k in keys):
        raise invalid
    return kind, keys


_STATES = {int(s): s for s in JobState}
_TYPES = {int(t): t for t in JobType}


@functools.lru_cache(maxsize=4096)
def _parsed_labels(text: str) -> Mapping[str, str]:
    return MappingProxyType(json.loads(text))


def _labels(text: str) -> Mapping[str, str]:
    """A job's labels from their JSON (the same few label sets come back again and again: parsed once)."""
    return _parsed_labels(text) if text != "{}" else _NO_LABELS


_NO_LABELS: Mapping[str, str] = MappingProxyType({})


@functools.lru_cache(maxsize=1024)
def _runtime_params(text: str) -> RuntimeParams:
    return RuntimeParams.from_json(json.loads(text)) if text != "{}" else NO_RUNTIME_PARAMS


def _found(row: Sequence[Any] | None, job_id: str, project_id: str | None) -> Sequence[Any]:
    """The job's row, or ``NotFound`` when there is none (in ``project_id``, when one is named)."""
    if row is None or (project_id is not None and row[1] != project_id):
        where = f" in project {project_id}" if project_id is not None else ""
        raise NotFound(f"No job with id {job_id}{where}", reason="JOB_NOT_FOUND")
    return row


def _job(row: Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        project_id=row[1],
        location=row[2],
        name=row[3],
        type=_TYPES[row[4]],
        current_state=_STATES[row[5]],
        current_state_time=from_micros(row[6]),
        requested_state=_STATES[row[7]],
        create_time=from_micros(row[8]),
        start_time=from_micros(row[9]),
        spec=bytes(row[10]),
        labels=_labels(row[11]),
        client_request_id=row[12],
        replace_job_id=row[13],
        replaced_by_job_id=row[14],
        created_from_snapshot_id=row[15],
        version=row[16],
        runtime_params=_runtime_params(row[17]),
    )


class Store(Runs, Snapshots, Logs, Credentials, Autoscaling):
    """Jobs, their histories, messages, logs, engine runs, snapshots and credentials in SQLite or PostgreSQL."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._seen = SeenJobs()
        """The jobs last seen committed, which a change first decides on and a read confirms (``store.seen``)."""

    # -- jobs --------------------------------------------------------------------

    def create_job(self, new: NewJob, job_id: str, now: datetime, hold_reason: str = "") -> tuple[Job, CreateOutcome]:
        """Insert a job in STOPPED; or answer the job that is there, as Dataflow does.

        Returns the job and what the create did. A create whose ``client_request_id``
        and name match an existing job answers that job (REPEATED); a different create
        with the name of an active job answers that active job (NAME_TAKEN), which
        carries its own ``client_request_id``, and writes nothing. Two racing creates of
        one name: the unique index lets one in; the other is decided again after it,
        and so answers that job.
        """
        try:
            return self._create_job(new, job_id, now, hold_reason)
        except Exception as error:
            if not self._is_unique_violation(error):
                raise
            return self._create_job(new, job_id, now, hold_reason)

    def _is_unique_violation(self, error: Exception) -> bool:
        if isinstance(error, sqlite3.IntegrityError):
            return True
        if self.dialect == "postgresql":
            import psycopg

            return isinstance(error, psycopg.errors.UniqueViolation)
        return False

    def _create_job(self, new: NewJob, job_id: str, now: datetime, hold_reason: str) -> tuple[Job, CreateOutcome]:
        with self._transaction():
            repeated = self.repeated_job(new)
            if repeated is not None:
                return repeated, CreateOutcome.REPEATED
            t = micros(now)
            by = f" by {new.caller}" if new.caller else ""
            text = f"Job {job_id} created{by}" + (f"; {hold_reason}" if hold_reason else "")
            named = (new.project_id, new.location, new.name, new.replace_job_id)
            for _ in range(_NAME_RACES):
                # One statement: the row goes in only while no other active job has the name (an update's
                # replacement takes the name of the job it replaces, and only of that one). The unique index
                # still decides two creates that race; this covers the active replacements it leaves out.
                inserted = self._write_with_records(
                    f"INSERT INTO jobs ({_JOB_COLUMNS}) SELECT"
                    " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
                    f" WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE {_NAMED_ACTIVE} AND id != %s)"
                    f" RETURNING {_JOB_COLUMNS}",
                    (
                        job_id,
                        new.project_id,
                        new.location,
                        new.name,
                        int(new.type),
                        int(JobState.JOB_STATE_STOPPED),
                        t,
                        int(new.requested_state),
                        t,
                        t,
                        new.spec,
                        json.dumps(dict(new.labels), sort_keys=True),
                        new.client_request_id,
                        new.replace_job_id,
                        "",
                        new.created_from_snapshot_id,
                        1,
                        "{}",
                        *named,
                    ),
                    job_id,
                    t,
                    (None, JobState.JOB_STATE_STOPPED, Actor.SERVICE, "created", new.caller),
                    (MessageImportance.JOB_MESSAGE_BASIC, text),
                )
                if inserted:
                    break
                row = self._execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {_NAMED_ACTIVE} AND id != %s ORDER BY seq LIMIT 1", named
                ).fetchone()
                if row is not None:  # the name is an active job's: answer it
                    return _job(row), CreateOutcome.NAME_TAKEN
                # The job that had the name ended between the two statements: try again.
            else:
                raise FailedPrecondition(
                    f"The active jobs named {new.name} kept changing while job {job_id} was created; try again",
                    reason="CONCURRENT_CHANGE",
                )
            for name, data in new.artifacts.items():
                self._execute(
                    "INSERT INTO job_artifacts (job_id, name, data) VALUES (%s, %s, %s)", (job_id, name, data)
                )
            job = self._saw(_job(inserted[0]))
        return job, CreateOutcome.CREATED

    def repeated_job(self, new: NewJob) -> Job | None:
        """The job an earlier create with this one's name and (non-empty) ``client_request_id`` made, if any."""
        if not new.client_request_id:
            return None
        row = self._execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE project_id = %s AND location = %s AND name = %s"
            " AND client_request_id = %s ORDER BY seq DESC LIMIT 1",
            (new.project_id, new.location, new.name, new.client_request_id),
        ).fetchone()
        return None if row is None else _job(row)

    def get_artifact(self, job_id: str, name: str) -> bytes | None:
        """A file the job was created with, or None."""
        row = self._execute("SELECT data FROM job_artifacts WHERE job_id = %s AND name = %s", (job_id, name)).fetchone()
        return None if row is None else bytes(row[0])

    def put_artifact(self, job_id: str, name: str, data: bytes) -> None:
        """Keep (or replace) a file with the job, such as its final metrics."""
        with self._transaction():
            self._execute("DELETE FROM job_artifacts WHERE job_id = %s AND name = %s", (job_id, name))
            self._execute("INSERT INTO job_artifacts (job_id, name, data) VALUES (%s, %s, %s)", (job_id, name, data))

    def active_replacement(self, job_id: str) -> str | None:
        """The id of an active job that replaces ``job_id`` (an update under way), if any."""
        row = self._execute(
            f"SELECT id FROM jobs WHERE replace_job_id = %s AND replace_job_id != '' AND {_IS_ACTIVE}"
            " ORDER BY seq LIMIT 1",
            (job_id,),
        ).fetchone()
        return None if row is None else str(row[0])

    def get_job(self, job_id: str, project_id: str | None = None) -> Job:
        """The job with this id (in this project, when one is named), or ``NotFound``."""
        seen = self._seen.get(job_id)
        if seen is not None and (project_id is None or seen.project_id == project_id):
            row = self._execute("SELECT version FROM jobs WHERE id = %s", (job_id,)).fetchone()
            if row is not None and row[0] == seen.version:
                return seen
        row = self._execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,)).fetchone()
        return self._saw(_job(_found(row, job_id, project_id)))

    def change_job(
        self, job_id: str, decide: Callable[[Job], Change | None], now: datetime, project_id: str | None = None
    ) -> tuple[Job, bool]:
        """Apply ``decide(job)`` to the job atomically; answer the job as it is after, and whether it changed.

        ``decide`` returns the change to make (``None``: nothing) and may be called more
        than once: first on the row as this process last saw it committed, which the
        write's compare-and-set on its version then confirms (``store.seen``); when that
        row is out of date, or ``decide`` raises or declines on it, again on the row read
        under its lock in the transaction. Only the second call's answer, or a write the
        first one's confirmed, is ever the outcome. A state change along an edge the
        lifecycle does not have raises ``FailedPrecondition`` and writes nothing.
        ``project_id``: the job must be in that project (``NotFound`` as ``get_job`` says it).
        """
        with self._transaction():
            seen = self._seen.get(job_id)
            if seen is not None and (project_id is None or seen.project_id == project_id):
                try:
                    change = decide(seen)
                    written = self._apply(seen, change, now) if change is not None else None
                except TidegateError:  # decided on a row that may be out of date: decide on the row itself
                    written = None
                if written is not None and written[1]:
                    return written
            lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
            row = self._execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %s{lock}", (job_id,)).fetchone()
            job = _job(_found(row, job_id, project_id))
            change = decide(job)
            if change is None:
                return job, False
            written = self._apply(job, change, now)
            if written is None:  # cannot happen under the row lock; never write a torn change
                raise FailedPrecondition(f"Job {job_id} changed concurrently; try again", reason="CONCURRENT_CHANGE")
            return written

    def _apply(self, job: Job, change: Change, now: datetime) -> tuple[Job, bool] | None:
        """Write ``change`` to ``job`` if its row is still at ``job.version`` (None: it is not); unchanged, nothing
        to write."""
        job_id = job.id
        t = micros(now)
        sets: dict[str, Any] = {}
        if change.target is not None:
            if not is_legal(job.current_state, change.target, change.actor):
                raise FailedPrecondition(
                    f"Job {job_id} cannot move from {job.current_state.name} to {change.target.name}"
                    f" (by the {change.actor.value})",
                    reason="ILLEGAL_TRANSITION",
                    metadata={"currentState": job.current_state.name, "targetState": change.target.name},
                )
            sets["current_state"] = int(change.target)
            sets["current_state_time"] = t
            if change.target is JobState.JOB_STATE_RUNNING:
                sets["start_time"] = t
        if change.requested is not None:
            sets["requested_state"] = int(change.requested)
        if change.labels is not None:
            sets["labels"] = json.dumps(dict(change.labels), sort_keys=True)
        if change.replaced_by_job_id is not None:
            sets["replaced_by_job_id"] = change.replaced_by_job_id
        if change.runtime_params is not None:
            sets["runtime_params"] = json.dumps(change.runtime_params.to_json(), sort_keys=True)
        if not sets:
            return job, False
        assignments = ", ".join(f"{column} = %s" for column in sets)
        message = change.message
        if message is None and change.target is not None:
            text = f"Job {job_id} is now {change.target.name}" + (f": {change.reason}" if change.reason else "")
            message = (MessageImportance.JOB_MESSAGE_BASIC, text)
        history = None
        if change.target is not None:
            history = (job.current_state, change.target, change.actor, change.reason, change.caller)
        # The compare-and-set answers the row as it is after (RETURNING): no second read.
        rows = self._write_with_records(
            f"UPDATE jobs SET {assignments}, version = version + 1 WHERE id = %s AND version = %s"
            f" RETURNING {_JOB_COLUMNS}",
            (*sets.values(), job_id, job.version),
            job_id,
            t,
            history,
            message,
        )
        if len(rows) != 1:
            return None
        if change.autoscaling is not None:
            self._autoscaling(job_id, t, change.autoscaling)
        return self._saw(_job(rows[0])), True

    def _saw(self, job: Job) -> Job:
        """Remember the job once this transaction has committed (read outside one: now)."""
        self.after_commit(functools.partial(self._seen.put, job))
        return job

    def list_jobs(
        self,
        project_id: str,
        location: str | None,
        list_filter: ListFilter,
        page_size: int,
        page_token: str = "",
        name: str = "",
        name_prefix: str = "",
    ) -> Page[Job]:
        """A page of a project's jobs (in one location, or all when ``location`` is None).

        ``name``: only the jobs of that name; ``name_prefix``: only those whose name starts so.

        Orders: ACTIVE by creation, newest first; TERMINATED by termination time,
        newest first; ALL the active ones, then the terminated ones; UNKNOWN every
        job, newest first. Pages are keyset pages: a page costs the same however many
        jobs are stored.
        """
        where = ["project_id = %s"]
        params: list[Any] = [project_id]
        if location is not None:
            where.append("location = %s")
            params.append(location)
        if name:
            where.append("name = %s")
            params.append(name)
        if name_prefix:
            where.append("name LIKE %s ESCAPE '!'")
            params.append(re.sub(r"([!%_])", r"!\1", name_prefix) + "%")
        phase, after = "a", None
        if page_token:
            phase, after = _untoken(page_token, list_filter)
        jobs: list[Job] = []
        if list_filter is ListFilter.UNKNOWN:
            rows = self._page(where, params, None, after if phase == "u" else None, page_size + 1)
            return self._finish(rows, page_size, lambda r: ("u", r[_SEQ]))
        if list_filter in (ListFilter.ALL, ListFilter.ACTIVE) and phase == "a":
            rows = self._page(where, params, _IS_ACTIVE, after, page_size + 1)
            if len(rows) > page_size or list_filter is ListFilter.ACTIVE:
                return self._finish(rows, page_size, lambda r: ("a", r[_SEQ]))
            jobs = [_job(r) for r in rows]
            phase, after = "t", None
            if len(jobs) == page_size:
                more = self._page(where, params, _IS_TERMINATED, None, 1, by_end=True)
                return Page(tuple(jobs), _token("t") if more else "")
        if list_filter in (ListFilter.ALL, ListFilter.TERMINATED):
            rows = self._page(where, params, _IS_TERMINATED, after, page_size + 1 - len(jobs), by_end=True)
            page = self._finish(rows, page_size - len(jobs), lambda r: ("t", r[6], r[_SEQ]))
            return Page((*jobs, *page.items), page.next_page_token)
        return Page(tuple(jobs))

    def _page(
        self,
        where: list[str],
        params: list[Any],
        state_clause: str | None,
        after: list[Any] | None,
        limit: int,
        *,
        by_end: bool = False,
    ) -> list[Any]:
        clauses = list(where)
        values = list(params)
        if state_clause:
            clauses.append(state_clause)
        if after:
            if by_end:
                clauses.append("(current_state_time < %s OR (current_state_time = %s AND seq < %s))")
                values += [after[0], after[0], after[1]]
            else:
                clauses.append("seq < %s")
                values.append(after[0])
        order = "current_state_time DESC, seq DESC" if by_end else "seq DESC"
        sql = f"SELECT {_SELECT} FROM jobs WHERE {' AND '.join(clauses)} ORDER BY {order} LIMIT %s"
        return self._execute(sql, (*values, limit)).fetchall()

    def _finish(self, rows: list[Any], page_size: int, key: Callable[[Any], tuple[Any, ...]]) -> Page[Job]:
        jobs = [_job(r) for r in rows[:page_size]]
        token = _token(*key(rows[page_size - 1])) if len(rows) > page_size and jobs else ""
        return Page(tuple(jobs), token)

    def project_ids(self, limit: int) -> list[str]:
        """The projects that have jobs, in name order (at most ``limit``)."""
        rows = self._execute("SELECT DISTINCT project_id FROM jobs ORDER BY project_id LIMIT %s", (limit,)).fetchall()
        return [str(r[0]) for r in rows]

    def count_jobs(self) -> int:
        return int(self._execute("SELECT count(*) FROM jobs").fetchone()[0])

    def count_jobs_by_state(self) -> list[tuple[JobState, str, int]]:
        """How many jobs are in each state, by the engine of their run ('' before they have one): one grouped COUNT."""
        rows = self._execute(
            "SELECT j.current_state, COALESCE(r.engine, ''), count(*) FROM jobs j"
            " LEFT JOIN job_runs r ON r.job_id = j.id GROUP BY j.current_state, COALESCE(r.engine, '')"
        ).fetchall()
        return [(JobState(int(state)), str(engine), int(count)) for state, engine, count in rows]

    # -- history and messages ------------------------------------------------------

    def _write_with_records(
        self,
        statement: str,
        params: Sequence[Any],
        job_id: str,
        t: int,
        history: tuple[JobState | None, JobState, Actor, str, str] | None,
        message: tuple[MessageImportance, str] | None,
    ) -> list[Any]:
        """Run ``statement`` (a write of the job's row, ``RETURNING`` its columns); the rows it answers.

        When it wrote the row, the job's state-history row (``history``: source, target,
        actor, reason, caller) and message are added with it. On PostgreSQL that is one
        statement (data-modifying ``WITH``: one round trip where there were three; the
        history and message rows are inserted only for a row the write answers); on
        SQLite, three statements.
        """
        if self.dialect != "postgresql":
            rows = self._execute(statement, params).fetchall()  # to the end: SQLite finishes the statement there
            if rows and history is not None:
                self._execute(
                    _HISTORY_INSERT + " VALUES (%s, %s, %s, %s, %s, %s, %s)", _history_row(job_id, t, *history)
                )
            if rows and message is not None:
                self._execute(_MESSAGE_INSERT + " VALUES (%s, %s, %s, %s)", _message_row(job_id, t, *message))
            return rows
        sql, values = f"WITH written AS ({statement})", list(params)
        if history is not None:
            sql += f", h AS ({_HISTORY_INSERT} SELECT %s::text, %s::integer, %s::integer, %s::text, %s::bigint,"
            sql += " %s::text, %s::text FROM written)"
            values += _history_row(job_id, t, *history)
        if message is not None:
            sql += f", m AS ({_MESSAGE_INSERT} SELECT %s::text, %s::bigint, %s::integer, %s::text FROM written)"
            values += _message_row(job_id, t, *message)
        return self._execute(sql + " SELECT * FROM written", values).fetchall()

    def _message(self, job_id: str, t: int, importance: MessageImportance, text: str) -> None:
        self._execute(_MESSAGE_INSERT + " VALUES (%s, %s, %s, %s)", _message_row(job_id, t, importance, text))

    def add_message(self, job_id: str, importance: MessageImportance, text: str, now: datetime) -> None:
        """Append a job message (an engine's log line, say)."""
        with self._transaction():
            self.get_job(job_id)
            self._message(job_id, micros(now), importance, text)

    def add_autoscaling_event(self, event: AutoscalingEvent, importance: MessageImportance, text: str) -> None:
        """Keep an autoscaling event of the job (at ``event.time``) and its job message, in one transaction."""
        with self._transaction():
            self.get_job(event.job_id)
            t = micros(event.time)
            self._autoscaling(event.job_id, t, event)
            self._message(event.job_id, t, importance, text)

    def history(self, job_id: str) -> list[StateChange]:
        """Every state the job has been in, oldest first."""
        self.get_job(job_id)
        rows = self._execute(
            "SELECT job_id, source_state, target_state, actor, time, reason, caller FROM job_state_history"
            " WHERE job_id = %s ORDER BY seq",
            (job_id,),
        ).fetchall()
        return [
            StateChange(
                r[0],
                None if r[1] is None else JobState(r[1]),
                JobState(r[2]),
                Actor(r[3]),
                from_micros(r[4]),
                r[5],
                r[6],
            )
            for r in rows
        ]

    def list_messages(
        self,
        job_id: str,
        minimum_importance: MessageImportance,
        start: datetime | None,
        end: datetime | None,
        page_size: int,
        page_token: str = "",
    ) -> Page[JobMessage]:
        """A page of the job's messages, oldest first."""
        self.get_job(job_id)
        clauses = ["job_id = %s"]
        values: list[Any] = [job_id]
        if page_token:
            _, keys = _untoken(page_token, "messages")
            clauses.append("seq > %s")
            values.append(keys[0])
        time_range(clauses, values, start, end)
        wanted = [int(i) for i in MessageImportance if i.rank >= minimum_importance.rank]
        clauses.append(f"importance IN ({', '.join(str(i) for i in wanted)})")
        rows = self._execute(
            f"SELECT seq, job_id, time, importance, text FROM job_messages WHERE {' AND '.join(clauses)}"
            " ORDER BY seq LIMIT %s",
            (*values, page_size + 1),
        ).fetchall()
        items = tuple(
            JobMessage(str(r[0]), r[1], from_micros(r[2]), MessageImportance(r[3]), r[4]) for r in rows[:page_size]
        )
        token = _token("m", rows[page_size - 1][0]) if len(rows) > page_size else ""
        return Page(items, token)

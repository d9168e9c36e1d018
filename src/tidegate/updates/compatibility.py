"""The compatibility check of an update (CreateJob with ``replaceJobId``), made before anything is touched.

A Flink job's state belongs to its operators by their ``uid``. A program declares the
uids of its stateful operators in its pipeline options, ``tidegate.uids: [...]``. An
update is compatible when every uid the old job declared maps onto one the new job
declares: through ``transformNameMapping`` (old name → new name) when it names it,
else unchanged. An old job that declared no uids is not checked here: Flink itself
refuses a savepoint whose state has no operator to go to, and the old job then resumes.

A renamed operator carries its state on by running under the uid its state was saved
with (Flink finds state by uid): the new job keeps ``{its uid: the uid it runs under}``
as an artifact (``STATE_UIDS_ARTIFACT``), built from the mapping and the old job's own,
and the Flink engine applies it when the program sets its uids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

from tidegate.errors import FailedPrecondition
from tidegate.jobspec import JobSpec, decode_spec, parse_spec, read_spec
from tidegate.lifecycle import END_REQUESTS, JobState, JobType
from tidegate.model import Job, NewJob
from tidegate.store import Store

__all__ = [
    "STATE_UIDS_ARTIFACT",
    "UIDS_OPTION",
    "check_update",
    "declared_uids",
    "missing_uids",
    "read_state_uids",
    "renames",
    "state_uids",
    "state_uids_of",
    "with_state_uids",
]

STATE_UIDS_ARTIFACT = "state-uids.json"
"""A job's ``{operator uid: the uid it runs under}``, for operators renamed by updates (JSON)."""

UIDS_OPTION = "uids"
"""The key under the ``tidegate`` pipeline options that lists a program's stateful operator uids."""


def declared_uids(spec: JobSpec) -> list[str]:
    uids = spec.tidegate.get(UIDS_OPTION) or []
    return [str(uid) for uid in uids] if isinstance(uids, list) else []


def missing_uids(old: Sequence[str], new: Sequence[str], mapping: Mapping[str, str]) -> list[str]:
    """The old uids whose state would have nowhere to go in the new job."""
    return [uid for uid in old if mapping.get(uid, uid) not in set(new)]


def check_update(store: Store, old: Job, new_spec: JobSpec, new_type: JobType, mapping: Mapping[str, str]) -> None:
    """Refuse (FAILED_PRECONDITION) an update that cannot replace ``old``; the old job is left as it is."""
    if old.type is not JobType.JOB_TYPE_STREAMING or new_type is not JobType.JOB_TYPE_STREAMING:
        raise FailedPrecondition(
            f"Job {old.id}: only a streaming job can be updated, by a streaming job", reason="UPDATE_NOT_STREAMING"
        )
    if old.current_state is not JobState.JOB_STATE_RUNNING:
        raise FailedPrecondition(
            f"Job {old.id} is in {old.current_state.name}: only a RUNNING job can be updated",
            reason="UPDATE_NOT_RUNNING",
            metadata={"currentState": old.current_state.name},
        )
    if old.requested_state in END_REQUESTS:
        raise FailedPrecondition(
            f"Job {old.id} carries the request {old.requested_state.name}: it cannot be updated",
            reason="UPDATE_NOT_RUNNING",
            metadata={"currentState": old.current_state.name, "carriedRequest": old.requested_state.name},
        )
    under_way = store.active_replacement(old.id)
    if under_way:
        raise FailedPrecondition(
            f"Job {old.id} is already being replaced by job {under_way}", reason="UPDATE_UNDER_WAY"
        )
    old_spec = read_spec(old)
    if old_spec.engine != new_spec.engine:
        raise FailedPrecondition(
            f"Job {old.id} runs on the {old_spec.engine} engine; its replacement must too, not {new_spec.engine}",
            reason="UPDATE_INCOMPATIBLE",
        )
    old_uids = declared_uids(old_spec)
    missing = missing_uids(old_uids, declared_uids(new_spec), mapping)
    if old_uids and missing:
        raise FailedPrecondition(
            f"The new job is not compatible with job {old.id}: the state of its operators {', '.join(missing)}"
            " would have nowhere to go (declare them in tidegate.uids, or map them with transformNameMapping)",
            reason="UPDATE_INCOMPATIBLE",
            metadata={"missingUids": ",".join(missing)},
        )


def state_uids(previous: Mapping[str, str], mapping: Mapping[str, str], new_uids: Sequence[str]) -> dict[str, str]:
    """The uids the new job's operators run under where that is not their own: ``{uid: uid of its state}``.

    ``previous``: the same for the old job (an operator renamed before runs under an older
    uid still); ``mapping``: old uid → new uid (``transformNameMapping``). Raises
    FAILED_PRECONDITION when an operator would run under the uid another operator of the
    new job has as its own.
    """
    under = {uid: state for uid, state in previous.items() if uid not in mapping}
    for old, new in mapping.items():
        under[new] = previous.get(old, old)
    under = {uid: state for uid, state in under.items() if uid != state}
    for uid, state in under.items():
        if state in new_uids and state not in under:
            raise FailedPrecondition(
                f"The new job's operator {uid!r} would carry the state of {state!r}, but the new job also has an"
                f" operator {state!r} of its own; rename that one too in transformNameMapping",
                reason="UPDATE_INCOMPATIBLE",
            )
    return under


def read_state_uids(data: bytes | None) -> dict[str, str]:
    """A ``STATE_UIDS_ARTIFACT`` as stored (empty when the job has none)."""
    return {str(k): str(v) for k, v in json.loads(data).items()} if data else {}


def state_uids_of(store: Store, job_id: str) -> dict[str, str]:
    """The uids a job's operators run under to find their state, where that is not their own."""
    return read_state_uids(store.get_artifact(job_id, STATE_UIDS_ARTIFACT))


def renames(new: NewJob) -> dict[str, str]:
    """A new job's ``transformNameMapping``: old operator name → new one."""
    return dict(decode_spec(new.spec).transform_name_mapping)


def with_state_uids(store: Store, new: NewJob, state_from: str) -> NewJob:
    """The new job, keeping the uids its operators run under to find the state of job ``state_from`` (renamed ones)."""
    uids = declared_uids(parse_spec(new.spec, new.type))
    under = state_uids(state_uids_of(store, state_from), renames(new), uids)
    if not under:
        return new
    return replace(new, artifacts={**new.artifacts, STATE_UIDS_ARTIFACT: json.dumps(under).encode()})

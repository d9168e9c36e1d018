"""The compatibility check of an update (CreateJob with ``replaceJobId``), made before anything is touched.

A Flink job's state belongs to its operators by their ``uid``. A program declares the
uids of its stateful operators in its pipeline options, ``tidegate.uids: [...]``. An
update is compatible when every uid the old job declared maps onto one the new job
declares: through ``transformNameMapping`` (old name → new name) when it names it,
else unchanged. An old job that declared no uids is not checked here: Flink itself
refuses a savepoint whose state has no operator to go to, and the old job then resumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tidegate.errors import FailedPrecondition
from tidegate.jobspec import JobSpec, read_spec
from tidegate.lifecycle import JobState, JobType
from tidegate.model import Job
from tidegate.store import Store

__all__ = ["UIDS_OPTION", "check_update", "declared_uids", "missing_uids"]

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

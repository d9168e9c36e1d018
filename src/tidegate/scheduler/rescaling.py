"""In-place rescaling: a RUNNING job's new ``runtimeUpdatableParams`` sent to its engine, and the outcome kept.

The service records the parameters on the job (and a TARGET_NUM_WORKERS_CHANGED event);
each tick, for a running job whose parameters its run has not been sent, this asks the
engine (``Rescaling.rescale``) once, then watches the run's workers until they reach the
target: a CURRENT_NUM_WORKERS_CHANGED event then, or an ACTUATION_FAILURE when the engine
refuses or does not get there within ``settle``. What was sent is kept in the run's actions
(``rescale:MAX:MIN:TARGET``, then ``rescaled:MAX:MIN``), so a scheduler that adopts the run
neither sends it again nor loses the outcome.
"""

from __future__ import annotations

import time
from dataclasses import replace

from tidegate.engines.base import Engine, Handle, Rescaling
from tidegate.errors import TidegateError
from tidegate.model import AutoscalingEvent, AutoscalingEventType, EngineRun, Job, MessageImportance, RuntimeParams
from tidegate.service.jobs import JobService
from tidegate.telemetry import call_engine

__all__ = ["Rescales"]

_SENT, _DONE = "rescale:", "rescaled:"


def _key(params: RuntimeParams) -> str:
    high, low = params.max_num_workers, params.min_num_workers
    return f"{'' if high is None else high}:{'' if low is None else low}"


class Rescales:
    """Sends a job's new worker bounds to its engine once, and records when its workers reach them."""

    def __init__(self, service: JobService, worker: str, *, settle: float = 300.0, check_every: float = 1.0) -> None:
        self.service = service
        self.store = service.store
        self.worker = worker
        self.settle = settle
        self.check_every = check_every
        self._sent_at: dict[str, float] = {}
        self._checked_at: dict[str, float] = {}

    def step(self, job: Job, run: EngineRun, engine: Engine, handle: Handle) -> EngineRun:
        """For a RUNNING job whose run runs: send its bounds if they are new, else watch them being reached."""
        params = job.runtime_params
        if params.max_num_workers is None and params.min_num_workers is None:
            return run
        key = _key(params)
        sent = next((a for a in run.actions if a.startswith(_SENT)), "")
        if sent.rsplit(":", 1)[0] != _SENT + key:
            return self._send(job, run, engine, handle, key)
        if _DONE + key in run.actions:
            return run
        now = time.monotonic()
        if now - self._checked_at.get(job.id, 0.0) < self.check_every:
            return run
        self._checked_at[job.id] = now
        target = int(sent.rsplit(":", 1)[1])
        try:
            current = (
                call_engine(handle.engine, "workers", engine.workers, handle) if isinstance(engine, Rescaling) else 0
            )
        except TidegateError:  # the engine is busy or away: the next check asks again (the job is not failed for it)
            return run
        if current == target:
            took = now - self._sent_at[job.id] if job.id in self._sent_at else None
            after = f" after {took:.1f} s" if took is not None else ""
            self._record(
                job,
                AutoscalingEventType.CURRENT_NUM_WORKERS_CHANGED,
                current,
                target,
                f"{current} workers running, as asked{after}",
                MessageImportance.JOB_MESSAGE_BASIC,
            )
            return self._mark(run, run.actions | {_DONE + key})
        if job.id in self._sent_at and now - self._sent_at[job.id] > self.settle:
            self._record(
                job,
                AutoscalingEventType.ACTUATION_FAILURE,
                current,
                target,
                f"the engine runs {current} workers, not {target}, {self.settle:.0f} s after it was asked",
                MessageImportance.JOB_MESSAGE_WARNING,
            )
            return self._mark(run, run.actions | {_DONE + key})
        return run

    def _send(self, job: Job, run: EngineRun, engine: Engine, handle: Handle, key: str) -> EngineRun:
        kept = frozenset(a for a in run.actions if not a.startswith((_SENT, _DONE)))
        if not isinstance(engine, Rescaling):
            self._record(
                job,
                AutoscalingEventType.ACTUATION_FAILURE,
                0,
                0,
                f"the {handle.engine} engine cannot rescale a running job",
                MessageImportance.JOB_MESSAGE_WARNING,
            )
            return self._mark(run, kept | {f"{_SENT}{key}:0", _DONE + key})
        try:
            current, target = call_engine(handle.engine, "rescale", engine.rescale, handle, job.runtime_params)
        except TidegateError as error:
            self._record(
                job,
                AutoscalingEventType.ACTUATION_FAILURE,
                0,
                0,
                f"the engine refused the rescale: {error.message[:500]}",
                MessageImportance.JOB_MESSAGE_WARNING,
            )
            return self._mark(run, kept | {f"{_SENT}{key}:0", _DONE + key})
        self._sent_at[job.id] = time.monotonic()
        self._checked_at.pop(job.id, None)
        actions = kept | {f"{_SENT}{key}:{target}"}
        if current == target:  # nothing to change (a bound that the job is within already)
            actions |= {_DONE + key}
        return self._mark(run, actions)

    def _record(
        self, job: Job, kind: AutoscalingEventType, current: int, target: int, text: str, importance: MessageImportance
    ) -> None:
        event = AutoscalingEvent(job.id, self.service.clock(), kind, current, target, text)
        self.service.record_autoscaling(event, importance)

    def _mark(self, run: EngineRun, actions: frozenset[str]) -> EngineRun:
        self.store.update_run(run.job_id, self.worker, actions=actions)
        return replace(run, actions=actions)

    def forget(self, job_id: str) -> None:
        """The job's run is over."""
        self._sent_at.pop(job_id, None)
        self._checked_at.pop(job_id, None)

-- 0007: what a job's processes printed (their stdout and stderr, a Flink job's driver), read from
-- the engine by the scheduler and kept with the job, so that any server shows it, after the run too.
CREATE TABLE job_logs (
    seq {serial_pk},
    job_id TEXT NOT NULL REFERENCES jobs (id),
    source TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX job_logs_job ON job_logs (job_id, seq);
ALTER TABLE job_runs ADD COLUMN log_cursor TEXT NOT NULL DEFAULT '';

-- 0002: engine runs (who runs a job, on which engine, under which lease) and the scheduler's scans.
CREATE TABLE job_runs (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id),
    engine TEXT NOT NULL,
    ref TEXT NOT NULL,
    worker TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    message_cursor BIGINT NOT NULL,
    actions TEXT NOT NULL
);
CREATE INDEX job_runs_lease ON job_runs (lease_until);
CREATE INDEX jobs_by_state ON jobs (current_state, seq)
    WHERE current_state NOT IN (3, 4, 5, 6, 8);

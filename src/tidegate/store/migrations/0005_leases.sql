-- 0005: schedulers' leases (who is alive), the tokens of runs whose own supervisor keeps their lease,
-- and the active replacements of jobs (an update under way), found by the job they replace.
CREATE TABLE schedulers (
    worker TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
CREATE TABLE run_tokens (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id),
    token TEXT NOT NULL
);
CREATE INDEX jobs_replacing ON jobs (replace_job_id)
    WHERE replace_job_id != '' AND current_state NOT IN (3, 4, 5, 6, 8);

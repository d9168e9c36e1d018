-- 0005: schedulers' leases (who is alive), and the tokens of runs whose own supervisor keeps their lease.
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

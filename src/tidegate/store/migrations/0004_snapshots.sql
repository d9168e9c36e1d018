-- 0004: snapshots of streaming jobs (Flink savepoints) with a time to live.
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    location TEXT NOT NULL,
    source_job_id TEXT NOT NULL REFERENCES jobs (id),
    creation_time BIGINT NOT NULL,
    ttl_micros BIGINT,
    state INTEGER NOT NULL,
    description TEXT NOT NULL,
    disk_size_bytes BIGINT NOT NULL,
    path TEXT NOT NULL
);
CREATE INDEX snapshots_by_job ON snapshots (project_id, source_job_id, creation_time);
-- A replacement (replaceJobId) shares its name with the job it replaces while both are active.
DROP INDEX jobs_active_name;
CREATE UNIQUE INDEX jobs_active_name ON jobs (project_id, location, name)
    WHERE current_state NOT IN (3, 4, 5, 6, 8) AND replace_job_id = '';

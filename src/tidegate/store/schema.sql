-- The whole schema, as of the newest migration. A fresh database is built from this file;
-- an existing one is brought up to date by migrations/. A test checks that both agree.
CREATE TABLE jobs (
    seq {serial_pk},
    id TEXT NOT NULL UNIQUE,
    project_id TEXT NOT NULL,
    location TEXT NOT NULL,
    name TEXT NOT NULL,
    job_type INTEGER NOT NULL,
    current_state INTEGER NOT NULL,
    current_state_time BIGINT NOT NULL,
    requested_state INTEGER NOT NULL,
    create_time BIGINT NOT NULL,
    start_time BIGINT NOT NULL,
    spec {blob} NOT NULL,
    labels TEXT NOT NULL,
    client_request_id TEXT NOT NULL,
    replace_job_id TEXT NOT NULL,
    replaced_by_job_id TEXT NOT NULL,
    created_from_snapshot_id TEXT NOT NULL,
    version BIGINT NOT NULL
);
-- One active job per name in a project and location (Dataflow's rule).
CREATE UNIQUE INDEX jobs_active_name ON jobs (project_id, location, name)
    WHERE current_state NOT IN (3, 4, 5, 6, 8);
CREATE INDEX jobs_by_request ON jobs (project_id, location, name, client_request_id);
-- Keyset pages: newest first, per location and across locations.
CREATE INDEX jobs_all ON jobs (project_id, location, seq);
CREATE INDEX jobs_all_agg ON jobs (project_id, seq);
CREATE INDEX jobs_active ON jobs (project_id, location, seq)
    WHERE current_state NOT IN (3, 4, 5, 6, 8);
CREATE INDEX jobs_active_agg ON jobs (project_id, seq)
    WHERE current_state NOT IN (3, 4, 5, 6, 8);
CREATE INDEX jobs_terminated ON jobs (project_id, location, current_state_time, seq)
    WHERE current_state IN (3, 4, 5, 6, 8);
CREATE INDEX jobs_terminated_agg ON jobs (project_id, current_state_time, seq)
    WHERE current_state IN (3, 4, 5, 6, 8);

CREATE TABLE job_state_history (
    seq {serial_pk},
    job_id TEXT NOT NULL REFERENCES jobs (id),
    source_state INTEGER,
    target_state INTEGER NOT NULL,
    actor TEXT NOT NULL,
    time BIGINT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX job_state_history_job ON job_state_history (job_id, seq);

CREATE TABLE job_messages (
    seq {serial_pk},
    job_id TEXT NOT NULL REFERENCES jobs (id),
    time BIGINT NOT NULL,
    importance INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX job_messages_job ON job_messages (job_id, seq);
CREATE TABLE job_runs (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id),
    engine TEXT NOT NULL,
    ref TEXT NOT NULL,
    worker TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    message_cursor BIGINT NOT NULL,
    actions TEXT NOT NULL,
    log_cursor TEXT NOT NULL DEFAULT ''
);
CREATE INDEX job_runs_lease ON job_runs (lease_until);
CREATE INDEX jobs_by_state ON jobs (current_state, seq)
    WHERE current_state NOT IN (3, 4, 5, 6, 8);
CREATE TABLE job_artifacts (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    name TEXT NOT NULL,
    data {blob} NOT NULL,
    PRIMARY KEY (job_id, name)
);
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
CREATE TABLE job_logs (
    seq {serial_pk},
    job_id TEXT NOT NULL REFERENCES jobs (id),
    source TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX job_logs_job ON job_logs (job_id, seq);
CREATE TABLE credentials (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    project_id TEXT NOT NULL,
    role INTEGER NOT NULL,
    secret TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    create_time BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE UNIQUE INDEX credentials_by_name ON credentials (kind, project_id, name);
CREATE INDEX credentials_by_secret ON credentials (secret);
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    credential_id TEXT NOT NULL REFERENCES credentials (id),
    expire_time BIGINT NOT NULL
);
CREATE INDEX access_tokens_by_credential ON access_tokens (credential_id);
CREATE INDEX access_tokens_by_expiry ON access_tokens (expire_time);
CREATE TABLE auth_required (
    since BIGINT NOT NULL
);
ALTER TABLE job_state_history ADD COLUMN caller TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_active_by_name ON jobs (project_id, location, name, seq)
    WHERE current_state NOT IN (3, 4, 5, 6, 8);
ALTER TABLE jobs ADD COLUMN runtime_params TEXT NOT NULL DEFAULT '{}';
CREATE TABLE autoscaling_events (
    seq {serial_pk},
    job_id TEXT NOT NULL REFERENCES jobs (id),
    time BIGINT NOT NULL,
    event_type INTEGER NOT NULL,
    current_num_workers BIGINT NOT NULL,
    target_num_workers BIGINT NOT NULL,
    description TEXT NOT NULL,
    worker_pool TEXT NOT NULL
);
CREATE INDEX autoscaling_events_job ON autoscaling_events (job_id, seq);

-- 0006: service accounts and API tokens with a role in a project, the access tokens that service
-- accounts are given, whether calls need a credential, and who asked for each state change.
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
-- One row once the first credential is made: from then on every call needs one.
CREATE TABLE auth_required (
    since BIGINT NOT NULL
);
ALTER TABLE job_state_history ADD COLUMN caller TEXT NOT NULL DEFAULT '';

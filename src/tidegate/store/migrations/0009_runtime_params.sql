-- A job's runtimeUpdatableParams (UpdateJob under runtime_updatable_params.…), as JSON,
-- and its autoscaling events (ListJobMessages' autoscalingEvents).
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

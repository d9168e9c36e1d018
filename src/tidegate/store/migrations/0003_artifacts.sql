-- 0003: files a job brings with it (Beam's staged pipeline.pb, a Flink program), kept
-- with the job so that any worker can run it.
CREATE TABLE job_artifacts (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    name TEXT NOT NULL,
    data {blob} NOT NULL,
    PRIMARY KEY (job_id, name)
);

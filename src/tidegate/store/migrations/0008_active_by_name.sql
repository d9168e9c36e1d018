-- 0008: the active jobs of a name, found by an index of their own. A create looks for them (a name
-- an active job has answers that job); without it the lookup scanned every active job of the location.
CREATE INDEX jobs_active_by_name ON jobs (project_id, location, name, seq)
    WHERE current_state NOT IN (3, 4, 5, 6, 8);

-- Each fire of a cron trigger (and each stretch of fires missed while kubefn was down).
CREATE TABLE trigger_runs (
    id            INTEGER PRIMARY KEY,
    trigger_id    INTEGER NOT NULL REFERENCES triggers(id) ON DELETE CASCADE,
    scheduled_for TEXT NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('running', 'ok', 'failed', 'skipped')),
    status        INTEGER,
    duration_ms   INTEGER,
    message       TEXT NOT NULL DEFAULT '',
    finished_at   TEXT
);
CREATE INDEX trigger_runs_by_trigger ON trigger_runs(trigger_id, id);

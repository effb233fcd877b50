-- Async invocations: a persistent queue, worked off with retries; the result stays readable.
CREATE TABLE async_invocations (
    id              TEXT PRIMARY KEY,
    function_id     INTEGER NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    user_id         INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    caller_id       INTEGER REFERENCES users(id) ON DELETE SET NULL,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    content_type    TEXT,
    body            BLOB NOT NULL,
    callback_url    TEXT,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    status          INTEGER,
    response        BLOB,
    response_type   TEXT,
    error           TEXT NOT NULL DEFAULT '',
    callback_result TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL,
    finished_at     TEXT
);
CREATE INDEX async_invocations_due ON async_invocations(state, next_attempt_at);

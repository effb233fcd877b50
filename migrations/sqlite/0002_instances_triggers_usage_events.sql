-- What runs: instances (one per user and function), their triggers, usage samples and events.
CREATE TABLE instances (
    id              TEXT PRIMARY KEY,
    function_id     INTEGER NOT NULL REFERENCES functions(id),
    user_id         INTEGER NOT NULL REFERENCES users(id),
    desired_version INTEGER NOT NULL,
    replicas        INTEGER NOT NULL,
    paused          INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL CHECK (state IN ('Pending', 'Deploying', 'Ready', 'Paused', 'Failed', 'Deleting')),
    message         TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    UNIQUE (function_id, user_id)
);
CREATE INDEX instances_by_user ON instances(user_id);

CREATE TABLE triggers (
    id           INTEGER PRIMARY KEY,
    function_id  INTEGER NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL CHECK (kind IN ('cron')),
    schedule     TEXT NOT NULL,
    method       TEXT NOT NULL DEFAULT 'POST',
    path         TEXT NOT NULL DEFAULT '/',
    body         TEXT NOT NULL DEFAULT '',
    enabled      INTEGER NOT NULL DEFAULT 1,
    last_fire_at TEXT,
    created_at   TEXT NOT NULL
);

CREATE TABLE usage_samples (
    instance_id      TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    at               TEXT NOT NULL,
    replicas_desired INTEGER NOT NULL,
    replicas_ready   INTEGER NOT NULL,
    cpu_millicores   REAL,
    memory_bytes     INTEGER,
    requests_per_s   REAL,
    p50_ms           REAL,
    p95_ms           REAL,
    errors           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (instance_id, at)
);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    instance_id TEXT REFERENCES instances(id) ON DELETE CASCADE,
    function_id INTEGER REFERENCES functions(id) ON DELETE CASCADE,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('Normal', 'Warning')),
    reason      TEXT NOT NULL,
    message     TEXT NOT NULL
);
CREATE INDEX events_by_instance ON events(instance_id, at);

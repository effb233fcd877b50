-- Per-user quotas an admin set; a NULL column (or no row) means kubefn's default.
CREATE TABLE user_quotas (
    user_id         INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    functions       INTEGER,
    versions        INTEGER,
    instances       INTEGER,
    replicas        INTEGER,
    cpu_millicores  INTEGER,
    memory_bytes    INTEGER,
    updated_at      TEXT NOT NULL
);

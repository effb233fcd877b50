-- Users, API tokens and the function registry with immutable versions.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    created_at    TEXT NOT NULL
);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT
);
CREATE INDEX api_tokens_by_user ON api_tokens(user_id);

CREATE TABLE functions (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    owner_id        INTEGER NOT NULL REFERENCES users(id),
    visibility      TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    runtime         TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    latest_version  INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX functions_by_owner ON functions(owner_id);

CREATE TABLE function_versions (
    function_id INTEGER NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    spec        TEXT NOT NULL,
    created_by  INTEGER NOT NULL REFERENCES users(id),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (function_id, number)
);

-- Per-user secrets (platform/secrets.rs): each value sealed with the installation's key
-- (ChaCha20-Poly1305, a random nonce per value, the owner's id and the name as associated data,
-- so a value moved to another row or user does not open). Names are shown; values never are.
CREATE TABLE secrets (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    nonce      BLOB    NOT NULL,
    sealed     BLOB    NOT NULL,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    PRIMARY KEY (user_id, name)
);

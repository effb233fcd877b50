-- Attempts counted against rate limits (failed log-ins, sign-ups) when several kubefn processes
-- share the database; one process alone counts them in memory. Rows older than their limit's
-- window are deleted as new attempts come.
CREATE TABLE rate_limit_attempts (
    scope TEXT NOT NULL,
    key   TEXT NOT NULL,
    at    TEXT NOT NULL
);
CREATE INDEX rate_limit_attempts_by_key ON rate_limit_attempts (scope, key, at);
CREATE INDEX rate_limit_attempts_by_age ON rate_limit_attempts (scope, at);

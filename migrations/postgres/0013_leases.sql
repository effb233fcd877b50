-- Leases: which kubefn process does the work that must happen once (reconcile, cron fires,
-- async workers). A holder keeps its lease by renewing it before it expires; another process
-- takes it over only once it has expired.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

-- Async request bodies move out of the database into the spool directory (platform/async_spool.rs):
-- rows queued from now on keep only the body's length; rows queued before keep their inline body
-- until they finish. The queue's byte bound sums body_bytes.
ALTER TABLE async_invocations ADD COLUMN body_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE async_invocations ADD COLUMN body_spooled INTEGER NOT NULL DEFAULT 0;
UPDATE async_invocations SET body_bytes = LENGTH(body);

-- Invocations counted since the previous sample, so totals are sums of counts (exact) rather
-- than rates times intervals (which lose the calls before an instance's first sample).
ALTER TABLE usage_samples ADD COLUMN invocations INTEGER NOT NULL DEFAULT 0;

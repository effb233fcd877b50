-- The async queue's bounds: unfinished calls are counted per instance (function and user), and
-- finished ones are found by age to be deleted after the retention period.
CREATE INDEX async_invocations_instance ON async_invocations(function_id, user_id, state);
CREATE INDEX async_invocations_finished ON async_invocations(finished_at);

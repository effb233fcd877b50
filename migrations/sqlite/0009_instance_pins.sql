-- Whose code runs where: an instance of someone else's function stays on the version it was
-- deployed with (pinned_version) unless its user chose to follow the owner's updates (NULL).
-- Instances deployed before this follow, as they always did.
ALTER TABLE instances ADD COLUMN pinned_version INTEGER;

-- The node port an instance was given, so it keeps the same one across restarts of kubefn.
ALTER TABLE instances ADD COLUMN node_port INTEGER;

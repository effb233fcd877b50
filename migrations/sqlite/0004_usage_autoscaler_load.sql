-- The autoscaler's load in percent of its target (the most loaded metric), for the scaling chart.
ALTER TABLE usage_samples ADD COLUMN autoscaler_load_percent REAL;

-- +goose Up
-- A group's maintenance window may recur on chosen weekdays (UTC), "mon,wed,sat"; empty: every
-- day. Campaigns keep theirs in their spec, with their dynamic intake and scheduled start.
ALTER TABLE device_groups ADD COLUMN window_days TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE device_groups DROP COLUMN window_days;

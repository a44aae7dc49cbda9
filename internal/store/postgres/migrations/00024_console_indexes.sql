-- +goose Up
-- The console's device list pages by keyset in each sort order it offers: (column, id), the
-- cursor's ORDER BY exactly, so that a page is a range of one index (the id order is the
-- primary key's).
CREATE INDEX devices_serial_id ON devices (serial, id);
CREATE INDEX devices_product_id ON devices (product, id);
CREATE INDEX devices_version_id ON devices (installed_ver, id);
CREATE INDEX devices_state_id ON devices (state, id);
CREATE INDEX devices_hardware_id ON devices (hardware_id, id);
-- Free-text search is a prefix of the id or serial, letters A to Z folded (lower under the C
-- collation folds ASCII only, as SQLite's does) and compared bytewise: a range of these.
CREATE INDEX devices_id_fold ON devices (lower(id COLLATE "C"));
CREATE INDEX devices_serial_fold ON devices (lower(serial COLLATE "C"));
-- The day (UTC, days since 1970-01-01) of last_seen, NULL if never seen: the overview counts
-- the fleet by status, product, version and state, with its stale devices (seen before the
-- cutoff's day), from devices_fleet alone (no table rows read, no sort); those seen on the
-- cutoff's day itself are few, read through devices_seen_day. The day changes once a day per
-- device, unlike last_seen, which is left out of every index: recording a check-in writes no
-- index (in PostgreSQL, a HOT update) unless the day turns.
ALTER TABLE devices ADD COLUMN seen_day BIGINT;
UPDATE devices SET seen_day = floor(extract(epoch FROM last_seen) / 86400)::bigint WHERE last_seen IS NOT NULL;
CREATE INDEX devices_fleet ON devices (status, product, installed_ver, state, seen_day);
CREATE INDEX devices_seen_day ON devices (seen_day);
-- The devices with an error, from this partial index.
CREATE INDEX devices_fleet_errors ON devices (status, product, installed_ver, state) WHERE last_error <> '';
-- The rollouts list pages campaigns newest first, all or of one state.
CREATE INDEX campaigns_created ON campaigns (created_at, id);
CREATE INDEX campaigns_state_created ON campaigns (state, created_at, id);

-- +goose Down
DROP INDEX campaigns_state_created;
DROP INDEX campaigns_created;
DROP INDEX devices_fleet_errors;
DROP INDEX devices_seen_day;
DROP INDEX devices_fleet;
ALTER TABLE devices DROP COLUMN seen_day;
DROP INDEX devices_serial_fold;
DROP INDEX devices_id_fold;
DROP INDEX devices_hardware_id;
DROP INDEX devices_state_id;
DROP INDEX devices_version_id;
DROP INDEX devices_product_id;
DROP INDEX devices_serial_id;

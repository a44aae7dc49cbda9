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
-- The overview counts the fleet by status, product, version and state, with its stale devices,
-- from this index alone (no table rows read); the devices with an error from the partial one.
CREATE INDEX devices_fleet ON devices (status, product, installed_ver, state, last_seen);
CREATE INDEX devices_fleet_errors ON devices (status, product, installed_ver, state) WHERE last_error <> '';
-- The rollouts list pages campaigns newest first, all or of one state.
CREATE INDEX campaigns_created ON campaigns (created_at, id);
CREATE INDEX campaigns_state_created ON campaigns (state, created_at, id);

-- +goose Down
DROP INDEX campaigns_state_created;
DROP INDEX campaigns_created;
DROP INDEX devices_fleet_errors;
DROP INDEX devices_fleet;
DROP INDEX devices_serial_fold;
DROP INDEX devices_id_fold;
DROP INDEX devices_hardware_id;
DROP INDEX devices_state_id;
DROP INDEX devices_version_id;
DROP INDEX devices_product_id;
DROP INDEX devices_serial_id;

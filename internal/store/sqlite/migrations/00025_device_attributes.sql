-- +goose Up
-- The devices' attribute values, one row per device, key and value, a list's values (joined by
-- a line break in devices.attributes, inventory.ListSeparator) one row each: the console's
-- attribute filter (key=value: the value or one of its list values) is a range of the primary
-- key, not a read of every device's JSON. The store writes a device's rows with its attributes,
-- in the same transaction; they go with the device (foreign keys are on, PRAGMA foreign_keys).
CREATE TABLE device_attributes (
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    PRIMARY KEY (key, value, device_id)
) WITHOUT ROWID;
-- A device's rows: replaced with its attributes, and deleted with it.
CREATE INDEX device_attributes_device ON device_attributes (device_id);
-- The devices stored before: each member of the JSON object, split at its line breaks (a
-- value without one is one row; "" too).
INSERT INTO device_attributes (key, value, device_id)
WITH RECURSIVE part(device_id, key, rest, value) AS (
    SELECT d.id, a.key, a.value || char(10), NULL FROM devices d, json_each(d.attributes) a
    UNION ALL
    SELECT device_id, key, substr(rest, instr(rest, char(10)) + 1), substr(rest, 1, instr(rest, char(10)) - 1)
    FROM part WHERE rest <> ''
)
SELECT DISTINCT key, value, device_id FROM part WHERE value IS NOT NULL;

-- +goose Down
DROP TABLE device_attributes;

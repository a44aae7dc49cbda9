-- +goose Up
-- The devices' attribute values, one row per device, key and value, a list's values (joined by
-- a line break in devices.attributes, inventory.ListSeparator) one row each: the console's
-- attribute filter (key=value: the value or one of its list values) is a range of the primary
-- key, not a read of every device's JSON. The store writes a device's rows with its attributes,
-- in the same transaction; they go with the device. A value is at most inventory.MaxValue
-- bytes, well within a B-tree entry.
CREATE TABLE device_attributes (
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    PRIMARY KEY (key, value, device_id)
);
-- A device's rows: replaced with its attributes, and deleted with it.
CREATE INDEX device_attributes_device ON device_attributes (device_id);
-- The devices stored before (attributes is TEXT holding a JSON object): each member, split at
-- its line breaks (a value without one is one row; '' too, which regexp_split_to_table keeps).
INSERT INTO device_attributes (key, value, device_id)
SELECT DISTINCT a.key, v.value, d.id
FROM devices d, jsonb_each_text(d.attributes::jsonb) a, regexp_split_to_table(a.value, E'\n') v(value)
WHERE a.value IS NOT NULL;

-- +goose Down
DROP TABLE device_attributes;

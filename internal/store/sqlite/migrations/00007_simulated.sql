-- +goose Up
-- Devices enrolled by `upkeep simulate`: marked through the enrolment token the simulator
-- creates (simulation), left out of every public figure and removable at once.
ALTER TABLE enroll_tokens ADD COLUMN simulation BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE devices ADD COLUMN simulated BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX devices_simulated ON devices (simulated) WHERE simulated;

-- +goose Down
DROP INDEX devices_simulated;
ALTER TABLE devices DROP COLUMN simulated;
ALTER TABLE enroll_tokens DROP COLUMN simulation;

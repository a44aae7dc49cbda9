-- +goose Up
-- What each campaign member's download cost: the bytes the device fetched for the campaign's
-- image (a delta, or the full image) and the image's length, for the bytes deltas saved.
ALTER TABLE campaign_devices ADD COLUMN downloaded BIGINT NOT NULL DEFAULT 0;
ALTER TABLE campaign_devices ADD COLUMN image_length BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE campaign_devices DROP COLUMN image_length;
ALTER TABLE campaign_devices DROP COLUMN downloaded;

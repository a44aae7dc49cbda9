-- +goose Up
-- Per wave, how many members had failed when an operator last resumed the campaign: the
-- failure threshold judges only failures after it (JSON array of counts; empty before a resume).
ALTER TABLE campaigns ADD COLUMN baseline TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE campaigns DROP COLUMN baseline;

-- Issue 11: scan-stream entries the drain could not store (unreadable, or values PostgreSQL
-- or its driver refuse), kept with the reason instead of stopping the drain; listed and
-- replayed by operators. The fields are the entry's as Redis held them (name, value, …):
-- ids, times, enum values and a random subject id, never a name or an ID number.
CREATE TABLE scan_dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream      text NOT NULL,
    entry_id    text NOT NULL,
    fields      bytea[] NOT NULL,
    reason      text NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_tried  timestamptz,                    -- the last replay that could not store it
    UNIQUE (stream, entry_id)                   -- a re-delivered entry is kept once
);

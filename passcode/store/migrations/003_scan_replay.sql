-- Replay: the same pass scanned at another place within the replay window (flagged by the
-- verify script, admitted as usual). On the partitioned parent, so every partition gets it.
ALTER TABLE scans ADD COLUMN replay boolean NOT NULL DEFAULT false;
-- The authority counts replays by time range; few rows are replays, so a partial index.
CREATE INDEX scans_replay ON scans (scanned_at) WHERE replay;

-- Issue 16: the sunset (`passcode sunset`) destroys every citizen-linked record and keeps only
-- the audit log and these counts: scans per UTC day and place type, computed from the scan log
-- in the same transaction that then empties it. They name no person, terminal or place (a
-- type is shared by many places); scans whose place has no row in places count as 'untyped'.
CREATE TABLE sunset_scan_counts (
    sunset_at   timestamptz NOT NULL,           -- the sunset that kept them
    day         date NOT NULL,                  -- UTC
    place_type  text NOT NULL,
    scans       bigint NOT NULL CHECK (scans > 0),
    PRIMARY KEY (sunset_at, day, place_type)
);

-- Issue 15: venue codes (场所码), a place's printed QR that visitors scan with their phones. One
-- row per place that has a poster: its current issue. Issuing a new poster for the place bumps
-- the issue, and every code of an older issue is refused from then on (revocation by
-- re-issuing, DESIGN §4); each issue is in the audit log (venue.issue).
--
-- Check-ins are scans in the one scan log. Each place with a poster has a venue terminal: a
-- terminals row with the place set, created at its first issue, whose key nobody holds (its
-- key_hash is the hash of random bytes that were never kept). Check-ins are recorded as scans
-- of it, so the scan stream's records (which carry a terminal id, the place joined from
-- terminals when stored), tracing by place and risk places all see them unchanged.
CREATE TABLE venues (
    place        text PRIMARY KEY REFERENCES places (id),
    terminal_id  uuid NOT NULL UNIQUE REFERENCES terminals (id),
    issue        bigint NOT NULL CHECK (issue > 0),
    code         text NOT NULL,                -- the PP1: text of the current poster
    issued_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL CHECK (expires_at > issued_at),
    issued_by    text NOT NULL                 -- the actor, as the audit log names them
);

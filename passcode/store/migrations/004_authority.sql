-- Issue 5: role-scoped admin credentials, the audit log, risk places, test results, and the
-- indexes contact tracing reads the scan log through.

-- Admin credentials: the key is shown once; only its SHA-256 is kept.
CREATE TABLE admin_credentials (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    key_hash    bytea NOT NULL UNIQUE,
    roles       text[] NOT NULL CHECK (
        cardinality(roles) > 0
        AND roles <@ ARRAY['operator', 'health_officer', 'auditor']::text[]
    ),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Every admin action and every tracing query (and every refusal of one for want of a role).
-- Append-only: rows are never updated or deleted, enforced by triggers below.
CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,                  -- credential name and id, never the key
    action      text NOT NULL,                  -- e.g. terminal.add, trace.place
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'denied')),
    target      jsonb NOT NULL DEFAULT '{}',    -- the query or change; pseudonyms, no raw ids
    rows        integer                         -- rows returned or changed, when it applies
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

-- Contact tracing: who scanned at a place in a window; where a subject scanned in a window.
-- On the partitioned parent, so every day partition gets them.
CREATE INDEX scans_place_time ON scans (place, scanned_at);
CREATE INDEX scans_subject_time ON scans (subject_id, scanned_at) WHERE subject_id IS NOT NULL;

-- One exposure per subject and source (a risk place marking, a test result): re-running a
-- marking or re-uploading results adds nothing.
CREATE UNIQUE INDEX exposures_source ON exposures (subject_id, source);

-- A place marked risky for a window (时空伴随); applied by a resumable batch job.
CREATE TABLE risk_places (
    id            uuid PRIMARY KEY,
    place         text NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL CHECK (window_end > window_start),
    color         text NOT NULL CHECK (color IN ('yellow', 'red')),
    note          text NOT NULL,
    exposure_until timestamptz,                 -- NULL: until an authority's override
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'running', 'done', 'failed')),
    affected      integer,                      -- subjects found (known once the job started)
    processed     integer NOT NULL DEFAULT 0,   -- subjects whose status is updated
    cursor_subject bytea,                       -- resume point: last subject id done
    started_at    timestamptz,
    finished_at   timestamptz,
    error         text,
    UNIQUE (place, window_start, window_end, color)
);

-- Laboratory results uploaded by an authority; one row per (subject, time, result).
CREATE TABLE test_results (
    subject_id   bytea NOT NULL REFERENCES subjects (id),
    tested_at    timestamptz NOT NULL,
    result       text NOT NULL CHECK (result IN ('positive', 'negative')),
    uploaded_by  text NOT NULL,
    uploaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject_id, tested_at, result)
);

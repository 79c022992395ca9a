-- Issue 16: retention of every kind of record (passcode.domain.retention says what goes when;
-- passcode.store.retention runs the purges). The indexes let each purge find its rows by
-- time instead of reading its table whole on every run.

-- Declarations: the old ones by time; the next newer one of the same subject by (subject,
-- time), which is also the order the status derivation reads the latest one in.
CREATE INDEX declarations_declared_at ON declarations (declared_at);
CREATE INDEX declarations_subject_time ON declarations (subject_id, declared_at, id);
-- An Idempotency-Key and the body hash that goes with it are kept only for the retry window:
-- afterwards both are cleared (NULL), and a retry with that key is a new declaration.
ALTER TABLE declarations ALTER COLUMN request_hash DROP NOT NULL;
CREATE INDEX declarations_idempotent ON declarations (declared_at) WHERE request_hash IS NOT NULL;

-- Rulings that ended, by their end; the open-ended overrides that settle older facts for good.
CREATE INDEX overrides_ended ON overrides (valid_until) WHERE valid_until IS NOT NULL;
CREATE INDEX overrides_open ON overrides (valid_from) WHERE valid_until IS NULL;
CREATE INDEX exposures_ended ON exposures (valid_until) WHERE valid_until IS NOT NULL;

CREATE INDEX test_results_tested_at ON test_results (tested_at);
CREATE INDEX cards_expires ON cards (expires_at);
CREATE INDEX scan_dead_letters_first_seen ON scan_dead_letters (first_seen);
CREATE INDEX subjects_created_at ON subjects (created_at);

-- The audit log stays append-only, but is purged past its retention period by whole calendar
-- months (UTC), through audit_log_purge() alone. UPDATE and TRUNCATE are refused as before. A
-- DELETE is refused unless audit_log_purge() set the transaction-local passcode.
-- audit_purge_before, and then only for rows older than it; and a statement that deleted
-- anything must leave nothing older than it (a purge removes a whole range, never a choice
-- of rows). The guard keeps the application's own code to that; it is no barrier against
-- the table's owner, who can drop a trigger.
DROP TRIGGER audit_log_no_update_delete ON audit_log;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();

CREATE FUNCTION audit_log_purge_cutoff() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('passcode.audit_purge_before', true), '')::timestamptz
$$;

CREATE FUNCTION audit_log_delete_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := audit_log_purge_cutoff();
BEGIN
    IF cutoff IS NULL OR OLD.at >= cutoff THEN
        RAISE EXCEPTION 'audit_log is append-only (DELETE refused: audit_log_purge() removes whole months past retention)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER audit_log_delete_only_by_purge BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_delete_guard();

CREATE FUNCTION audit_log_whole_range() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := audit_log_purge_cutoff();
BEGIN
    IF cutoff IS NOT NULL AND EXISTS (SELECT 1 FROM audit_log WHERE at < cutoff) THEN
        RAISE EXCEPTION 'audit_log is purged by whole ranges: rows before % remain', cutoff
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER audit_log_purge_whole_range AFTER DELETE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_whole_range();

-- Every entry before ``before`` (the start of a calendar month, UTC), in one statement; the
-- number removed.
CREATE FUNCTION audit_log_purge(before timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    removed bigint;
BEGIN
    IF before IS NULL OR before <> date_trunc('month', before, 'UTC') THEN
        RAISE EXCEPTION 'audit_log is purged by whole months (UTC): % is not the start of one', before
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('passcode.audit_purge_before', before::text, true);
    DELETE FROM audit_log WHERE at < before;
    GET DIAGNOSTICS removed = ROW_COUNT;
    PERFORM set_config('passcode.audit_purge_before', '', true);
    RETURN removed;
END;
$$;

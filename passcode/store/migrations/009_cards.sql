-- Issue 14: printed cards (纸质码) for people without a smartphone. The card itself is paper (a
-- pass with a long lifetime and the card claim); here is its serial and state, so a lost card
-- can be revoked by its serial. Every replica caches the revoked serials (catalog 'cards').
CREATE TABLE cards (
    serial         bytea PRIMARY KEY CHECK (length(serial) BETWEEN 8 AND 32),
    subject_id     bytea NOT NULL REFERENCES subjects (id),
    code           text NOT NULL,               -- the PC1: text printed, to print it again
    issued_by      text NOT NULL,               -- the actor, as the audit log names them
    issued_at      timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL CHECK (expires_at > issued_at),
    revoked_at     timestamptz,
    revoked_by     text,
    revoke_reason  text,
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE INDEX cards_subject ON cards (subject_id);
-- The replicas load only these: revoked cards not yet expired.
CREATE INDEX cards_revoked ON cards (expires_at) WHERE revoked_at IS NOT NULL;

-- Community workers issue cards and declare for their holders: a role credentials may carry.
ALTER TABLE admin_credentials DROP CONSTRAINT admin_credentials_roles_check;
ALTER TABLE admin_credentials ADD CONSTRAINT admin_credentials_roles_check CHECK (
    cardinality(roles) > 0
    AND roles <@ ARRAY['operator', 'health_officer', 'auditor', 'community_worker']::text[]
);

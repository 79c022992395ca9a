-- Subject-keyed tables lead with subject_id so a distributed Postgres (Citus) could shard by it.

CREATE TABLE subjects (
    id           bytea PRIMARY KEY CHECK (length(id) = 16),
    user_hash    bytea NOT NULL UNIQUE,      -- HMAC(server secret, issuer|user id): lookups
    user_id_enc  bytea NOT NULL,             -- AES-GCM sealed user id: audited tracing only
    name_masked  text  NOT NULL,             -- never the full name
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE declarations (
    subject_id       bytea NOT NULL REFERENCES subjects (id),
    id               bigint GENERATED ALWAYS AS IDENTITY,
    idempotency_key  text,
    request_hash     bytea NOT NULL,
    temperature_c    numeric(4, 1) NOT NULL,
    symptoms         text[] NOT NULL,
    regions          text[] NOT NULL,
    close_contact    boolean NOT NULL,
    declared_at      timestamptz NOT NULL,
    PRIMARY KEY (subject_id, id),
    UNIQUE (subject_id, idempotency_key)
);

CREATE TABLE overrides (
    subject_id   bytea NOT NULL REFERENCES subjects (id),
    id           bigint GENERATED ALWAYS AS IDENTITY,
    color        text NOT NULL CHECK (color IN ('green', 'yellow', 'red')),
    reason       text NOT NULL,
    valid_from   timestamptz NOT NULL,
    valid_until  timestamptz,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (subject_id, id)
);

CREATE TABLE exposures (
    subject_id   bytea NOT NULL REFERENCES subjects (id),
    id           bigint GENERATED ALWAYS AS IDENTITY,
    color        text NOT NULL CHECK (color IN ('green', 'yellow', 'red')),
    reason       text NOT NULL,
    source       text NOT NULL,
    valid_from   timestamptz NOT NULL,
    valid_until  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (subject_id, id)
);

-- The truth of each subject's status; Redis holds the hot copy. color NULL = no valid status.
-- cached_version lags version when a Redis write failed; the sync worker repairs it.
CREATE TABLE statuses (
    subject_id      bytea PRIMARY KEY REFERENCES subjects (id),
    color           text CHECK (color IN ('green', 'yellow', 'red')),
    reason          text,
    valid_until     timestamptz NOT NULL,
    version         bigint NOT NULL,
    cached_version  bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX statuses_unsynced ON statuses (subject_id) WHERE cached_version < version;

CREATE TABLE terminals (
    id          uuid PRIMARY KEY,
    place       text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,       -- SHA-256 of the key; the key itself is shown once
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- One partition per UTC day, created on demand by the drain; retention drops whole partitions.
CREATE TABLE scans (
    scanned_at     timestamptz NOT NULL,     -- server clock
    scan_id        uuid NOT NULL,
    terminal_time  timestamptz,              -- the terminal's clock, kept apart
    terminal_id    uuid NOT NULL,
    place          text NOT NULL,
    subject_id     bytea,
    decision       text NOT NULL,
    reason         text NOT NULL,
    color          text,
    PRIMARY KEY (scanned_at, scan_id)
) PARTITION BY RANGE (scanned_at);

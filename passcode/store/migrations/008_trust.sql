-- Issue 14: the trust store of foreign signers that operators import (DESIGN §1, §3).
-- Every replica caches it whole and reloads it when catalog_versions' 'trust' row moves
-- (bumped in the same transaction as each change below).

-- EU DCC document signer certificates, by kid (the first 8 bytes of SHA-256 of the DER).
CREATE TABLE trust_dcc_signers (
    kid          bytea PRIMARY KEY CHECK (octet_length(kid) = 8),
    der          bytea NOT NULL CHECK (octet_length(der) BETWEEN 1 AND 16384),
    country      text,
    source       text NOT NULL CHECK (source IN ('trust-list', 'certificates', 'der-list')),
    imported_at  timestamptz NOT NULL DEFAULT now(),
    imported_by  text NOT NULL
);

-- SMART Health Card issuers: the public JWKS as imported (public members only) and the
-- revocation lists, one per kid, in the spec's shape ({"kid", "method": "rid", "ctr",
-- "rids": ["rid" or "rid.timestamp", ...]}).
CREATE TABLE trust_shc_issuers (
    iss          text PRIMARY KEY CHECK (iss ~ '^https://' AND length(iss) <= 512),
    name         text,
    jwks         jsonb NOT NULL,
    crls         jsonb NOT NULL DEFAULT '{}'::jsonb,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    imported_by  text NOT NULL
);

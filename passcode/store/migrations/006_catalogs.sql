-- Issue 14: catalogs every replica caches in process (the trust store, places and their
-- policies, revoked cards). A change bumps its catalog's version in the same transaction;
-- every replica polls these few rows and reloads a catalog whose version moved.
CREATE TABLE catalog_versions (
    name        text PRIMARY KEY,
    version     bigint NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

-- Issue 14: places and their policies. A place's id is the place text its terminals carry
-- (terminals.place); its type (metro, hospital, mall, …) picks the policy it gets when it has
-- none of its own.
CREATE TABLE places (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every change of a type's or a place's policy is a new version (the highest is in force);
-- a version is never changed or removed, so what a place accepted at any time can be read back.
CREATE TABLE place_policies (
    scope    text NOT NULL CHECK (scope IN ('type', 'place')),
    target   text NOT NULL,                   -- the place type, or the place id
    version  integer NOT NULL CHECK (version > 0),
    policy   jsonb NOT NULL,                  -- {"accepts": [kinds], "rules": [CertLogic rules]}
    set_by   text NOT NULL,                   -- the actor, as the audit log names it
    set_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, target, version)
);

CREATE FUNCTION place_policies_are_versioned() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'place_policies keeps every version (% refused): insert a new one', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER place_policies_no_update_delete BEFORE UPDATE OR DELETE ON place_policies
    FOR EACH ROW EXECUTE FUNCTION place_policies_are_versioned();

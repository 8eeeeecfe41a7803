-- Keys are published before they sign: a key is created (and served in the JWKS) as the
-- next key, with no activation time; a rotation schedules it to sign from `activates_at`,
-- once every cache of the JWKS has had time to fetch it.
ALTER TABLE signing_keys ADD COLUMN activates_at TEXT;
UPDATE signing_keys SET activates_at = created_at;

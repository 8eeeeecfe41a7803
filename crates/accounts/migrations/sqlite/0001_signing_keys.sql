-- Keys that sign access tokens. The JWKS serves every key whose tokens may still be alive.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL CHECK (alg IN ('RS256', 'EdDSA')),
    public_jwk  TEXT NOT NULL,            -- the public JWK, as served
    private_key BLOB NOT NULL,            -- PKCS#8 DER, encrypted at rest
    created_at  TEXT NOT NULL,
    retired_at  TEXT,                     -- stops signing from here on
    expires_at  TEXT                      -- leaves the JWKS from here on
);
CREATE INDEX signing_keys_expires_at ON signing_keys (expires_at);

-- Payments, in integer minor units of their ISO 4217 currency.
CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    owner           TEXT NOT NULL,            -- the subject of the token that created it
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'processing', 'succeeded', 'failed', 'canceled')),
    amount_minor    BIGINT NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL CHECK (length(currency) = 3),
    description     TEXT NOT NULL,
    payment_method  TEXT NOT NULL,
    failure_code    TEXT,
    failure_message TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,  -- provider calls so far
    lease_until     TIMESTAMPTZ,                      -- held by a processor (or not retried) until then
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX payments_owner_created ON payments (owner, created_at DESC, id DESC);
CREATE INDEX payments_created ON payments (created_at DESC, id DESC);
CREATE INDEX payments_work ON payments (status, lease_until);

-- Idempotency keys, scoped to the principal. A row with locked_at set and no response is a
-- request in flight (or one that died: it is taken over after the lock timeout).
CREATE TABLE idempotency_keys (
    principal       TEXT NOT NULL,
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,            -- SHA-256 of method, path and body
    locked_at       TIMESTAMPTZ,
    response_status INTEGER,
    response_body   TEXT,
    payment_id      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

-- Every state change, as the CloudEvent it produces, written in the same transaction as the
-- change: the payment's history, the event feed and the outbox.
CREATE TABLE payment_events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    payment_id   TEXT NOT NULL REFERENCES payments (id),
    owner        TEXT NOT NULL,
    type         TEXT NOT NULL,
    event        JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ
);
CREATE INDEX payment_events_payment ON payment_events (payment_id, seq);
CREATE INDEX payment_events_owner ON payment_events (owner, seq);

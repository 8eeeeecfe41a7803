-- no-transaction
-- Authorize-then-capture and refunds. SQLite cannot change a CHECK constraint in place, so
-- the payments table is rebuilt (the documented 12-step procedure: foreign keys off, copy,
-- swap, check, all in one transaction).
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE payments_new (
    id              TEXT PRIMARY KEY,
    owner           TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'processing', 'requires_capture', 'succeeded', 'failed', 'canceled')),
    amount_minor    BIGINT NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL CHECK (length(currency) = 3),
    description     TEXT NOT NULL,
    payment_method  TEXT NOT NULL,
    failure_code    TEXT,
    failure_message TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_until     TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    capture_method  TEXT NOT NULL DEFAULT 'automatic' CHECK (capture_method IN ('automatic', 'manual')),
    amount_captured_minor   BIGINT NOT NULL DEFAULT 0,
    amount_refunded_minor   BIGINT NOT NULL DEFAULT 0,
    capture_requested_minor BIGINT,
    capture_before          TEXT,
    cancellation_reason     TEXT,
    attention_at            TEXT,
    CONSTRAINT payments_amounts_check
        CHECK (amount_refunded_minor >= 0 AND amount_refunded_minor <= amount_captured_minor
               AND amount_captured_minor <= amount_minor)
);
INSERT INTO payments_new (id, owner, status, amount_minor, currency, description, payment_method,
    failure_code, failure_message, attempts, lease_until, created_at, updated_at, amount_captured_minor)
SELECT id, owner, status, amount_minor, currency, description, payment_method,
    failure_code, failure_message, attempts, lease_until, created_at, updated_at,
    CASE WHEN status = 'succeeded' THEN amount_minor ELSE 0 END
FROM payments;
DROP TABLE payments;
ALTER TABLE payments_new RENAME TO payments;
CREATE INDEX payments_owner_created ON payments (owner, created_at DESC, id DESC);
CREATE INDEX payments_created ON payments (created_at DESC, id DESC);
CREATE INDEX payments_work ON payments (status, lease_until);
CREATE INDEX payments_authorizations ON payments (status, capture_before);

CREATE TABLE refunds (
    id              TEXT PRIMARY KEY,
    payment_id      TEXT NOT NULL REFERENCES payments (id),
    owner           TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    amount_minor    BIGINT NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL,
    reason          TEXT,
    failure_code    TEXT,
    failure_message TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_until     TEXT,
    attention_at    TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id, created_at DESC, id DESC);
CREATE INDEX refunds_work ON refunds (status, lease_until);

ALTER TABLE sandbox_calls ADD COLUMN operation TEXT NOT NULL DEFAULT 'charge';
ALTER TABLE sandbox_calls ADD COLUMN outcome TEXT;
COMMIT;
PRAGMA foreign_keys = ON;

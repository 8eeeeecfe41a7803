-- Authorize-then-capture and refunds.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'processing', 'requires_capture', 'succeeded', 'failed', 'canceled'));
ALTER TABLE payments
    ADD COLUMN capture_method TEXT NOT NULL DEFAULT 'automatic'
        CHECK (capture_method IN ('automatic', 'manual')),
    ADD COLUMN amount_captured_minor BIGINT NOT NULL DEFAULT 0,   -- what the provider took
    ADD COLUMN amount_refunded_minor BIGINT NOT NULL DEFAULT 0,   -- pending and succeeded refunds
    ADD COLUMN capture_requested_minor BIGINT,                    -- a manual capture asked for, not yet confirmed
    ADD COLUMN capture_before TIMESTAMPTZ,                        -- an authorization is released after this
    ADD COLUMN cancellation_reason TEXT,
    ADD COLUMN attention_at TIMESTAMPTZ;                          -- flagged for a person (outcome unresolved too long)
UPDATE payments SET amount_captured_minor = amount_minor WHERE status = 'succeeded';
-- Refunds never add up to more than was captured: the database holds the line, whatever
-- the number of replicas and concurrent requests.
ALTER TABLE payments ADD CONSTRAINT payments_amounts_check
    CHECK (amount_refunded_minor >= 0 AND amount_refunded_minor <= amount_captured_minor
           AND amount_captured_minor <= amount_minor);
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
    attempts        INTEGER NOT NULL DEFAULT 0,  -- claims so far (each may have called the provider)
    lease_until     TIMESTAMPTZ,
    attention_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id, created_at DESC, id DESC);
CREATE INDEX refunds_work ON refunds (status, lease_until);

-- The sandbox's ledger records every kind of call and what it answered, so it can be asked
-- afterwards what happened to a call whose answer was lost.
ALTER TABLE sandbox_calls
    ADD COLUMN operation TEXT NOT NULL DEFAULT 'charge',
    ADD COLUMN outcome TEXT;

-- The sandbox provider's own record of every charge call it received (a real provider's
-- dashboard): written when the call arrives, so it survives whatever happens to the caller.
CREATE TABLE sandbox_calls (
    id          BIGSERIAL PRIMARY KEY,
    payment_id  TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX sandbox_calls_payment ON sandbox_calls (payment_id);

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
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX payments_owner_created ON payments (owner, created_at DESC, id DESC);
CREATE INDEX payments_status ON payments (status);

-- The relay claims a batch of events for a short lease instead of holding a transaction open
-- while it waits for the broker: other relays skip claimed rows until the lease runs out.
ALTER TABLE payment_events ADD COLUMN relay_lease_until TEXT;

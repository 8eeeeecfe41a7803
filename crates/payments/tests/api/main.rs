//! Payments, served for real on port 0, each test on a fresh SQLite file and a fresh
//! PostgreSQL database.

mod helpers;
mod payments;
mod probes;

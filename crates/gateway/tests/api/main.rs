//! The gateway, served for real on port 0 in front of real upstreams on port 0.

mod failures;
mod helpers;
mod routing;

//! Addresses and packets every part of the overlay shares: the address plan, prefixes, other
//! VPNs' routes, the packet views, GSO batches, busy-polling and traffic counters.

pub mod addressing;
pub mod batch;
pub mod counters;
pub mod prefix;
pub mod routes;
pub mod spin;
pub mod wire;

//! overlay-core: the sans-IO heart of overlay.
//!
//! Everything that decides lives here as plain types and functions: the address plan, the peer
//! table and the routing decision for every decrypted packet, the classification of datagrams on
//! the relay's one UDP port, wire formats and configuration files. Nothing here opens a socket or
//! reads the clock; callers pass `now` in and perform the actions that come back.

pub mod addressing;
pub mod api;
pub mod batch;
pub mod capture;
pub mod catalog;
pub mod control;
pub mod counters;
pub mod cpu_latency;
pub mod datagram;
pub mod devconfig;
pub mod dns;
pub mod duration;
pub mod gateway;
pub mod http1;
pub mod intercept;
pub mod join;
pub mod key;
pub mod node;
pub mod peers;
pub mod prefix;
pub mod registry;
pub mod relay;
pub mod resolver;
pub mod routes;
pub mod spin;
pub mod stream;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
pub mod wgconfig;
pub mod wire;
pub mod wsframe;

/// Whether boringtun runs on simulated time (the feature `sim-time`, for tests only): a binary
/// built so would never rekey or send keepalives, so the binaries refuse to start.
pub const SIMULATED_TIME: bool = cfg!(feature = "sim-time");

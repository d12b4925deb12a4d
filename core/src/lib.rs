//! overlay-core: the sans-IO heart of overlay.
//!
//! Everything that decides lives here as plain types and functions: the address plan, the peer
//! table and the routing decision for every decrypted packet, the classification of datagrams on
//! the relay's one UDP port, wire formats and configuration files. Nothing here opens a socket or
//! reads the clock; callers pass `now` in and perform the actions that come back.
//!
//! One folder per product line: `net` (addresses and packets everyone shares), `relay` (the hub,
//! its peer table, catalog and gateway), `node` (the laptop's tunnel), `names` (registry, DNS,
//! resolver), `identity` (keys, tokens, joining), `transport` (control channel, TCP transport),
//! `traffic` (the inspector's capture and decoders), `intercept`, `devconfig` (what `overlay dev`
//! reads), and `api` (the typed local API of every CLI and its server).

pub mod api;
pub mod devconfig;
pub mod duration;
pub mod identity;
pub mod intercept;
pub mod names;
pub mod net;
pub mod node;
pub mod relay;
#[cfg(feature = "testing")]
pub mod testing;
pub mod traffic;
pub mod transport;

/// Whether boringtun runs on simulated time (the feature `sim-time`, for tests only): a binary
/// built so would never rekey or send keepalives, so the binaries refuse to start.
pub const SIMULATED_TIME: bool = cfg!(feature = "sim-time");

//! The overlay over a TCP stream, for networks where UDP to the relay cannot pass: WireGuard
//! datagrams, unchanged, one per WebSocket binary message, after an HTTP/1.1 Upgrade that
//! ingresses and proxies pass ([`ws`], [`upgrade`]); where the relay is ([`url`]) and which
//! proxy leads there ([`proxy`]); when the node uses the stream and when it goes back to UDP
//! ([`transport`]); and how the relay's hub tells a stream from a UDP peer ([`addr`]).
//!
//! All of it is sans-IO: the node and the relay move the bytes.

pub mod addr;
pub mod proxy;
pub mod transport;
pub mod upgrade;
pub mod url;
pub mod ws;

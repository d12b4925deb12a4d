//! How a node talks to the relay besides its packets: the control channel inside the tunnel
//! and the TCP/WebSocket transport for networks that block UDP.

pub mod control;
pub mod stream;

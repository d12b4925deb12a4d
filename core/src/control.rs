//! The control channel between a node and the relay, inside the tunnel.
//!
//! A node sends a UDP datagram from its own overlay address to the relay's overlay address,
//! port [`CONTROL_PORT`]; WireGuard has already authenticated the sender, and the relay's
//! anti-spoofing check ties the source address to the node. Requests and replies are JSON,
//! one per datagram, matched by `id`; the node retries until it gets the reply.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The relay's control port on its overlay address.
pub const CONTROL_PORT: u16 = 4100;

/// Largest control datagram payload (fits one inner packet at MTU 1420 with room to spare).
pub const MAX_CONTROL_LEN: usize = 1300;

/// Bytes a registry delta may take inside a reply (the rest is the reply's envelope).
pub const DELTA_BUDGET: usize = crate::registry::sync::MIN_PULL_BYTES;

/// The id of unsolicited notices from the relay (replies never use it).
pub const NOTICE_ID: u64 = 0;

/// What a node asks the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Liveness and round trip.
    Ping,
    /// Deregister this node: its name and prefix become free.
    Leave,
    /// Register a service of this node; the reply carries the instance with its address.
    Register {
        /// Service name.
        name: String,
        /// Optional tag.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
        /// Port callers use.
        port: u16,
        /// Protocol.
        #[serde(default)]
        protocol: crate::registry::Protocol,
    },
    /// Remove a service of this node.
    Unregister {
        /// Service name.
        name: String,
        /// Optional tag.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
    },
    /// Registry changes or a snapshot page; the reply's data is a `registry::Delta`.
    Pull {
        /// What to pull.
        want: crate::registry::Pull,
    },
    /// Make a name the remote environment resolves reachable (a remote name on demand); the
    /// reply's data is the `ServiceInstance` it maps to.
    Lookup {
        /// The name as the node was asked for it: a single label, or a name under one of the
        /// relay's on-demand suffixes.
        name: String,
    },
}

/// A request with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlMessage {
    /// Chosen by the node; echoed in the reply.
    pub id: u64,
    /// The request.
    #[serde(flatten)]
    pub request: ControlRequest,
}

/// The relay's reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ControlReply {
    /// Done.
    Ok {
        /// The request's id.
        id: u64,
        /// Any result.
        #[serde(default)]
        data: serde_json::Value,
    },
    /// Refused or failed.
    Error {
        /// The request's id.
        id: u64,
        /// One sentence.
        message: String,
    },
}

/// Longest error message in a reply: messages may quote the request, and the reply must still
/// fit one datagram the node accepts.
pub const MAX_ERROR_LEN: usize = 400;

impl ControlReply {
    /// An error reply whose message is cut to [`MAX_ERROR_LEN`] bytes (on a character boundary).
    pub fn error(id: u64, message: &str) -> ControlReply {
        let cut = message.len() > MAX_ERROR_LEN;
        let mut end = message.len().min(MAX_ERROR_LEN);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let mut message = message[..end].to_string();
        if cut {
            message.push('…');
        }
        ControlReply::Error { id, message }
    }

    /// The id this reply answers.
    pub fn id(&self) -> u64 {
        match self {
            ControlReply::Ok { id, .. } | ControlReply::Error { id, .. } => *id,
        }
    }
}

/// Why a control datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Larger than [`MAX_CONTROL_LEN`].
    #[error("control message too large ({0} bytes)")]
    TooLarge(usize),
    /// Not valid JSON of the expected shape.
    #[error("malformed control message: {0}")]
    Malformed(String),
}

/// Parses a control request payload.
pub fn parse_request(payload: &[u8]) -> Result<ControlMessage, ControlError> {
    if payload.len() > MAX_CONTROL_LEN {
        return Err(ControlError::TooLarge(payload.len()));
    }
    serde_json::from_slice(payload).map_err(|e| ControlError::Malformed(e.to_string()))
}

/// Parses a control reply payload.
pub fn parse_reply(payload: &[u8]) -> Result<ControlReply, ControlError> {
    if payload.len() > MAX_CONTROL_LEN {
        return Err(ControlError::TooLarge(payload.len()));
    }
    serde_json::from_slice(payload).map_err(|e| ControlError::Malformed(e.to_string()))
}

/// A notice the relay pushes to nodes: the registry moved to this position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryNotice {
    /// The relay's registry epoch.
    pub epoch: u64,
    /// Its sequence number.
    pub seq: u64,
}

/// Encodes a message (request or reply) as a datagram payload.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).unwrap_or_default()
}

/// Whether the IPv4 `packet` belongs to the control channel with the relay at `relay`: UDP to
/// or from its [`CONTROL_PORT`]. The node's own chatter (liveness pings, registry sync), not
/// its applications' traffic.
pub fn is_control_packet(packet: &[u8], relay: Ipv4Addr) -> bool {
    let Ok(p) = crate::packet::Ipv4Packet::new_checked(packet) else {
        return false;
    };
    let Some(u) = crate::packet::udp(&p) else {
        return false;
    };
    (p.dst() == relay && u.dst_port == CONTROL_PORT)
        || (p.src() == relay && u.src_port == CONTROL_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{build_echo_request, build_udp};

    #[test]
    fn control_packets_are_told_from_application_traffic() {
        let node = Ipv4Addr::new(100, 64, 4, 1);
        let relay = Ipv4Addr::new(100, 64, 0, 1);
        let other = Ipv4Addr::new(100, 64, 4, 66);
        assert!(is_control_packet(
            &build_udp(node, 40000, relay, CONTROL_PORT, b"{}"),
            relay
        ));
        assert!(is_control_packet(
            &build_udp(relay, CONTROL_PORT, node, 40000, b"{}"),
            relay
        ));
        // The same port elsewhere, another port on the relay, not UDP, not a packet.
        assert!(!is_control_packet(
            &build_udp(node, 40000, other, CONTROL_PORT, b""),
            relay
        ));
        assert!(!is_control_packet(
            &build_udp(relay, 53, node, CONTROL_PORT, b""),
            relay
        ));
        assert!(!is_control_packet(
            &build_echo_request(node, relay, 1, 1, b""),
            relay
        ));
        assert!(!is_control_packet(&[0x45, 0, 0], relay));
    }

    #[test]
    fn request_roundtrip() {
        let m = ControlMessage {
            id: 7,
            request: ControlRequest::Leave,
        };
        let bytes = encode(&m);
        assert_eq!(bytes, br#"{"id":7,"op":"leave"}"#);
        assert_eq!(parse_request(&bytes).unwrap(), m);
    }

    #[test]
    fn lookup_roundtrip() {
        let m = ControlMessage {
            id: 9,
            request: ControlRequest::Lookup {
                name: "redis".into(),
            },
        };
        let bytes = encode(&m);
        assert_eq!(bytes, br#"{"id":9,"op":"lookup","name":"redis"}"#);
        assert_eq!(parse_request(&bytes).unwrap(), m);
    }

    #[test]
    fn reply_roundtrip() {
        let r = ControlReply::Error {
            id: 3,
            message: "no".into(),
        };
        assert_eq!(parse_reply(&encode(&r)).unwrap(), r);
        assert_eq!(r.id(), 3);
    }

    #[test]
    fn long_error_replies_still_fit_a_datagram() {
        // Found by the relay_hub fuzz target: an error quoting a 1,200-byte name did not fit.
        let r = ControlReply::error(u64::MAX, &"é".repeat(2000));
        assert!(encode(&r).len() <= MAX_CONTROL_LEN);
        assert!(parse_reply(&encode(&r)).is_ok());
        let short = ControlReply::error(1, "no");
        assert_eq!(
            short,
            ControlReply::Error {
                id: 1,
                message: "no".into()
            }
        );
    }

    #[test]
    fn refuses_bad_input() {
        assert!(matches!(
            parse_request(b"{"),
            Err(ControlError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(br#"{"id":1,"op":"fly"}"#),
            Err(ControlError::Malformed(_))
        ));
        assert!(matches!(
            parse_request(&[b' '; 2000]),
            Err(ControlError::TooLarge(2000))
        ));
    }
}

//! The control channel between a node and the relay, inside the tunnel.
//!
//! A node sends a UDP datagram from its own overlay address to the relay's overlay address,
//! port [`CONTROL_PORT`]; WireGuard has already authenticated the sender, and the relay's
//! anti-spoofing check ties the source address to the node. Requests and replies are JSON,
//! one per datagram, matched by `id`; the node retries until it gets the reply.
//!
//! On the node the channel is the daemon's alone: it hands its requests straight to the tunnel
//! and receives the relay's datagrams from it, and the data path keeps the TUN device out of it
//! ([`owner`]), so other local users can neither send requests as the node nor read replies.

use crate::net::wire::{self, IpProtocol, Ipv4Packet};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The relay's control port on its overlay address.
pub const CONTROL_PORT: u16 = 4100;

/// Largest control datagram payload (fits one inner packet at MTU 1420 with room to spare).
pub const MAX_CONTROL_LEN: usize = 1300;

/// Bytes a registry delta may take inside a reply (the rest is the reply's envelope).
pub const DELTA_BUDGET: usize = crate::names::registry::sync::MIN_PULL_BYTES;

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
        protocol: crate::names::registry::Protocol,
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
        want: crate::names::registry::Pull,
    },
    /// Make a name the remote environment resolves reachable (a remote name on demand); the
    /// reply's data is the `ServiceInstance` it maps to.
    Lookup {
        /// The name as the node was asked for it: a single label, or a name under one of the
        /// relay's on-demand suffixes.
        name: String,
    },
    /// Send the remote environment's callers of `service` (a catalog service with a front) to
    /// this node's instance of it: every connection, or only requests with `header`. The reply's
    /// data is an [`InterceptStarted`]; it acknowledges a change.
    Intercept {
        /// The service.
        service: String,
        /// Only requests with this header.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<crate::intercept::HeaderMatch>,
    },
    /// End this node's intercept of `service`; the reply's data is an [`InterceptStopped`].
    InterceptStop {
        /// The service.
        service: String,
    },
    /// Every node's intercepts from the `skip`th on, as many as fit a datagram; the reply's data
    /// is an [`InterceptPage`].
    Intercepts {
        /// Intercepts already read.
        #[serde(default)]
        skip: u32,
    },
}

/// The answer to an intercept: what is intercepted, where callers arrive and where they go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptStarted {
    /// The intercept.
    #[serde(flatten)]
    pub intercept: crate::intercept::Intercept,
    /// The front the remote environment's callers arrive at.
    pub front: String,
    /// The node instance's overlay address and port they go to.
    pub target: String,
}

/// The answer to an intercept's stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptStopped {
    /// Whether the node had an intercept of the service (now ended).
    pub stopped: bool,
}

/// One page of the relay's intercepts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptPage {
    /// Intercepts from the asked position on.
    pub intercepts: Vec<crate::intercept::Intercept>,
    /// How many there are in all.
    pub total: u32,
}

/// Bytes a page of intercepts may take inside a reply.
pub const INTERCEPT_PAGE_BUDGET: usize = 1000;

impl InterceptPage {
    /// The page of `all` starting at `skip` that fits [`INTERCEPT_PAGE_BUDGET`] (at least one
    /// entry, which always fits: names and headers are bounded).
    pub fn of(all: &[crate::intercept::Intercept], skip: u32) -> InterceptPage {
        let mut page = InterceptPage {
            intercepts: Vec::new(),
            total: u32::try_from(all.len()).unwrap_or(u32::MAX),
        };
        let mut used = 40;
        for i in all.iter().skip(skip as usize) {
            let n = serde_json::to_vec(i).map_or(usize::MAX, |v| v.len() + 1);
            if !page.intercepts.is_empty() && used + n > INTERCEPT_PAGE_BUDGET {
                break;
            }
            used += n;
            page.intercepts.push(i.clone());
        }
        page
    }
}

/// Longest `forwarded_for` in a caller notice (the rest is cut: the notice must fit a datagram).
pub const MAX_FORWARDED_LEN: usize = 512;

/// A notice from the relay ([`NOTICE_ID`]): the real caller of a connection the relay opens
/// from its own overlay address to a node service (a callback, or an intercepted request). It
/// goes out before the connection's first packet; the node's capture shows the caller instead
/// of the relay's address. Only the relay can send it (see [`owner`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerNotice {
    /// The caller.
    pub caller: Caller,
}

/// The caller behind one connection from the relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The node service's overlay address and port the connection goes to.
    pub service: std::net::SocketAddrV4,
    /// The relay's source port of that connection.
    pub port: u16,
    /// The caller's `ip:port` as the relay saw it.
    pub address: String,
    /// What the caller's proxy said (`X-Forwarded-For`, or `Forwarded`), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<String>,
    /// How it came in: `callback`, `host` (the HTTP router) or `front` (an intercept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl Caller {
    /// The notice's payload, with `forwarded_for` cut to [`MAX_FORWARDED_LEN`] bytes.
    pub fn notice(mut self) -> Vec<u8> {
        if let Some(f) = self.forwarded_for.as_mut() {
            let mut end = f.len().min(MAX_FORWARDED_LEN);
            while !f.is_char_boundary(end) {
                end -= 1;
            }
            f.truncate(end);
        }
        encode(&ControlReply::Ok {
            id: NOTICE_ID,
            data: serde_json::to_value(CallerNotice { caller: self }).unwrap_or_default(),
        })
    }
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
        /// What kind of failure, where the node acts on it (absent: any other).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
    },
}

/// Failures a node tells apart in an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A lookup's name does not exist: the remote environment said so (NXDOMAIN), as opposed
    /// to a lookup that failed or timed out.
    NotFound,
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
        ControlReply::Error {
            id,
            message,
            code: None,
        }
    }

    /// An error reply carrying `code`.
    pub fn error_with(id: u64, code: ErrorCode, message: &str) -> ControlReply {
        match ControlReply::error(id, message) {
            ControlReply::Error { id, message, .. } => ControlReply::Error {
                id,
                message,
                code: Some(code),
            },
            other => other,
        }
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

/// Who an inner packet on a node belongs to (see [`owner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Applications' traffic: carried between the TUN device and the tunnel.
    Applications,
    /// The control channel with the relay: only the daemon sends it and only the daemon reads
    /// it, so it never comes from or goes to the TUN device.
    Daemon,
}

/// Who the IPv4 packet `p` belongs to on a node whose relay is at `relay`: UDP to or from the
/// relay's own address is the daemon's, everything else the applications'.
///
/// The relay's address speaks UDP only on [`CONTROL_PORT`], so all of its UDP is claimed, which
/// also covers fragments (only the first one carries the port; a later one's payload can look
/// like any UDP header). The node's data path asks this once per packet in both directions: a
/// packet a local program wrote to the TUN device that the daemon owns is dropped (no local
/// program can send control requests), and one from the tunnel goes to the daemon's control
/// client instead of the TUN device (no local program can read replies and notices). A byte
/// and two addresses: cheap enough for the hot path.
pub fn owner(p: &Ipv4Packet<&[u8]>, relay: Ipv4Addr) -> Owner {
    if p.next_header() == IpProtocol::Udp && (p.dst_addr() == relay || p.src_addr() == relay) {
        Owner::Daemon
    } else {
        Owner::Applications
    }
}

/// The inner packet that carries a control request `payload` from the daemon: UDP from
/// `node:CONTROL_PORT` to `relay:CONTROL_PORT`. The daemon hands it straight to the tunnel.
pub fn request_packet(node: Ipv4Addr, relay: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    wire::build_udp(node, CONTROL_PORT, relay, CONTROL_PORT, payload)
}

/// The payload of a control datagram from the relay to the daemon at `node`, or `None` for
/// anything else: not whole IPv4 (a fragment), not UDP, or not from `relay:CONTROL_PORT` to
/// `node:CONTROL_PORT`. What it returns is what [`parse_reply`] reads.
pub fn reply_payload(packet: &[u8], node: Ipv4Addr, relay: Ipv4Addr) -> Option<&[u8]> {
    let p = wire::ipv4(packet).ok()?;
    if p.src_addr() != relay || p.dst_addr() != node {
        return None;
    }
    // A fragment is refused here: only the first one has the ports.
    let u = wire::udp(&p).ok()?;
    (u.src_port() == CONTROL_PORT && u.dst_port() == CONTROL_PORT).then_some(u.payload())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::wire::{build_echo_request, build_ipv4, build_udp, IpProtocol};

    const NODE: Ipv4Addr = Ipv4Addr::new(100, 64, 4, 1);
    const RELAY: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

    fn owner_of(p: &[u8]) -> Owner {
        owner(&wire::ipv4(p).unwrap(), RELAY)
    }

    #[test]
    fn udp_with_the_relay_is_the_daemons() {
        // What a local program would send (leave, from any port), and the relay's replies.
        let leave = br#"{"id":1,"op":"leave"}"#;
        assert_eq!(
            owner_of(&build_udp(NODE, 40000, RELAY, CONTROL_PORT, leave)),
            Owner::Daemon
        );
        assert_eq!(owner_of(&request_packet(NODE, RELAY, leave)), Owner::Daemon);
        assert_eq!(
            owner_of(&build_udp(RELAY, CONTROL_PORT, NODE, 40000, b"{}")),
            Owner::Daemon
        );
        // Another port of the relay, and a later fragment (its payload can fake a header).
        assert_eq!(
            owner_of(&build_udp(NODE, 40000, RELAY, 53, b"")),
            Owner::Daemon
        );
        let mut frag = build_udp(NODE, 40000, RELAY, 9, leave);
        frag[6] = 0x00;
        frag[7] = 0xb9;
        assert_eq!(owner_of(&frag), Owner::Daemon);
    }

    #[test]
    fn everything_else_is_the_applications() {
        let other = Ipv4Addr::new(100, 64, 4, 66);
        // The control port of another address (a node), ping and TCP with the relay (callbacks).
        for p in [
            build_udp(NODE, 40000, other, CONTROL_PORT, b""),
            build_udp(other, CONTROL_PORT, NODE, CONTROL_PORT, b""),
            build_echo_request(NODE, RELAY, 1, 1, b""),
            build_echo_request(RELAY, NODE, 1, 1, b""),
            build_ipv4(RELAY, NODE, IpProtocol::Tcp, &[0; 20]),
            build_ipv4(NODE, RELAY, IpProtocol::Tcp, &[0; 20]),
        ] {
            assert_eq!(owner_of(&p), Owner::Applications);
        }
    }

    #[test]
    fn the_daemon_reads_only_the_relays_control_datagrams() {
        let r = encode(&ControlReply::Ok {
            id: 5,
            data: serde_json::Value::Null,
        });
        let good = build_udp(RELAY, CONTROL_PORT, NODE, CONTROL_PORT, &r);
        assert_eq!(reply_payload(&good, NODE, RELAY), Some(&r[..]));
        assert_eq!(
            parse_reply(reply_payload(&good, NODE, RELAY).unwrap())
                .unwrap()
                .id(),
            5
        );
        let other = Ipv4Addr::new(100, 64, 4, 66);
        let mut frag = good.clone();
        frag[6] = 0x20;
        for bad in [
            build_udp(other, CONTROL_PORT, NODE, CONTROL_PORT, &r),
            build_udp(RELAY, 53, NODE, CONTROL_PORT, &r),
            build_udp(RELAY, CONTROL_PORT, NODE, 40000, &r),
            build_udp(RELAY, CONTROL_PORT, other, CONTROL_PORT, &r),
            build_ipv4(RELAY, NODE, IpProtocol::Tcp, &good[20..]),
            frag,
            good[..good.len() - 1].to_vec(),
            vec![0x45, 0, 0],
        ] {
            assert_eq!(reply_payload(&bad, NODE, RELAY), None, "{bad:?}");
        }
    }

    #[test]
    fn the_daemons_requests_parse_at_the_relay() {
        let m = ControlMessage {
            id: 2,
            request: ControlRequest::Ping,
        };
        let p = request_packet(NODE, RELAY, &encode(&m));
        let v = wire::ipv4(&p).unwrap();
        let u = wire::udp(&v).unwrap();
        assert_eq!(
            (v.src_addr(), u.src_port(), v.dst_addr(), u.dst_port()),
            (NODE, CONTROL_PORT, RELAY, CONTROL_PORT)
        );
        assert_eq!(parse_request(u.payload()).unwrap(), m);
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
            code: None,
        };
        assert_eq!(parse_reply(&encode(&r)).unwrap(), r);
        assert_eq!(r.id(), 3);
        // The code is left out when absent (older nodes read the same bytes), and kept.
        assert_eq!(encode(&r), br#"{"status":"error","id":3,"message":"no"}"#);
        let nf = ControlReply::error_with(4, ErrorCode::NotFound, "no such name");
        assert_eq!(
            encode(&nf),
            br#"{"status":"error","id":4,"message":"no such name","code":"not_found"}"#
        );
        assert_eq!(parse_reply(&encode(&nf)).unwrap(), nf);
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
                message: "no".into(),
                code: None,
            }
        );
    }

    #[test]
    fn intercept_requests_roundtrip() {
        let m = ControlMessage {
            id: 4,
            request: ControlRequest::Intercept {
                service: "orders".into(),
                header: Some(crate::intercept::HeaderMatch::parse("x-dev=alice").unwrap()),
            },
        };
        let bytes = encode(&m);
        assert_eq!(
            bytes,
            br#"{"id":4,"op":"intercept","service":"orders","header":{"name":"x-dev","value":"alice"}}"#
        );
        assert_eq!(parse_request(&bytes).unwrap(), m);
        for (json, want) in [
            (
                r#"{"id":5,"op":"intercept_stop","service":"orders"}"#,
                ControlRequest::InterceptStop {
                    service: "orders".into(),
                },
            ),
            (
                r#"{"id":5,"op":"intercepts"}"#,
                ControlRequest::Intercepts { skip: 0 },
            ),
        ] {
            assert_eq!(parse_request(json.as_bytes()).unwrap().request, want);
        }
    }

    #[test]
    fn intercept_pages_fit_a_reply() {
        let all: Vec<crate::intercept::Intercept> = (0..40)
            .map(|n| crate::intercept::Intercept {
                service: "a".repeat(63),
                node: format!("node-{n}"),
                tag: Some("t".repeat(63)),
                header: Some(
                    crate::intercept::HeaderMatch::new(&"h".repeat(64), &"v".repeat(256)).unwrap(),
                ),
                since: u64::MAX,
                seq: u64::MAX,
            })
            .collect();
        let mut seen = 0;
        while seen < all.len() {
            let page = InterceptPage::of(&all, seen as u32);
            assert!(!page.intercepts.is_empty());
            assert_eq!(page.total, 40);
            let reply = ControlReply::Ok {
                id: u64::MAX,
                data: serde_json::to_value(&page).unwrap(),
            };
            assert!(
                encode(&reply).len() <= MAX_CONTROL_LEN,
                "{}",
                encode(&reply).len()
            );
            seen += page.intercepts.len();
        }
        assert!(InterceptPage::of(&all, 99).intercepts.is_empty());
    }

    #[test]
    fn caller_notices_fit_and_read_back() {
        let c = Caller {
            service: "100.64.4.2:8080".parse().unwrap(),
            port: 20001,
            address: "[fd00::1]:65535".into(),
            forwarded_for: Some("é".repeat(2000)),
            via: Some("front".into()),
        };
        let bytes = c.clone().notice();
        assert!(bytes.len() <= MAX_CONTROL_LEN, "{}", bytes.len());
        let ControlReply::Ok { id, data } = parse_reply(&bytes).unwrap() else {
            panic!("not ok");
        };
        assert_eq!(id, NOTICE_ID);
        let back: CallerNotice = serde_json::from_value(data.clone()).unwrap();
        assert_eq!(back.caller.port, 20001);
        assert!(back.caller.forwarded_for.unwrap().len() <= MAX_FORWARDED_LEN);
        // Not a registry notice: an older node ignores it.
        assert!(serde_json::from_value::<RegistryNotice>(data).is_err());
    }

    /// The fuzz target's seeds (fuzz/seeds/control/, written by fuzz/seedgen) parse through the
    /// same functions the target calls, read back after encoding, and cover every intercept
    /// request and reply.
    #[test]
    fn the_control_fuzz_seeds_parse_and_cover_intercepts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/control");
        let mut requests = Vec::new();
        let mut replies = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap();
            // Regression seeds are inputs the fuzzer found; they need not parse.
            if name.starts_with("regression-") {
                continue;
            }
            if let Ok(m) = parse_request(&bytes) {
                assert_eq!(parse_request(&encode(&m)).unwrap(), m, "{name}");
                requests.push(m.request);
            } else {
                let r = parse_reply(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(parse_reply(&encode(&r)).unwrap(), r, "{name}");
                replies.push(r);
            }
        }
        let has = |f: &dyn Fn(&ControlRequest) -> bool| requests.iter().any(f);
        assert!(has(&|r| matches!(
            r,
            ControlRequest::Intercept {
                header: Some(_),
                ..
            }
        )));
        assert!(has(&|r| matches!(
            r,
            ControlRequest::Intercept { header: None, .. }
        )));
        assert!(has(&|r| matches!(r, ControlRequest::InterceptStop { .. })));
        assert!(has(&|r| matches!(
            r,
            ControlRequest::Intercepts { skip: 0 }
        )));
        assert!(has(
            &|r| matches!(r, ControlRequest::Intercepts { skip } if *skip > 0)
        ));
        let data = |r: &ControlReply| match r {
            ControlReply::Ok { data, .. } => Some(data.clone()),
            ControlReply::Error { .. } => None,
        };
        let reads = |f: &dyn Fn(serde_json::Value) -> bool| replies.iter().filter_map(data).any(f);
        assert!(reads(&|d| serde_json::from_value::<InterceptStarted>(d)
            .is_ok_and(|s| s.intercept.header.is_some())));
        assert!(reads(&|d| serde_json::from_value::<InterceptStarted>(d)
            .is_ok_and(|s| s.intercept.header.is_none())));
        assert!(reads(
            &|d| serde_json::from_value::<InterceptStopped>(d).is_ok()
        ));
        assert!(reads(
            &|d| serde_json::from_value::<InterceptPage>(d).is_ok_and(|p| !p.intercepts.is_empty())
        ));
        assert!(reads(&|d| serde_json::from_value::<CallerNotice>(d)
            .is_ok_and(|n| n.caller.via.as_deref() == Some("front"))));
        assert!(replies.iter().any(|r| matches!(
            r,
            ControlReply::Error { message, .. } if message.contains("already intercepted")
        )));
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

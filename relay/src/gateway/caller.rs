//! Telling a node who really calls: before the gateway opens a connection from the relay's
//! own address to a node service, it sends the node a control notice with the caller's
//! address (and what the caller's proxy said), keyed by the connection's source port. It
//! leaves through the same queue as the connection's SYN, so it arrives first; only the relay
//! can send from its address on the control port, so no node or local user can forge it.

use super::engine::Engine;
use overlay_core::net::addressing::{AddressPlan, NODE_PREFIX_LEN};
use overlay_core::net::prefix::Ipv4Prefix;
use overlay_core::transport::control::{Caller, CONTROL_PORT};
use std::net::{SocketAddr, SocketAddrV4};

/// The real caller behind a connection the relay opens to a node service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerInfo {
    /// The caller's address as the relay's listener saw it.
    pub address: SocketAddr,
    /// `X-Forwarded-For` (or `Forwarded`) as the caller sent it, if the relay read the request.
    pub forwarded_for: Option<String>,
    /// How it came in: `callback`, `host` or `front`.
    pub via: &'static str,
}

impl Engine {
    /// Queues the notice of `caller` for the node that runs `to`, for the connection from the
    /// relay's `port`.
    pub(super) fn announce(&mut self, caller: CallerInfo, to: SocketAddrV4, port: u16) {
        let prefix = Ipv4Prefix::containing(*to.ip(), NODE_PREFIX_LEN);
        let node = AddressPlan::node_addr(&prefix);
        let payload = Caller {
            service: to,
            port,
            address: caller.address.to_string(),
            forwarded_for: caller.forwarded_for,
            via: Some(caller.via.to_string()),
        }
        .notice();
        let packet = overlay_core::net::wire::build_udp(
            self.cfg.relay_addr,
            CONTROL_PORT,
            node,
            CONTROL_PORT,
            &payload,
        );
        self.dev.tx.push(packet);
    }
}

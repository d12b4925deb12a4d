//! UDP through the gateway, parsed by hand: one real connected socket per flow (node address
//! and port to remote address and port), datagrams relayed both ways, flows expire when idle.

use super::engine::{Engine, Tuple};
use super::{Control, GatewayStats, ToGateway};
use mio::{Interest, Token};
use overlay_core::net::wire;
use overlay_core::relay::gateway::Segment;
use std::collections::HashMap;
use std::io::ErrorKind;

/// Datagrams held per flow while its socket is being set up.
const MAX_PENDING: usize = 8;
/// Datagrams read per flow per wake-up, so one busy flow cannot starve the rest.
const READ_BATCH: usize = 256;

struct UdpFlow {
    tuple: Tuple,
    sock: Option<mio::net::UdpSocket>,
    pending: Vec<Vec<u8>>,
}

#[derive(Default)]
pub struct UdpFlows {
    flows: HashMap<usize, UdpFlow>,
    by_tuple: HashMap<Tuple, usize>,
}

impl UdpFlows {
    pub fn contains(&self, id: usize) -> bool {
        self.flows.contains_key(&id)
    }
}

impl Engine {
    /// A datagram from a node to a remote service.
    pub(super) fn udp_packet(&mut self, p: &ToGateway, seg: Segment) {
        let Some(payload) = wire::ipv4(&p.packet)
            .ok()
            .and_then(|ip| wire::udp(&ip).ok().map(|u| u.payload().to_vec()))
        else {
            GatewayStats::add(&self.stats.drop_no_flow, 1);
            return;
        };
        let tuple = (seg.src, seg.dst);
        let now = self.now_ms();
        if let Some(&id) = self.udp.by_tuple.get(&tuple) {
            self.table.touch(&id, now);
            let Some(f) = self.udp.flows.get_mut(&id) else {
                return;
            };
            match &f.sock {
                Some(s) => {
                    if s.send(&payload).is_ok() {
                        GatewayStats::add(&self.stats.bytes_up, payload.len() as u64);
                    }
                }
                None if f.pending.len() < MAX_PENDING => f.pending.push(payload),
                None => GatewayStats::add(&self.stats.drop_no_flow, 1),
            }
            return;
        }
        let Some(target) = p.target.as_deref().map(str::to_string) else {
            GatewayStats::add(&self.stats.drop_no_flow, 1);
            return;
        };
        let id = self.next_id();
        if let Err(e) = self.table.admit(id, &p.node, now) {
            GatewayStats::add(&self.stats.refused_limit, 1);
            tracing::debug!(node = %p.node, "udp flow refused: {e}");
            return;
        }
        self.udp.flows.insert(
            id,
            UdpFlow {
                tuple,
                sock: None,
                pending: vec![payload],
            },
        );
        self.udp.by_tuple.insert(tuple, id);
        GatewayStats::add(&self.stats.udp_total, 1);
        GatewayStats::add(&self.stats.udp_open, 1);
        let gw = self.handle.clone();
        self.rt.spawn(async move {
            let result = async {
                let addr = tokio::net::lookup_host(&target)
                    .await?
                    .next()
                    .ok_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no address"))?;
                let bind: std::net::SocketAddr = if addr.is_ipv4() {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = std::net::UdpSocket::bind(bind)?;
                s.connect(addr)?;
                s.set_nonblocking(true)?;
                Ok(s)
            }
            .await;
            gw.control(Control::UdpReady { flow: id, result });
        });
    }

    pub(super) fn udp_ready(&mut self, id: usize, result: std::io::Result<std::net::UdpSocket>) {
        if !self.udp.flows.contains_key(&id) {
            return;
        }
        let mut sock = match result {
            Ok(s) => mio::net::UdpSocket::from_std(s),
            Err(e) => {
                tracing::debug!("udp flow setup failed: {e}");
                GatewayStats::add(&self.stats.connect_failed, 1);
                self.udp_expire(id);
                return;
            }
        };
        if self
            .registry()
            .register(&mut sock, Token(id), Interest::READABLE)
            .is_err()
        {
            self.udp_expire(id);
            return;
        }
        let Some(f) = self.udp.flows.get_mut(&id) else {
            return;
        };
        for d in f.pending.drain(..) {
            if sock.send(&d).is_ok() {
                GatewayStats::add(&self.stats.bytes_up, d.len() as u64);
            }
        }
        f.sock = Some(sock);
        self.udp_readable(id);
    }

    /// Reads answers from the remote side and sends them to the node.
    pub(super) fn udp_readable(&mut self, id: usize) {
        let Some(f) = self.udp.flows.get(&id) else {
            return;
        };
        let Some(s) = &f.sock else {
            return;
        };
        let (client, service) = f.tuple;
        let mut buf = vec![0u8; 65536];
        let mut got = 0;
        let max = self.cfg.mtu.saturating_sub(28);
        for _ in 0..READ_BATCH {
            match s.recv(&mut buf) {
                Ok(n) if n <= max => {
                    got += 1;
                    GatewayStats::add(&self.stats.bytes_down, n as u64);
                    self.dev.tx.push(wire::build_udp(
                        *service.ip(),
                        service.port(),
                        *client.ip(),
                        client.port(),
                        &buf[..n],
                    ));
                }
                // Larger than the overlay MTU: the node could not take it unfragmented.
                Ok(_) => GatewayStats::add(&self.stats.drop_no_flow, 1),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        if got > 0 {
            let now = self.now_ms();
            self.table.touch(&id, now);
            self.flush_out();
        }
    }

    /// Forgets a UDP flow.
    pub(super) fn udp_expire(&mut self, id: usize) {
        let Some(mut f) = self.udp.flows.remove(&id) else {
            return;
        };
        if let Some(s) = f.sock.as_mut() {
            let _ = self.registry().deregister(s);
        }
        self.udp.by_tuple.remove(&f.tuple);
        self.table.remove(&id);
        self.stats
            .udp_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

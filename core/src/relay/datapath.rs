//! The hub's datagram path: WireGuard in, the routing decision, WireGuard or the gateway out,
//! and the packets addressed to the relay itself (ICMP echo, the control channel).

use super::persist::Held;
use super::{initiation, roam, Event, GatewayPacket, Hub, Now};
use crate::identity::key;
use crate::net::counters::DropReason;
use crate::net::wire::{self, IpProtocol};
use crate::relay::datagram::{self, Datagram};
use crate::relay::peers::{PeerId, Route};
use crate::transport::control::{self, ControlMessage, ControlReply, ControlRequest, CONTROL_PORT};
use boringtun::noise::{Packet, TunnResult};
use std::net::{Ipv4Addr, SocketAddr};

/// What the relay answers to a packet addressed to itself.
enum Answer {
    /// Nothing: not something the relay serves.
    Unsupported,
    /// Later (a lookup waits for the driver).
    Later,
    /// This packet, at once.
    Now(Vec<u8>),
    /// This reply once the change it acknowledges is durable.
    Held(Held),
}

impl Hub {
    /// Handles one datagram from `from` (a UDP address, or a stream's address).
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddr, d: &[u8]) {
        let mut init_ts = None;
        let id = match datagram::classify(d) {
            Datagram::ForPeer(id) => id,
            Datagram::HandshakeInit => match self.identify_initiator(d, from, now.unix) {
                Ok((id, ts)) => {
                    init_ts = Some(ts);
                    id
                }
                Err(Some(n)) => {
                    self.global.drop(DropReason::RateLimited);
                    self.out.push(from, &self.aux[..n]);
                    return;
                }
                Err(None) => return,
            },
            Datagram::Join => {
                self.on_join(from, d, now);
                self.after_input(now);
                return;
            }
            Datagram::Invalid => {
                self.global.drop(DropReason::InvalidDatagram);
                return;
            }
        };
        let Some(l) = self.live.get_mut(&id) else {
            self.global.drop(DropReason::Rejected);
            return;
        };
        let mut moved = false;
        let len = match l.tunn.decapsulate(Some(from.ip()), d, &mut self.dec) {
            TunnResult::WriteToNetwork(p) => {
                l.last_rx = Some(now.instant);
                self.out.push(from, p);
                if let Some(ts) = init_ts {
                    // boringtun accepted the initiation: remember its timestamp for restarts.
                    l.newest_init = Some(ts);
                    moved = true;
                }
                moved |= roam(&mut l.endpoint, from);
                // Packets queued while the handshake was pending go out now.
                while let TunnResult::WriteToNetwork(p) =
                    l.tunn.decapsulate(None, &[], &mut self.dec)
                {
                    self.out.push(from, p);
                }
                if moved {
                    self.changed_live();
                    self.maybe_persist(now);
                }
                return;
            }
            TunnResult::WriteToTunnelV4(p, _) => {
                l.last_rx = Some(now.instant);
                moved = roam(&mut l.endpoint, from);
                l.counters.rx(p.len());
                p.len()
            }
            TunnResult::WriteToTunnelV6(..) => {
                l.counters.drop(DropReason::NotIpv4);
                return;
            }
            TunnResult::Done => {
                // A keepalive, or a handshake message that needed no answer.
                l.last_rx = Some(now.instant);
                if roam(&mut l.endpoint, from) {
                    self.changed_live();
                    self.maybe_persist(now);
                }
                return;
            }
            TunnResult::Err(e) => {
                tracing::trace!(peer = id, "rejected datagram: {e:?}");
                l.counters.drop(DropReason::Rejected);
                return;
            }
        };
        if moved {
            self.changed_live();
        }
        // Move the packet out of `dec` so forwarding can reuse the buffers.
        std::mem::swap(&mut self.dec, &mut self.aux);
        self.route(id, len, now);
        std::mem::swap(&mut self.dec, &mut self.aux);
        self.after_input(now);
    }

    /// What follows any input that may have changed the state: notices, a write, the count of
    /// datagrams the full queue dropped.
    pub(super) fn after_input(&mut self, now: Now) {
        self.send_notices();
        self.maybe_persist(now);
        let dropped = std::mem::take(&mut self.out.dropped);
        if dropped > 0 {
            self.global.drop_many(DropReason::Undeliverable, dropped);
        }
    }

    /// Finds the peer behind a handshake initiation and reads its timestamp; an initiation
    /// not newer than the newest accepted from that peer (persisted across restarts) is a
    /// replay and dropped. `Err(Some(n))`: a cookie reply of `n` bytes is in `aux`;
    /// `Err(None)`: dropped and counted.
    fn identify_initiator(
        &mut self,
        d: &[u8],
        from: SocketAddr,
        now: u64,
    ) -> Result<(PeerId, initiation::Tai64n), Option<usize>> {
        let packet = match self
            .limiter
            .verify_packet(Some(from.ip()), d, &mut self.aux)
        {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(cookie)) => return Err(Some(cookie.len())),
            Err(_) => {
                self.global.drop(DropReason::Rejected);
                return Err(None);
            }
        };
        let Packet::HandshakeInit(_) = packet else {
            self.global.drop(DropReason::InvalidDatagram);
            return Err(None);
        };
        // The one Diffie-Hellman an initiation costs before its sender is known.
        let Some(opened) = initiation::open_static(&self.secret, &self.public, d) else {
            self.global.drop(DropReason::Rejected);
            return Err(None);
        };
        let Some(id) = self.table.by_key(&opened.peer_static).map(|e| e.id) else {
            tracing::debug!(%from, key = %key::short(&opened.peer_static), "handshake from an unknown key");
            self.global.drop(DropReason::UnknownPeer);
            return Err(None);
        };
        let Some(l) = self.live.get_mut(&id) else {
            self.global.drop(DropReason::Rejected);
            return Err(None);
        };
        let Some(ts) = opened.timestamp(&l.static_shared) else {
            // Someone who knows the peer's public key but not its private key.
            l.counters.drop(DropReason::Rejected);
            return Err(None);
        };
        if l.newest_init.is_some_and(|newest| ts <= newest) {
            l.counters.drop(DropReason::Replayed);
            self.log_replay(id, from, now);
            return Err(None);
        }
        Ok((id, ts))
    }

    /// Logs dropped replays at most every `REPLAY_LOG_SECS`, with the count since the last line.
    fn log_replay(&mut self, id: PeerId, from: SocketAddr, now: u64) {
        self.replays_unlogged += 1;
        if self
            .replay_logged
            .is_some_and(|t| now < t.saturating_add(super::REPLAY_LOG_SECS))
        {
            return;
        }
        let peer = self
            .table
            .get(id)
            .map(|e| e.name.clone())
            .unwrap_or_default();
        tracing::warn!(
            %peer,
            %from,
            dropped = self.replays_unlogged,
            "dropped a replayed handshake initiation (not newer than the newest accepted from this peer)"
        );
        self.replays_unlogged = 0;
        self.replay_logged = Some(now);
    }

    /// Performs the routing decision for the `len`-byte packet `from` sent (now in `aux`).
    fn route(&mut self, from: PeerId, len: usize, now: Now) {
        let relay = self.cfg.plan.relay_addr();
        match self.table.route(from, relay, &self.aux[..len]) {
            Route::Peer(to) => {
                let p = std::mem::take(&mut self.aux);
                self.send_to_peer(to, &p[..len]);
                self.aux = p;
            }
            Route::Gateway => self.forward_to_gateway(from, len),
            Route::Relay if is_tcp(&self.aux[..len]) => {
                // The node's side of a callback connection the gateway opened from here.
                match self.table.get(from).map(|e| e.name.clone()) {
                    Some(node) => {
                        let packet = self.aux[..len].to_vec();
                        self.queue_for_gateway(from, node, None, packet);
                    }
                    None => self.count_drop(from, DropReason::NoRoute),
                }
            }
            Route::Relay => match self.answer_relay_packet(from, len, now) {
                Answer::Unsupported => self.count_drop(from, DropReason::Unsupported),
                Answer::Later => {}
                Answer::Now(r) => self.send_to_peer(from, &r),
                Answer::Held(h) => self.hold(h),
            },
            Route::Drop(reason) => {
                if reason == DropReason::Spoofed {
                    tracing::debug!(peer = from, "dropped a packet with a spoofed source");
                }
                self.count_drop(from, reason);
            }
        }
    }

    /// Passes a packet for a remote service's address to the gateway, with the service's target.
    fn forward_to_gateway(&mut self, from: PeerId, len: usize) {
        let Ok(p) = wire::ipv4(&self.aux[..len]) else {
            return;
        };
        let dst_port = crate::relay::gateway::Segment::parse(p.as_ref()).map(|s| s.dst.port());
        let target = match (self.remote_targets.get(&p.dst_addr()), dst_port) {
            (Some((port, target)), Some(dst_port)) => {
                crate::relay::gateway::effective_target(dst_port, *port, target)
            }
            _ => None,
        };
        let node = self.table.get(from).map(|e| e.name.clone());
        match (target, node) {
            (Some(target), Some(node)) => {
                let packet = self.aux[..len].to_vec();
                self.queue_for_gateway(from, node, Some(target), packet);
            }
            _ => self.count_drop(from, DropReason::NoRoute),
        }
    }

    /// Queues a packet for the gateway; a full queue drops it, like a full gateway would.
    fn queue_for_gateway(
        &mut self,
        from: PeerId,
        node: String,
        target: Option<String>,
        packet: Vec<u8>,
    ) {
        let e = Event::Gateway(GatewayPacket {
            node,
            target,
            packet,
        });
        if !self.events.push(e) {
            self.count_drop(from, DropReason::Undeliverable);
        }
    }

    /// Delivers a packet from the gateway (a remote service answering, or a callback into a
    /// node) to the peer that owns its destination.
    pub fn handle_gateway_packet(&mut self, packet: &[u8]) {
        let Ok((src, dst)) = wire::addresses(packet) else {
            self.global.drop(DropReason::Malformed);
            return;
        };
        // The gateway speaks only from remote-service addresses and the relay's own.
        if !self.cfg.plan.remote_block().contains(src) {
            self.global.drop(DropReason::Spoofed);
            return;
        }
        match self.table.owner_of(dst) {
            Some(to) => self.send_to_peer(to, packet),
            None => self.global.drop(DropReason::NoRoute),
        }
    }

    /// Answers a packet addressed to the relay itself: ICMP echo and the control channel.
    fn answer_relay_packet(&mut self, from: PeerId, len: usize, now: Now) -> Answer {
        let Ok(p) = wire::ipv4(&self.aux[..len]) else {
            return Answer::Unsupported;
        };
        if p.next_header() == IpProtocol::Icmp {
            let mut out = vec![0u8; len];
            let Some(n) = wire::echo_reply(&p, &mut out) else {
                return Answer::Unsupported;
            };
            out.truncate(n);
            return Answer::Now(out);
        }
        // Only a whole datagram has its port: a later fragment's payload can fake a header
        // (`wire::udp` refuses fragments).
        let Ok(u) = wire::udp(&p) else {
            return Answer::Unsupported;
        };
        if u.dst_port() != CONTROL_PORT {
            return Answer::Unsupported;
        }
        let (src, dst, src_port) = (p.src_addr(), p.dst_addr(), u.src_port());
        let build = |reply: &ControlReply| {
            wire::build_udp(dst, CONTROL_PORT, src, src_port, &control::encode(reply))
        };
        match control::parse_request(u.payload()) {
            Ok(m) => {
                let id = m.id;
                let leave = matches!(m.request, ControlRequest::Leave);
                match self.on_control(from, m, (src, src_port), now) {
                    None => Answer::Later,
                    // An answer that acknowledges a change waits until it is durable.
                    Some((reply, true)) => Answer::Held(Held::Control {
                        to: from,
                        id,
                        reply_to: (src, src_port),
                        packet: build(&reply),
                        leave,
                    }),
                    Some((reply, false)) => Answer::Now(build(&reply)),
                }
            }
            Err(e) => Answer::Now(build(&ControlReply::error(0, &e.to_string()))),
        }
    }

    /// Carries out a control request; the reply, and whether it acknowledges a change (and so
    /// waits for the disk). `None`: the answer comes later (a lookup).
    fn on_control(
        &mut self,
        from: PeerId,
        m: ControlMessage,
        reply_to: (Ipv4Addr, u16),
        now: Now,
    ) -> Option<(ControlReply, bool)> {
        let id = m.id;
        if let ControlRequest::Lookup { name } = &m.request {
            return self.lookup(from, id, name, reply_to, now.unix);
        }
        let (result, acknowledges) = match m.request {
            ControlRequest::Ping => (Ok(serde_json::json!({"pong": true})), false),
            ControlRequest::Leave => (
                self.plan_leave(from)
                    .map(|name| serde_json::json!({"left": name})),
                true,
            ),
            ControlRequest::Register {
                name,
                tag,
                port,
                protocol,
            } => (
                self.register_service(from, &name, tag.as_deref(), port, protocol)
                    .map(|i| serde_json::to_value(i).unwrap_or_default()),
                true,
            ),
            ControlRequest::Unregister { name, tag } => (
                self.unregister_service(from, &name, tag.as_deref())
                    .map(|removed| serde_json::json!({ "removed": removed })),
                true,
            ),
            ControlRequest::Pull { want } => (Ok(self.pull(&want)), false),
            ControlRequest::Intercept { service, header } => (
                self.start_intercept(from, &service, header, now)
                    .map(|s| serde_json::to_value(s).unwrap_or_default()),
                true,
            ),
            ControlRequest::InterceptStop { service } => (
                self.stop_intercept(from, &service).map(|stopped| {
                    serde_json::to_value(control::InterceptStopped { stopped }).unwrap_or_default()
                }),
                true,
            ),
            ControlRequest::Intercepts { skip } => (
                Ok(
                    serde_json::to_value(control::InterceptPage::of(self.intercepts.list(), skip))
                        .unwrap_or_default(),
                ),
                false,
            ),
            ControlRequest::Lookup { .. } => (Ok(serde_json::Value::Null), false),
        };
        Some(match result {
            Ok(data) => (ControlReply::Ok { id, data }, acknowledges),
            Err(e) => (ControlReply::error(id, &e.to_string()), false),
        })
    }

    pub(super) fn count_drop(&mut self, id: PeerId, reason: DropReason) {
        match self.live.get_mut(&id) {
            Some(l) => l.counters.drop(reason),
            None => self.global.drop(reason),
        }
    }

    /// Encrypts `p` for peer `to` and queues it for the peer's endpoint.
    pub(super) fn send_to_peer(&mut self, to: PeerId, p: &[u8]) {
        let Some(l) = self.live.get_mut(&to) else {
            return;
        };
        match l.tunn.encapsulate(p, &mut self.enc) {
            TunnResult::WriteToNetwork(out) => match l.endpoint {
                Some(ep) => {
                    l.counters.tx(p.len());
                    self.out.push(ep, out);
                }
                None => l.counters.drop(DropReason::Undeliverable),
            },
            TunnResult::Err(_) => l.counters.drop(DropReason::Undeliverable),
            _ => {}
        }
    }
}

/// Whether `p` is a TCP packet.
fn is_tcp(p: &[u8]) -> bool {
    wire::ipv4(p).is_ok_and(|p| p.next_header() == IpProtocol::Tcp)
}

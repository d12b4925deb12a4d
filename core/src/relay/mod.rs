//! The relay as a sans-IO state machine: WireGuard hub, join handling, control channel.
//!
//! The caller feeds datagrams ([`Hub::on_datagram`]) and timer ticks ([`Hub::on_tick`]) and
//! passes a [`Wire`] that sends what comes out; persistence goes through a [`Store`], always
//! before memory changes, so what the relay acknowledged is on disk. Nothing here opens a socket.

mod admin;
mod flood;
mod guess;
pub mod initiation;
mod join;
mod lookup;
mod services;
pub mod state;

pub use admin::{NodeInfo, PeerAdded, RelayStats, TokenCreated};
pub use flood::{JoinJob, JoinOpened, JoinOpener, JoinStats, JOB_QUEUE};
pub use lookup::{LookupFailure, LookupRequest, OnDemandConfig};

use crate::addressing::AddressPlan;
use crate::control::{self, ControlMessage, ControlReply, ControlRequest, CONTROL_PORT};
use crate::counters::{Counters, DropReason};
use crate::datagram::{self, Datagram};
use crate::join::ReplayGuard;
use crate::key;
use crate::peers::{PeerId, PeerTable, Route};
use crate::registry::{Registry, RegistryConfig};
use crate::wire::{self, IpProtocol};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use state::{PeerRecord, RelayState};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Handshakes per second (each counted twice: our check and the Tunn's) before cookies are required.
const HANDSHAKE_RATE_LIMIT: u64 = 4000;
/// Buffer size for any datagram or packet.
const BUF: usize = 65536;
/// Seconds between logs of dropped replayed handshakes (outside input triggers them).
const REPLAY_LOG_SECS: u64 = 10;

/// Sends datagrams for the hub, and hands packets for remote services to the gateway.
pub trait Wire {
    /// Sends `datagram` to `to` (best effort, like UDP).
    fn send(&mut self, to: SocketAddr, datagram: &[u8]);

    /// Hands an inner packet for a remote service to the userspace gateway (best effort: a
    /// full gateway queue drops it, and TCP retransmits). `target` is the `host:port` the
    /// packet's destination stands for in the remote environment, or `None` for TCP to the
    /// relay's own address (the node's side of a callback connection); `node` is the sender.
    fn send_to_gateway(&mut self, node: &str, target: Option<&str>, packet: &[u8]);

    /// Asks the driver to resolve a name in the remote environment; the driver answers with
    /// [`Hub::lookup_done`]. Without a resolver the request is never answered (the node's
    /// request times out).
    fn resolve(&mut self, _request: LookupRequest) {}
}

/// Persists the relay state; called before any change takes effect.
pub trait Store {
    /// Saves the whole state atomically, or says why it could not.
    fn save(&mut self, state: &RelayState) -> Result<(), String>;
}

/// Static settings of a hub.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// The relay's private key.
    pub private_key: [u8; 32],
    /// The address plan.
    pub plan: AddressPlan,
    /// Where nodes reach the relay (`host:port`), first preferred.
    pub endpoints: Vec<String>,
    /// Where nodes reach the relay over an HTTP upgrade (`--public-url`), when it serves one.
    pub url: Option<String>,
    /// The overlay DNS domain.
    pub domain: String,
    /// Inner MTU given to nodes.
    pub mtu: u16,
}

/// Errors of hub operations, each one sentence for the operator.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    /// The stored state is inconsistent.
    #[error("the relay state is inconsistent: {0}")]
    BadState(String),
    /// The state could not be saved; nothing changed.
    #[error("the change was not made because the state could not be saved: {0}")]
    Store(String),
    /// Invalid name.
    #[error("'{0}' is not a valid name: use 1 to 63 lower-case letters, digits and '-'")]
    InvalidName(String),
    /// Name taken.
    #[error("the name '{0}' is already used by another node; choose another name")]
    NameTaken(String),
    /// The name is a service's (node and service names share one namespace) or reserved.
    #[error("the name '{name}' belongs to {owner}, and node and service names share one namespace; choose another name")]
    NameIsService {
        /// The name asked for.
        name: String,
        /// Who holds it.
        owner: crate::registry::NameOwner,
    },
    /// Key taken.
    #[error("this public key is already registered as '{0}'")]
    KeyTaken(String),
    /// Bad key.
    #[error("{0}")]
    BadKey(String),
    /// The network is full.
    #[error("the network {0} has no free node prefix left")]
    NetworkFull(String),
    /// No such peer.
    #[error("there is no node named '{0}'")]
    NoSuchPeer(String),
    /// No such token.
    #[error("there is no token with id '{0}'")]
    NoSuchToken(String),
    /// Bad token parameters.
    #[error("{0}")]
    BadToken(String),
    /// The registry refused a change.
    #[error("{0}")]
    Registry(String),
}

/// A peer's live state beside its table entry.
struct Live {
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    counters: Counters,
    /// DH(relay static, peer static), computed once when the peer is loaded: it opens the
    /// timestamp of the peer's initiations without public-key work per datagram.
    static_shared: [u8; 32],
    /// The newest initiation timestamp accepted from the peer (persisted on the next save).
    newest_init: Option<initiation::Tai64n>,
}

/// The relay hub.
pub struct Hub<S: Store> {
    cfg: HubConfig,
    secret: StaticSecret,
    public: PublicKey,
    limiter: Arc<RateLimiter>,
    table: PeerTable,
    live: HashMap<PeerId, Live>,
    /// The persisted model; memory follows it only after a successful save.
    state: RelayState,
    store: S,
    replay: ReplayGuard,
    /// Proven addresses' failed joins (the lockout).
    guesses: guess::GuessLimiter,
    /// Unproven addresses' failed joins: such an address must prove itself with a cookie.
    suspects: guess::GuessLimiter,
    /// `mac1`/`mac2` and cookies in front of the public-key work.
    gate: crate::join::cookie::Gate,
    opens: flood::OpenBudget,
    replies: flood::ReplyBudget,
    join_stats: flood::JoinStats,
    summary: flood::Summary,
    /// Requests go to a worker thread ([`Hub::take_join_jobs`]) instead of being opened here.
    join_worker: bool,
    jobs: Vec<flood::JoinJob>,
    /// Drops not attributable to a peer.
    global: Counters,
    endpoints_dirty: bool,
    /// A newer handshake timestamp was accepted since the last save.
    handshakes_dirty: bool,
    /// When handshake timestamps were last saved (unix seconds): at most one save a second.
    handshakes_saved: Option<u64>,
    /// Replayed initiations dropped since the last log line, and when that was.
    replays_unlogged: u64,
    replay_logged: Option<u64>,
    /// A peer whose leave is saved; removed once the reply went out.
    pending_leave: Option<PeerId>,
    /// The service registry (persisted inside `state`).
    registry: Registry,
    /// The registry changed since the last notices went out.
    notice_pending: bool,
    /// Remote service address -> its overlay port and `host:port` in the remote environment.
    remote_targets: HashMap<std::net::Ipv4Addr, (u16, String)>,
    /// How node services get callback addresses.
    callback: crate::gateway::CallbackPlan,
    /// Remote names on demand.
    lookups: lookup::Lookups,
    last_limiter_reset: u64,
    started: u64,
    dec: Vec<u8>,
    enc: Vec<u8>,
    aux: Vec<u8>,
}

impl<S: Store> Hub<S> {
    /// A hub with the peers and tokens of `state`.
    pub fn new(cfg: HubConfig, state: RelayState, store: S, now: u64) -> Result<Self, HubError> {
        let secret = StaticSecret::from(cfg.private_key);
        let public = PublicKey::from(&secret);
        let limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        let mut hub = Hub {
            cfg: cfg.clone(),
            secret,
            public,
            limiter,
            table: PeerTable::new().with_gateway(cfg.plan.remote_block()),
            live: HashMap::new(),
            state: RelayState::default(),
            store,
            replay: ReplayGuard::new(),
            guesses: guess::GuessLimiter::default(),
            suspects: guess::GuessLimiter::default(),
            gate: crate::join::cookie::Gate::new(*public.as_bytes(), now, &mut rand_core::OsRng),
            opens: flood::OpenBudget::default(),
            replies: flood::ReplyBudget::default(),
            join_stats: flood::JoinStats::default(),
            summary: flood::Summary::default(),
            join_worker: false,
            jobs: Vec::new(),
            global: Counters::default(),
            endpoints_dirty: false,
            handshakes_dirty: false,
            handshakes_saved: None,
            replays_unlogged: 0,
            replay_logged: None,
            pending_leave: None,
            registry: Registry::restore(
                state.registry.clone(),
                RegistryConfig::new(cfg.plan.remote_block()),
                rand_core::RngCore::next_u64(&mut rand_core::OsRng),
            )
            .map_err(|e| HubError::BadState(e.to_string()))?,
            notice_pending: false,
            remote_targets: HashMap::new(),
            callback: crate::gateway::CallbackPlan::default(),
            lookups: lookup::Lookups::default(),
            last_limiter_reset: now,
            started: now,
            dec: vec![0; BUF],
            enc: vec![0; BUF],
            aux: vec![0; BUF],
        };
        for rec in &state.peers {
            hub.activate(rec)?;
            hub.registry.add_node(&rec.name);
        }
        hub.state = state;
        hub.evict_taken_names();
        hub.refresh_remote_targets();
        Ok(hub)
    }

    /// Puts a persisted peer into the routing table with a fresh tunnel.
    fn activate(&mut self, rec: &PeerRecord) -> Result<PeerId, HubError> {
        let pk = key::decode(&rec.public_key)
            .map_err(|e| HubError::BadState(format!("peer '{}': {e}", rec.name)))?;
        let id = self
            .table
            .insert(&rec.name, pk, rec.prefix)
            .map_err(|e| HubError::BadState(format!("peer '{}': {e}", rec.name)))?;
        let tunn = Tunn::new(
            self.secret.clone(),
            PublicKey::from(pk),
            None,
            None,
            id,
            Some(self.limiter.clone()),
        );
        let static_shared = self.secret.diffie_hellman(&PublicKey::from(pk)).to_bytes();
        self.live.insert(
            id,
            Live {
                tunn,
                endpoint: rec.endpoint,
                counters: Counters::default(),
                static_shared,
                newest_init: rec.handshake_timestamp,
            },
        );
        Ok(id)
    }

    /// Saves `next` and makes it the persisted model.
    fn commit(&mut self, next: RelayState) -> Result<(), HubError> {
        self.store.save(&next).map_err(HubError::Store)?;
        self.state = next;
        Ok(())
    }

    /// The relay's public key.
    pub fn public_key(&self) -> [u8; 32] {
        *self.public.as_bytes()
    }

    /// From now on, requests that pass the cheap checks are queued for a join worker (see
    /// [`Hub::take_join_jobs`]) instead of being opened on the caller's thread.
    pub fn use_join_worker(&mut self) {
        self.join_worker = true;
    }

    /// What a join worker needs: a copy of the relay's key that opens requests.
    pub fn join_opener(&self) -> JoinOpener {
        JoinOpener::new(self.cfg.private_key)
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// The persisted model as it stands.
    pub fn state(&self) -> &RelayState {
        &self.state
    }

    /// After a restart sessions are gone: start a handshake with every peer whose address we
    /// remember, so it reconnects at once instead of after its own rekey timeout.
    pub fn greet(&mut self, wire: &mut impl Wire) {
        for l in self.live.values_mut() {
            let Some(ep) = l.endpoint else { continue };
            if let TunnResult::WriteToNetwork(p) =
                l.tunn.format_handshake_initiation(&mut self.enc, false)
            {
                wire.send(ep, p);
            }
        }
    }

    /// Handles one datagram from `from`; `now` is unix seconds.
    pub fn on_datagram(&mut self, from: SocketAddr, d: &[u8], now: u64, wire: &mut impl Wire) {
        let mut init_ts = None;
        let id = match datagram::classify(d) {
            Datagram::ForPeer(id) => id,
            Datagram::HandshakeInit => match self.identify_initiator(d, from, now) {
                Ok((id, ts)) => {
                    init_ts = Some(ts);
                    id
                }
                Err(Some(n)) => {
                    self.global.drop(DropReason::RateLimited);
                    wire.send(from, &self.aux[..n]);
                    return;
                }
                Err(None) => return,
            },
            Datagram::Join => {
                self.on_join(from, d, now, wire);
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
        let len = match l.tunn.decapsulate(Some(from.ip()), d, &mut self.dec) {
            TunnResult::WriteToNetwork(p) => {
                wire.send(from, p);
                if let Some(ts) = init_ts {
                    // boringtun accepted the initiation: remember its timestamp for restarts.
                    l.newest_init = Some(ts);
                    self.handshakes_dirty = true;
                }
                roam(&mut l.endpoint, from, &mut self.endpoints_dirty);
                // Packets queued while the handshake was pending go out now.
                while let TunnResult::WriteToNetwork(p) =
                    l.tunn.decapsulate(None, &[], &mut self.dec)
                {
                    wire.send(from, p);
                }
                return;
            }
            TunnResult::WriteToTunnelV4(p, _) => {
                roam(&mut l.endpoint, from, &mut self.endpoints_dirty);
                l.counters.rx(p.len());
                p.len()
            }
            TunnResult::WriteToTunnelV6(..) => {
                l.counters.drop(DropReason::NotIpv4);
                return;
            }
            TunnResult::Done => {
                // A keepalive, or a handshake message that needed no answer.
                roam(&mut l.endpoint, from, &mut self.endpoints_dirty);
                return;
            }
            TunnResult::Err(e) => {
                tracing::trace!(peer = id, "rejected datagram: {e:?}");
                l.counters.drop(DropReason::Rejected);
                return;
            }
        };
        // Move the packet out of `dec` so forwarding can reuse the buffers.
        std::mem::swap(&mut self.dec, &mut self.aux);
        self.route(id, len, now, wire);
        std::mem::swap(&mut self.dec, &mut self.aux);
        self.send_notices(wire);
        self.flush_lookups(wire);
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
            .is_some_and(|t| now < t.saturating_add(REPLAY_LOG_SECS))
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
    fn route(&mut self, from: PeerId, len: usize, now: u64, wire: &mut impl Wire) {
        let relay = self.cfg.plan.relay_addr();
        match self.table.route(from, relay, &self.aux[..len]) {
            Route::Peer(to) => {
                let p = std::mem::take(&mut self.aux);
                self.send_to_peer(to, &p[..len], wire);
                self.aux = p;
            }
            Route::Gateway => self.forward_to_gateway(from, len, wire),
            Route::Relay if is_tcp(&self.aux[..len]) => {
                // The node's side of a callback connection the gateway opened from here.
                match self.table.get(from).map(|e| e.name.clone()) {
                    Some(node) => wire.send_to_gateway(&node, None, &self.aux[..len]),
                    None => self.count_drop(from, DropReason::NoRoute),
                }
            }
            Route::Relay => {
                let reply = self.answer_relay_packet(from, len, now);
                match reply {
                    // Empty: a control request whose answer comes later (a lookup).
                    Some(r) if r.is_empty() => {}
                    Some(r) => self.send_to_peer(from, &r, wire),
                    None => self.count_drop(from, DropReason::Unsupported),
                }
                // A leave is carried out after its reply went out through the old tunnel.
                self.finish_leave(from);
            }
            Route::Drop(reason) => {
                if reason == DropReason::Spoofed {
                    tracing::debug!(peer = from, "dropped a packet with a spoofed source");
                }
                self.count_drop(from, reason);
            }
        }
    }

    /// Passes a packet for a remote service's address to the gateway, with the service's target.
    fn forward_to_gateway(&mut self, from: PeerId, len: usize, wire: &mut impl Wire) {
        let Ok(p) = wire::ipv4(&self.aux[..len]) else {
            return;
        };
        let dst_port = crate::gateway::Segment::parse(p.as_ref()).map(|s| s.dst.port());
        let target = match (self.remote_targets.get(&p.dst_addr()), dst_port) {
            (Some((port, target)), Some(dst_port)) => {
                crate::gateway::effective_target(dst_port, *port, target)
            }
            _ => None,
        };
        let node = self.table.get(from).map(|e| e.name.as_str());
        match (target, node) {
            (Some(target), Some(node)) => {
                wire.send_to_gateway(node, Some(&target), &self.aux[..len])
            }
            _ => self.count_drop(from, DropReason::NoRoute),
        }
    }

    /// Delivers a packet from the gateway (a remote service answering, or a callback into a
    /// node) to the peer that owns its destination.
    pub fn from_gateway(&mut self, packet: &[u8], wire: &mut impl Wire) {
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
            Some(to) => self.send_to_peer(to, packet, wire),
            None => self.global.drop(DropReason::NoRoute),
        }
    }

    /// Answers a packet addressed to the relay itself: ICMP echo and the control channel.
    fn answer_relay_packet(&mut self, from: PeerId, len: usize, now: u64) -> Option<Vec<u8>> {
        let p = wire::ipv4(&self.aux[..len]).ok()?;
        if p.next_header() == IpProtocol::Icmp {
            let mut out = vec![0u8; len];
            let n = wire::echo_reply(&p, &mut out)?;
            out.truncate(n);
            return Some(out);
        }
        // Only a whole datagram has its port: a later fragment's payload can fake a header
        // (`wire::udp` refuses fragments).
        let u = wire::udp(&p).ok()?;
        if u.dst_port() != CONTROL_PORT {
            return None;
        }
        let (src, dst, src_port) = (p.src_addr(), p.dst_addr(), u.src_port());
        let parsed = control::parse_request(u.payload());
        let reply = match parsed {
            Ok(m) => match self.on_control(from, m, (src, src_port), now) {
                Some(r) => r,
                None => return Some(Vec::new()),
            },
            Err(e) => ControlReply::error(0, &e.to_string()),
        };
        Some(wire::build_udp(
            dst,
            CONTROL_PORT,
            src,
            src_port,
            &control::encode(&reply),
        ))
    }

    fn on_control(
        &mut self,
        from: PeerId,
        m: ControlMessage,
        reply_to: (std::net::Ipv4Addr, u16),
        now: u64,
    ) -> Option<ControlReply> {
        let id = m.id;
        if let ControlRequest::Lookup { name } = &m.request {
            return self.lookup(from, id, name, reply_to, now);
        }
        let result = match m.request {
            ControlRequest::Ping => Ok(serde_json::json!({"pong": true})),
            ControlRequest::Leave => self
                .plan_leave(from)
                .map(|name| serde_json::json!({"left": name})),
            ControlRequest::Register {
                name,
                tag,
                port,
                protocol,
            } => self
                .register_service(from, &name, tag.as_deref(), port, protocol)
                .map(|i| serde_json::to_value(i).unwrap_or_default()),
            ControlRequest::Unregister { name, tag } => self
                .unregister_service(from, &name, tag.as_deref())
                .map(|removed| serde_json::json!({ "removed": removed })),
            ControlRequest::Pull { want } => Ok(self.pull(&want)),
            ControlRequest::Lookup { .. } => Ok(serde_json::Value::Null),
        };
        Some(match result {
            Ok(data) => ControlReply::Ok { id, data },
            Err(e) => ControlReply::error(id, &e.to_string()),
        })
    }

    /// Counts datagrams the driver could not send (socket buffer full, send error): they show
    /// as `undeliverable` in the global drops, since the peer's counters already counted them sent.
    pub fn count_send_failures(&mut self, datagrams: u64) {
        self.global.drop_many(DropReason::Undeliverable, datagrams);
    }

    fn count_drop(&mut self, id: PeerId, reason: DropReason) {
        match self.live.get_mut(&id) {
            Some(l) => l.counters.drop(reason),
            None => self.global.drop(reason),
        }
    }

    fn send_to_peer(&mut self, to: PeerId, p: &[u8], wire: &mut impl Wire) {
        let Some(l) = self.live.get_mut(&to) else {
            return;
        };
        match l.tunn.encapsulate(p, &mut self.enc) {
            TunnResult::WriteToNetwork(out) => match l.endpoint {
                Some(ep) => {
                    l.counters.tx(p.len());
                    wire.send(ep, out);
                }
                None => l.counters.drop(DropReason::Undeliverable),
            },
            TunnResult::Err(_) => l.counters.drop(DropReason::Undeliverable),
            _ => {}
        }
    }

    /// Runs WireGuard timers and saves changed endpoints; call every 100 to 250 ms.
    pub fn on_tick(&mut self, now: u64, wire: &mut impl Wire) {
        if now != self.last_limiter_reset {
            self.limiter.reset_count();
            self.last_limiter_reset = now;
        }
        for l in self.live.values_mut() {
            match l.tunn.update_timers(&mut self.enc) {
                TunnResult::WriteToNetwork(p) => {
                    if let Some(ep) = l.endpoint {
                        wire.send(ep, p);
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                _ => {}
            }
        }
        self.expire_on_demand(now);
        self.join_stats.under_load = self.opens.under_load(now);
        self.join_stats.opens_this_sec = self.opens.used(now);
        self.summary.tick(&self.join_stats, now);
        self.send_notices(wire);
        // Handshake timestamps at most once a second: a busy relay accepts many handshakes,
        // and each save writes and fsyncs the whole state.
        let handshakes_due = self.handshakes_dirty && self.handshakes_saved.is_none_or(|t| now > t);
        if self.endpoints_dirty || handshakes_due {
            self.save_live(now);
        }
    }

    /// Saves what changes without an operator's request (peer endpoints, newest handshake
    /// timestamps) if anything did; the driver calls it at shutdown too.
    pub fn save_live(&mut self, now: u64) {
        if !self.endpoints_dirty && !self.handshakes_dirty {
            return;
        }
        let mut next = self.state.clone();
        for rec in &mut next.peers {
            let Some(l) = self
                .table
                .by_name(&rec.name)
                .and_then(|e| self.live.get(&e.id))
            else {
                continue;
            };
            rec.endpoint = l.endpoint;
            rec.handshake_timestamp = l.newest_init;
        }
        match self.commit(next) {
            Ok(()) => {
                self.endpoints_dirty = false;
                self.handshakes_dirty = false;
                self.handshakes_saved = Some(now);
            }
            // Endpoints are a hint for restarts; the timestamps stay in memory (replays are
            // still refused until a restart) and the next tick tries again.
            Err(e) => {
                self.endpoints_dirty = false;
                self.handshakes_saved = Some(now);
                tracing::warn!("cannot save peer endpoints and handshake timestamps: {e}");
            }
        }
    }
}

/// Whether `p` is a TCP packet.
fn is_tcp(p: &[u8]) -> bool {
    wire::ipv4(p).is_ok_and(|p| p.next_header() == IpProtocol::Tcp)
}

/// Updates a peer's endpoint after an authenticated datagram from `from` (roaming).
fn roam(endpoint: &mut Option<SocketAddr>, from: SocketAddr, dirty: &mut bool) {
    if *endpoint != Some(from) {
        tracing::info!(old = ?endpoint, new = %from, "peer endpoint changed");
        *endpoint = Some(from);
        *dirty = true;
    }
}

/// Node names are DNS labels: lower-case letters, digits and '-', 1 to 63 characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests;

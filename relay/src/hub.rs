//! The WireGuard hub: one UDP socket, one `Tunn` per peer, forwarding by destination address.
//!
//! One task owns every peer, so no locks: datagrams, timer ticks and admin requests arrive in
//! one `select!` and each is handled to completion. The decisions (which peer a datagram is
//! for, where a decrypted packet goes) come from `overlay_core`; this file performs them.

use crate::admin::{AdminCall, AdminRequest, AdminResponse};
use crate::state::{PeerRecord, RelayState, StateDir};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use overlay_core::addressing::AddressPlan;
use overlay_core::counters::{Counters, DropReason};
use overlay_core::datagram::{self, Datagram};
use overlay_core::key;
use overlay_core::packet::icmp_echo_reply;
use overlay_core::peers::{PeerId, PeerTable, Route};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Handshakes per second (counted twice each: our check and the Tunn's) before cookies are required.
const HANDSHAKE_RATE_LIMIT: u64 = 2000;
/// How often peer timers run.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Buffer size for any datagram or packet.
const BUF: usize = 65536;

/// Static settings of the hub.
pub struct HubConfig {
    /// The relay's private key.
    pub private_key: [u8; 32],
    /// The address plan.
    pub plan: AddressPlan,
    /// Host:port peers are told to reach the relay at.
    pub public_endpoint: String,
    /// Inner MTU given to peers.
    pub mtu: u16,
}

/// A peer's live state beside its table entry.
struct PeerState {
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    counters: Counters,
}

/// The hub: peers, their tunnels and the relay-wide counters.
pub struct Hub {
    cfg: HubConfig,
    secret: StaticSecret,
    public: PublicKey,
    limiter: Arc<RateLimiter>,
    table: PeerTable,
    peers: HashMap<PeerId, PeerState>,
    created: HashMap<PeerId, u64>,
    /// Drops not attributable to a peer.
    global: Counters,
    state_dir: StateDir,
    /// Peer endpoints changed since the last save.
    dirty: bool,
    started: Instant,
}

/// Buffers reused for every datagram: no allocation per packet.
struct Buffers {
    rx: Vec<u8>,
    dec: Vec<u8>,
    enc: Vec<u8>,
    aux: Vec<u8>,
}

impl Hub {
    /// A hub with the peers from `state`.
    pub fn new(cfg: HubConfig, state: RelayState, state_dir: StateDir) -> anyhow::Result<Self> {
        let secret = StaticSecret::from(cfg.private_key);
        let public = PublicKey::from(&secret);
        let limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        let mut hub = Hub {
            cfg,
            secret,
            public,
            limiter,
            table: PeerTable::new(),
            peers: HashMap::new(),
            created: HashMap::new(),
            global: Counters::default(),
            state_dir,
            dirty: false,
            started: Instant::now(),
        };
        for rec in state.peers {
            let pk = key::decode(&rec.public_key)
                .map_err(|e| anyhow::anyhow!("state.json, peer '{}': {e}", rec.name))?;
            let id = hub
                .table
                .insert(&rec.name, pk, rec.prefix)
                .map_err(|e| anyhow::anyhow!("state.json, peer '{}': {e}", rec.name))?;
            hub.add_tunnel(id, pk, rec.endpoint);
            hub.created.insert(id, rec.created);
        }
        Ok(hub)
    }

    /// The relay's public key.
    pub fn public_key(&self) -> [u8; 32] {
        *self.public.as_bytes()
    }

    fn add_tunnel(&mut self, id: PeerId, pk: [u8; 32], endpoint: Option<SocketAddr>) {
        let tunn = Tunn::new(
            self.secret.clone(),
            PublicKey::from(pk),
            None,
            None,
            id,
            Some(self.limiter.clone()),
        );
        self.peers.insert(
            id,
            PeerState {
                tunn,
                endpoint,
                counters: Counters::default(),
            },
        );
    }

    /// Runs until the socket fails.
    pub async fn run(
        mut self,
        sock: UdpSocket,
        mut admin: mpsc::Receiver<AdminCall>,
    ) -> anyhow::Result<()> {
        let mut b = Buffers {
            rx: vec![0; BUF],
            dec: vec![0; BUF],
            enc: vec![0; BUF],
            aux: vec![0; BUF],
        };
        self.greet_known_peers(&sock, &mut b).await;
        let mut tick = tokio::time::interval(TIMER_TICK);
        let mut last_reset = Instant::now();
        loop {
            tokio::select! {
                r = sock.recv_from(&mut b.rx) => {
                    let (n, from) = match r {
                        Ok(x) => x,
                        Err(e) => {
                            // ICMP errors for earlier sends surface here; they are not fatal.
                            tracing::debug!("udp receive: {e}");
                            continue;
                        }
                    };
                    self.on_datagram(&sock, &mut b, n, from).await;
                }
                _ = tick.tick() => {
                    if last_reset.elapsed() >= Duration::from_secs(1) {
                        self.limiter.reset_count();
                        last_reset = Instant::now();
                    }
                    self.on_tick(&sock, &mut b).await;
                }
                Some((req, reply)) = admin.recv() => {
                    let _ = reply.send(self.on_admin(req));
                }
            }
        }
    }

    /// After a restart, sessions are gone: start handshakes with every peer we know an address
    /// for, so they reconnect at once instead of after their own rekey timeout.
    async fn greet_known_peers(&mut self, sock: &UdpSocket, b: &mut Buffers) {
        for st in self.peers.values_mut() {
            let Some(ep) = st.endpoint else { continue };
            if let TunnResult::WriteToNetwork(p) =
                st.tunn.format_handshake_initiation(&mut b.enc, false)
            {
                let _ = sock.send_to(p, ep).await;
            }
        }
    }

    async fn on_datagram(&mut self, sock: &UdpSocket, b: &mut Buffers, n: usize, from: SocketAddr) {
        let Buffers { rx, dec, enc, aux } = b;
        let d = &rx[..n];
        let id = match datagram::classify(d) {
            Datagram::ForPeer(id) => id,
            Datagram::HandshakeInit => match self.identify_initiator(d, from, aux) {
                Ok(id) => id,
                Err(Some(cookie_len)) => {
                    self.global.drop(DropReason::RateLimited);
                    let _ = sock.send_to(&aux[..cookie_len], from).await;
                    return;
                }
                Err(None) => return,
            },
            Datagram::Join => {
                // The join protocol arrives with the join issue; until then it is not served.
                self.global.drop(DropReason::Unsupported);
                return;
            }
            Datagram::Invalid => {
                self.global.drop(DropReason::InvalidDatagram);
                return;
            }
        };
        let Some(st) = self.peers.get_mut(&id) else {
            self.global.drop(DropReason::Rejected);
            return;
        };
        match st.tunn.decapsulate(Some(from.ip()), d, dec) {
            TunnResult::WriteToNetwork(p) => {
                let _ = sock.send_to(p, from).await;
                st.endpoint = roam(st.endpoint, from, &mut self.dirty);
                // Packets queued while the handshake was pending go out now.
                while let TunnResult::WriteToNetwork(p) = st.tunn.decapsulate(None, &[], dec) {
                    let _ = sock.send_to(p, from).await;
                }
            }
            TunnResult::WriteToTunnelV4(p, _) => {
                st.endpoint = roam(st.endpoint, from, &mut self.dirty);
                st.counters.rx(p.len());
                let len = p.len();
                self.route_packet(sock, id, &dec[..len], enc, aux).await;
            }
            TunnResult::WriteToTunnelV6(..) => {
                st.counters.drop(DropReason::NotIpv4);
            }
            TunnResult::Done => {
                // A keepalive, or a handshake message that needed no answer.
                st.endpoint = roam(st.endpoint, from, &mut self.dirty);
            }
            TunnResult::Err(e) => {
                tracing::trace!(peer = id, "rejected datagram: {e:?}");
                st.counters.drop(DropReason::Rejected);
            }
        }
    }

    /// Finds the peer behind a handshake initiation. `Err(Some(n))`: a cookie reply of `n`
    /// bytes is in `out`; `Err(None)`: dropped and counted.
    fn identify_initiator(
        &mut self,
        d: &[u8],
        from: SocketAddr,
        out: &mut [u8],
    ) -> Result<PeerId, Option<usize>> {
        let packet = match self.limiter.verify_packet(Some(from.ip()), d, out) {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(cookie)) => return Err(Some(cookie.len())),
            Err(_) => {
                self.global.drop(DropReason::Rejected);
                return Err(None);
            }
        };
        let Packet::HandshakeInit(init) = packet else {
            self.global.drop(DropReason::InvalidDatagram);
            return Err(None);
        };
        let half = match parse_handshake_anon(&self.secret, &self.public, &init) {
            Ok(h) => h,
            Err(_) => {
                self.global.drop(DropReason::Rejected);
                return Err(None);
            }
        };
        match self.table.by_key(&half.peer_static_public) {
            Some(e) => Ok(e.id),
            None => {
                tracing::debug!(%from, key = %key::short(&half.peer_static_public), "handshake from an unknown key");
                self.global.drop(DropReason::UnknownPeer);
                Err(None)
            }
        }
    }

    /// Performs the routing decision for a packet `from` sent.
    async fn route_packet(
        &mut self,
        sock: &UdpSocket,
        from: PeerId,
        p: &[u8],
        enc: &mut [u8],
        aux: &mut [u8],
    ) {
        match self.table.route(from, self.cfg.plan.relay_addr(), p) {
            Route::Relay => match icmp_echo_reply(p, aux) {
                Some(n) => {
                    let reply = aux[..n].to_vec();
                    self.send_to_peer(sock, from, &reply, enc).await;
                }
                None => self.count_drop(from, DropReason::Unsupported),
            },
            Route::Peer(to) => self.send_to_peer(sock, to, p, enc).await,
            Route::Drop(reason) => {
                if reason == DropReason::Spoofed {
                    tracing::debug!(peer = from, "dropped a packet with a spoofed source");
                }
                self.count_drop(from, reason);
            }
        }
    }

    fn count_drop(&mut self, id: PeerId, reason: DropReason) {
        match self.peers.get_mut(&id) {
            Some(st) => st.counters.drop(reason),
            None => self.global.drop(reason),
        }
    }

    async fn send_to_peer(&mut self, sock: &UdpSocket, to: PeerId, p: &[u8], enc: &mut [u8]) {
        let Some(st) = self.peers.get_mut(&to) else {
            return;
        };
        match st.tunn.encapsulate(p, enc) {
            TunnResult::WriteToNetwork(out) => match st.endpoint {
                Some(ep) => {
                    st.counters.tx(p.len());
                    let _ = sock.send_to(out, ep).await;
                }
                None => st.counters.drop(DropReason::Undeliverable),
            },
            TunnResult::Err(_) => st.counters.drop(DropReason::Undeliverable),
            _ => {}
        }
    }

    async fn on_tick(&mut self, sock: &UdpSocket, b: &mut Buffers) {
        for st in self.peers.values_mut() {
            match st.tunn.update_timers(&mut b.enc) {
                TunnResult::WriteToNetwork(p) => {
                    if let Some(ep) = st.endpoint {
                        let _ = sock.send_to(p, ep).await;
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                _ => {}
            }
        }
        if self.dirty {
            self.dirty = false;
            if let Err(e) = self.save() {
                tracing::warn!("cannot save peer endpoints: {e}");
            }
        }
    }

    fn snapshot(&self) -> RelayState {
        RelayState {
            peers: self
                .table
                .iter()
                .map(|e| PeerRecord {
                    name: e.name.clone(),
                    public_key: key::encode(&e.public_key),
                    prefix: e.prefix,
                    endpoint: self.peers.get(&e.id).and_then(|s| s.endpoint),
                    created: self.created.get(&e.id).copied().unwrap_or(0),
                })
                .collect(),
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        self.state_dir.save(&self.snapshot())?;
        Ok(())
    }

    fn on_admin(&mut self, req: AdminRequest) -> AdminResponse {
        match self.admin(req) {
            Ok(data) => AdminResponse::Ok { data },
            Err(e) => AdminResponse::Error {
                message: e.to_string(),
            },
        }
    }

    fn admin(&mut self, req: AdminRequest) -> anyhow::Result<serde_json::Value> {
        match req {
            AdminRequest::PeerAdd { name, public_key } => self.peer_add(&name, &public_key),
            AdminRequest::PeerRemove { name } => {
                let id = self
                    .table
                    .by_name(&name)
                    .map(|e| e.id)
                    .ok_or_else(|| anyhow::anyhow!("there is no peer named '{name}'"))?;
                // Disk first: memory changes only once the new state is safely written.
                let mut next = self.snapshot();
                next.peers.retain(|r| r.name != name);
                self.state_dir.save(&next)?;
                self.table.remove(id);
                self.peers.remove(&id);
                self.created.remove(&id);
                tracing::info!(name, "peer removed");
                Ok(json!({ "removed": name }))
            }
            AdminRequest::Nodes => Ok(self.nodes_json()),
            AdminRequest::Stats => Ok(json!({
                "peers": self.table.len(),
                "uptime_secs": self.started.elapsed().as_secs(),
                "relay_public_key": key::encode(&self.public_key()),
                "global": self.global.snapshot(),
            })),
        }
    }

    fn peer_add(&mut self, name: &str, public_key: &str) -> anyhow::Result<serde_json::Value> {
        validate_name(name)?;
        let pk = key::decode(public_key)?;
        let prefix = self
            .cfg
            .plan
            .next_free_prefix(|p| self.table.prefix_taken(p))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the network {} has no free node prefix left",
                    self.cfg.plan.network()
                )
            })?;
        if let Some(e) = self.table.by_name(name) {
            anyhow::bail!(
                "the name '{}' is already used by another node; choose another name",
                e.name
            );
        }
        if let Some(e) = self.table.by_key(&pk) {
            anyhow::bail!("this public key is already registered as '{}'", e.name);
        }
        // Disk first: memory changes only once the new state is safely written.
        let created = unix_now();
        let mut next = self.snapshot();
        next.peers.push(PeerRecord {
            name: name.to_string(),
            public_key: key::encode(&pk),
            prefix,
            endpoint: None,
            created,
        });
        self.state_dir
            .save(&next)
            .map_err(|e| anyhow::anyhow!("the peer was not added: {e}"))?;
        let id = self.table.insert(name, pk, prefix)?;
        self.add_tunnel(id, pk, None);
        self.created.insert(id, created);
        tracing::info!(name, %prefix, "peer added");
        Ok(json!({
            "name": name,
            "address": AddressPlan::node_addr(&prefix).to_string(),
            "prefix": prefix.to_string(),
            "network": self.cfg.plan.network().to_string(),
            "relay_address": self.cfg.plan.relay_addr().to_string(),
            "relay_public_key": key::encode(&self.public_key()),
            "endpoint": self.cfg.public_endpoint,
            "mtu": self.cfg.mtu,
        }))
    }

    fn nodes_json(&self) -> serde_json::Value {
        let list: Vec<_> = self
            .table
            .iter()
            .map(|e| {
                let st = self.peers.get(&e.id);
                let (hs, ..) = st
                    .map(|s| s.tunn.stats())
                    .unwrap_or((None, 0, 0, 0.0, None));
                json!({
                    "name": e.name,
                    "public_key": key::encode(&e.public_key),
                    "address": AddressPlan::node_addr(&e.prefix).to_string(),
                    "prefix": e.prefix.to_string(),
                    "endpoint": st.and_then(|s| s.endpoint).map(|a| a.to_string()),
                    "last_handshake_secs": hs.map(|d| d.as_secs()),
                    "counters": st.map(|s| s.counters.snapshot()).unwrap_or_default(),
                })
            })
            .collect();
        json!(list)
    }
}

/// Updates a peer's endpoint after an authenticated datagram from `from` (roaming).
fn roam(old: Option<SocketAddr>, from: SocketAddr, dirty: &mut bool) -> Option<SocketAddr> {
    if old != Some(from) {
        tracing::info!(?old, new = %from, "peer endpoint changed");
        *dirty = true;
    }
    Some(from)
}

/// Node names are DNS labels: lower-case letters, digits and '-', 1 to 63 characters.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        anyhow::bail!(
            "'{name}' is not a valid name: use 1 to 63 lower-case letters, digits and '-'"
        )
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

//! The relay as a sans-IO state machine: WireGuard hub, join handling, control channel.
//!
//! In the manner of quinn-proto's `Connection`, the driver feeds input and takes output:
//!
//! * input: [`Hub::handle_datagram`] (UDP or a stream, from an address), [`Hub::handle_timeout`]
//!   (when [`Hub::poll_timeout`] is due), [`Hub::handle_gateway_packet`],
//!   [`Hub::handle_join_opened`], [`Hub::lookup_done`], [`Hub::persisted`] /
//!   [`Hub::persist_failed`], and the operator's calls (`peer_add`, `token_create`, ...);
//! * output, after any input: [`Hub::poll_transmit`] until `None` (datagrams to send),
//!   [`Hub::poll_event`] until `None` (packets for the gateway, names to resolve, join requests
//!   to open, state to persist), then [`Hub::poll_timeout`] for when to call again.
//!
//! Every call takes `now` ([`Now`]): nothing here reads a clock or opens a socket, and the
//! randomness the hub needs comes from the generator the driver hands to [`Hub::new`].
//!
//! Persistence is an event: a change takes effect in memory at once and bumps the state's
//! version; the hub asks the driver to write the newest state ([`Event::Persist`]) whenever the
//! driver is not already writing one, so a burst of changes costs few writes. What the relay
//! acknowledges (an accepted join, a registration, a leave) is held until the driver reports
//! its version durable; forwarding never waits for the disk.

mod admin;
pub mod catalog;
pub mod datagram;
mod datapath;
mod flood;
pub mod gateway;
mod guess;
pub mod initiation;
mod intercepts;
mod join;
mod lookup;
mod output;
pub mod peers;
mod persist;
mod services;
pub mod state;
mod timers;

pub use admin::{NodeInfo, PeerAdded, RelayStats, TokenCreated};
pub use flood::{JoinJob, JoinOpened, JoinOpener, JoinStats, JOB_QUEUE};
pub use intercepts::{FrontRoute, SILENCE as INTERCEPT_SILENCE};
pub use lookup::{LookupFailure, LookupRequest, OnDemandConfig};
pub use output::{Transmit, MAX_EVENTS, MAX_TRANSMITS, MAX_TRANSMIT_BYTES};
pub use persist::MAX_HELD;

use crate::identity::join::ReplayGuard;
use crate::identity::key;
use crate::names::registry::{Registry, RegistryConfig};
use crate::net::addressing::AddressPlan;
use crate::net::counters::Counters;
use crate::relay::peers::{PeerId, PeerTable};
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use rand_core::CryptoRngCore;
use state::{PeerRecord, RelayState};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Handshakes per second (each counted twice: our check and the Tunn's) before cookies are required.
const HANDSHAKE_RATE_LIMIT: u64 = 4000;
/// Buffer size for any datagram or packet.
const BUF: usize = 65536;
/// Seconds between logs of dropped replayed handshakes (outside input triggers them).
const REPLAY_LOG_SECS: u64 = 10;

/// The time of a call: a monotonic instant for the hub's timers, and unix seconds for what
/// needs the wall clock (token expiry, join timestamps, cookie secrets, names on demand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time; [`Hub::poll_timeout`] answers in it.
    pub instant: Instant,
    /// Seconds since the unix epoch.
    pub unix: u64,
}

/// The randomness the hub uses (cookie secrets, token secrets, join response nonces, the
/// registry's epoch): the OS generator in the relay, a seeded one in tests.
pub type HubRng = Box<dyn CryptoRngCore + Send>;

/// What the hub asks of its driver, from [`Hub::poll_event`].
#[derive(Debug)]
pub enum Event {
    /// An inner packet for the userspace gateway (best effort: a full gateway queue drops it,
    /// and TCP retransmits).
    Gateway(GatewayPacket),
    /// Resolve a name in the remote environment and answer with [`Hub::lookup_done`]. Without a
    /// resolver the request is never answered (the node's request times out).
    Lookup(LookupRequest),
    /// Do the public-key work of a join request off the hub's thread and hand the result to
    /// [`Hub::handle_join_opened`] (only after [`Hub::use_join_worker`]).
    OpenJoin(JoinJob),
    /// Write `state` durably (atomically), then call [`Hub::persisted`] with `version`, or
    /// [`Hub::persist_failed`]. At most one is outstanding; newer changes wait and coalesce.
    Persist {
        /// The state's version: it grows with every change.
        version: u64,
        /// The whole state as of that version.
        state: Box<RelayState>,
    },
    /// The registry changed: callback routes ([`Hub::callback_routes`]) may have moved.
    RegistryChanged,
    /// Fronts or intercepts changed (or the instances they point at): the fronts' routing
    /// ([`Hub::front_routes`]) may have moved.
    FrontsChanged,
}

/// A packet for a remote service (or the node's side of a callback) and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPacket {
    /// The node that sent it.
    pub node: String,
    /// The `host:port` its destination stands for in the remote environment, or `None` for
    /// TCP to the relay's own address (the node's side of a callback connection).
    pub target: Option<String>,
    /// The IPv4 packet.
    pub packet: Vec<u8>,
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
        owner: crate::names::registry::NameOwner,
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
    /// An intercept was refused.
    #[error("{0}")]
    Intercept(String),
}

/// A peer's live state beside its table entry.
struct Live {
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    counters: Counters,
    /// DH(relay static, peer static), computed once when the peer is loaded: it opens the
    /// timestamp of the peer's initiations without public-key work per datagram.
    static_shared: [u8; 32],
    /// The newest initiation timestamp accepted from the peer (persisted with the next write).
    newest_init: Option<initiation::Tai64n>,
    /// When the peer last sent an authenticated datagram (its intercepts end when it is silent).
    last_rx: Option<Instant>,
}

/// The relay hub.
pub struct Hub {
    cfg: HubConfig,
    secret: StaticSecret,
    public: PublicKey,
    limiter: Arc<RateLimiter>,
    table: PeerTable,
    live: HashMap<PeerId, Live>,
    /// Peers, tokens and callback ports as they stand (changed in place; what is persisted).
    /// The registry lives in `registry`, the peers' endpoints and handshake timestamps in
    /// `live`; [`Hub::snapshot`] puts them together.
    state: RelayState,
    rng: HubRng,
    replay: ReplayGuard,
    /// Proven addresses' failed joins (the lockout).
    guesses: guess::GuessLimiter,
    /// Unproven addresses' failed joins: such an address must prove itself with a cookie.
    suspects: guess::GuessLimiter,
    /// `mac1`/`mac2` and cookies in front of the public-key work.
    gate: crate::identity::join::cookie::Gate,
    opens: flood::OpenBudget,
    replies: flood::ReplyBudget,
    join_stats: flood::JoinStats,
    summary: flood::Summary,
    /// Requests go to a worker thread ([`Event::OpenJoin`]) instead of being opened here.
    join_worker: bool,
    /// Requests handed to the worker and not yet back (bounded by [`JOB_QUEUE`]).
    jobs_waiting: usize,
    /// Drops not attributable to a peer.
    global: Counters,
    /// Versions, the write in progress, and the replies that wait for the disk.
    persist: persist::Persistence,
    /// Replayed initiations dropped since the last log line, and when that was.
    replays_unlogged: u64,
    replay_logged: Option<u64>,
    /// The service registry (persisted inside the state's snapshot).
    registry: Registry,
    /// The registry changed since the last notices went out.
    notice_pending: bool,
    /// Active intercepts (persisted with the state).
    intercepts: crate::intercept::InterceptTable,
    /// The catalog's fronts.
    fronts: Vec<crate::relay::catalog::Front>,
    /// When the hub started (the silence of a node not heard from since counts from here).
    started_at: Instant,
    /// Remote service address -> its overlay port and `host:port` in the remote environment.
    remote_targets: HashMap<std::net::Ipv4Addr, (u16, String)>,
    /// How node services get callback addresses.
    callback: crate::relay::gateway::CallbackPlan,
    /// Remote names on demand.
    lookups: lookup::Lookups,
    last_limiter_reset: u64,
    started: u64,
    timers: timers::Timers,
    out: output::Outbox,
    events: output::Events,
    dec: Vec<u8>,
    enc: Vec<u8>,
    aux: Vec<u8>,
}

impl Hub {
    /// A hub with the peers, tokens and registry of `state` (as loaded from disk).
    pub fn new(
        cfg: HubConfig,
        state: RelayState,
        now: Now,
        mut rng: HubRng,
    ) -> Result<Self, HubError> {
        let secret = StaticSecret::from(cfg.private_key);
        let public = PublicKey::from(&secret);
        let limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        let gate =
            crate::identity::join::cookie::Gate::new(*public.as_bytes(), now.unix, &mut &mut *rng);
        let epoch = rng.next_u64();
        let RelayState {
            peers,
            tokens,
            registry,
            callback_ports,
            intercepts,
        } = state;
        let registry = Registry::restore(
            registry,
            RegistryConfig::new(cfg.plan.remote_block()),
            epoch,
        )
        .map_err(|e| HubError::BadState(e.to_string()))?;
        let mut hub = Hub {
            cfg: cfg.clone(),
            secret,
            public,
            limiter,
            table: PeerTable::new().with_gateway(cfg.plan.remote_block()),
            live: HashMap::new(),
            state: RelayState {
                peers: Vec::new(),
                tokens,
                registry: Default::default(),
                callback_ports,
                intercepts: Vec::new(),
            },
            rng,
            replay: ReplayGuard::new(),
            guesses: guess::GuessLimiter::default(),
            suspects: guess::GuessLimiter::default(),
            gate,
            opens: flood::OpenBudget::default(),
            replies: flood::ReplyBudget::default(),
            join_stats: flood::JoinStats::default(),
            summary: flood::Summary::default(),
            join_worker: false,
            jobs_waiting: 0,
            global: Counters::default(),
            persist: persist::Persistence::default(),
            replays_unlogged: 0,
            replay_logged: None,
            registry,
            notice_pending: false,
            intercepts: crate::intercept::InterceptTable::restore(intercepts),
            fronts: Vec::new(),
            started_at: now.instant,
            remote_targets: HashMap::new(),
            callback: crate::relay::gateway::CallbackPlan::default(),
            lookups: lookup::Lookups::default(),
            last_limiter_reset: now.unix,
            started: now.unix,
            timers: timers::Timers::new(now.instant),
            out: output::Outbox::default(),
            events: output::Events::default(),
            dec: vec![0; BUF],
            enc: vec![0; BUF],
            aux: vec![0; BUF],
        };
        for rec in peers {
            hub.activate(&rec)?;
            hub.registry.add_node(&rec.name);
            hub.state.peers.push(rec);
        }
        hub.evict_taken_names();
        hub.refresh_remote_targets();
        hub.maybe_persist(now);
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
                last_rx: None,
            },
        );
        Ok(id)
    }

    /// The relay's public key.
    pub fn public_key(&self) -> [u8; 32] {
        *self.public.as_bytes()
    }

    /// From now on, requests that pass the cheap checks go to a join worker
    /// ([`Event::OpenJoin`]) instead of being opened on the caller's thread.
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

    /// After a restart sessions are gone: start a handshake with every peer whose address we
    /// remember, so it reconnects at once instead of after its own rekey timeout.
    pub fn greet(&mut self) {
        for l in self.live.values_mut() {
            let Some(ep) = l.endpoint else { continue };
            if let TunnResult::WriteToNetwork(p) =
                l.tunn.format_handshake_initiation(&mut self.enc, false)
            {
                self.out.push(ep, p);
            }
        }
    }

    /// The next datagram to send, if any; call until `None` after every input.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        self.out.pop()
    }

    /// The next request to the driver, if any; call until `None` after every input.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    /// When [`Hub::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs what is due at `now`: WireGuard timers (keepalives, rekeys, expiry), notices,
    /// expiry of names on demand, the rate limiter's second, and delayed or retried writes.
    pub fn handle_timeout(&mut self, now: Now) {
        for t in self.timers.expired(now.instant) {
            match t {
                timers::Timer::Tick => self.tick(now),
                // `maybe_persist` below decides what to write.
                timers::Timer::LivePersist => {}
                timers::Timer::PersistRetry => self.retry_due(),
            }
        }
        self.maybe_persist(now);
    }

    /// The periodic work, every [`timers::TICK`].
    fn tick(&mut self, now: Now) {
        if now.unix != self.last_limiter_reset {
            self.limiter.reset_count();
            self.last_limiter_reset = now.unix;
        }
        for l in self.live.values_mut() {
            // `Err(ConnectionExpired)`: the session is gone; the peer handshakes again when it
            // has something to send, and so does the hub (`encapsulate` starts a handshake).
            if let TunnResult::WriteToNetwork(p) = l.tunn.update_timers(&mut self.enc) {
                if let Some(ep) = l.endpoint {
                    self.out.push(ep, p);
                }
            }
        }
        self.expire_on_demand(now);
        self.expire_silent_intercepts(now);
        self.join_stats.under_load = self.opens.under_load(now.unix);
        self.join_stats.opens_this_sec = self.opens.used(now.unix);
        self.summary.tick(&self.join_stats, now.unix);
        self.send_notices();
        self.timers
            .set(timers::Timer::Tick, now.instant + timers::TICK);
    }

    /// Counts datagrams the driver could not send (socket buffer full, send error): they show
    /// as `undeliverable` in the global drops, since the peer's counters already counted them sent.
    pub fn count_send_failures(&mut self, datagrams: u64) {
        self.global
            .drop_many(crate::net::counters::DropReason::Undeliverable, datagrams);
    }
}

/// Updates a peer's endpoint after an authenticated datagram from `from` (roaming); true when
/// it moved.
fn roam(endpoint: &mut Option<SocketAddr>, from: SocketAddr) -> bool {
    if *endpoint != Some(from) {
        tracing::info!(old = ?endpoint, new = %from, "peer endpoint changed");
        *endpoint = Some(from);
        return true;
    }
    false
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

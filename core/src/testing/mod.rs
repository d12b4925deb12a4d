//! The hub in an in-memory network, for the core tests, the fuzz target and seedgen (feature
//! `testing`): a virtual clock, an in-memory store, the hub's output collected, and simulated
//! nodes with real boringtun peers.
//!
//! [`Sim`] drives one [`Hub`] the way the relay's driver does: every input is followed by
//! draining [`Hub::poll_transmit`] and [`Hub::poll_event`]; persist requests go to a
//! [`MemStore`] and are reported back at once (or held, to test what waits for the disk);
//! time moves only through [`Sim::advance`], which runs each timer when it is due. With the
//! feature `sim-time`, boringtun's clock moves with it, so rekeys, keepalives and session
//! expiry happen in simulated time.

mod node;

pub use node::{Exchange, SimNode};

use crate::net::addressing::AddressPlan;
use crate::relay::state::RelayState;
use crate::relay::{Event, GatewayPacket, Hub, HubConfig, HubError, JoinJob, LookupRequest, Now};
use boringtun::x25519::{PublicKey, StaticSecret};
use rand_core::SeedableRng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The unix time simulations start at.
pub const NOW: u64 = 1_800_000_000;
/// The relay's private key in simulations.
pub const RELAY_SECRET: [u8; 32] = [9; 32];

/// The hub configuration simulations use: network 100.64.0.0/10, domain `ovl.internal`.
pub fn config() -> HubConfig {
    HubConfig {
        private_key: RELAY_SECRET,
        plan: AddressPlan::new("100.64.0.0/10".parse().expect("a valid network"))
            .expect("a valid plan"),
        endpoints: vec!["10.0.0.254:51820".into()],
        url: None,
        domain: "ovl.internal".into(),
        mtu: 1420,
    }
}

/// The static secret `[n; 32]`.
pub fn secret(n: u8) -> StaticSecret {
    StaticSecret::from([n; 32])
}

/// The public key of [`secret`]`(n)`.
pub fn public(n: u8) -> [u8; 32] {
    *PublicKey::from(&secret(n)).as_bytes()
}

/// Virtual time: a monotonic instant and unix seconds that move together, only when told.
#[derive(Clone, Debug)]
pub struct Clock {
    start: Instant,
    elapsed: Duration,
    unix_start: u64,
}

impl Clock {
    /// A clock at unix time `unix`.
    pub fn new(unix: u64) -> Clock {
        Clock {
            // Only an origin: the clock never reads it again.
            start: Instant::now(),
            elapsed: Duration::ZERO,
            unix_start: unix,
        }
    }

    /// The time now.
    pub fn now(&self) -> Now {
        Now {
            instant: self.start + self.elapsed,
            unix: self.unix_start + self.elapsed.as_secs(),
        }
    }

    /// Moves time on by `d` (boringtun's clock too, with the feature `sim-time`).
    pub fn advance(&mut self, d: Duration) {
        self.elapsed += d;
        #[cfg(feature = "sim-time")]
        mock_instant::MockClock::advance(d);
    }

    /// Moves time on to `at`, if that is later.
    pub fn advance_to(&mut self, at: Instant) {
        let d = at.saturating_duration_since(self.start + self.elapsed);
        self.advance(d);
    }
}

/// Where persisted states go: the newest one, its version, and how many writes there were.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    /// The newest state written and its version.
    pub saved: Option<(u64, RelayState)>,
    /// When set, writes fail with this message.
    pub fail: Option<String>,
    /// Writes done (failed ones included).
    pub writes: u64,
    /// Whether the last write failed.
    pub last_failed: bool,
}

impl MemStore {
    /// Writes `state`, or fails as told.
    pub fn save(&mut self, version: u64, state: RelayState) -> Result<(), String> {
        self.writes += 1;
        self.last_failed = self.fail.is_some();
        if let Some(e) = &self.fail {
            return Err(e.clone());
        }
        self.saved = Some((version, state));
        Ok(())
    }

    /// The newest state written.
    pub fn state(&self) -> Option<&RelayState> {
        self.saved.as_ref().map(|(_, s)| s)
    }
}

/// A hub and everything around it.
pub struct Sim {
    /// The hub under test.
    pub hub: Hub,
    /// The virtual clock.
    pub clock: Clock,
    /// Where persisted states go.
    pub store: MemStore,
    /// Datagrams the hub sent since the last [`Sim::take_sent`], in order.
    pub sent: Vec<(SocketAddr, Vec<u8>)>,
    /// Packets the hub handed to the gateway.
    pub gateway: Vec<GatewayPacket>,
    /// Names the hub asked to resolve.
    pub lookups: Vec<LookupRequest>,
    /// Join requests handed to a worker (after [`Hub::use_join_worker`]).
    pub jobs: Vec<JoinJob>,
    /// Whether persist requests are written and reported at once (the default); when off,
    /// they wait in `writes` for [`Sim::complete_writes`].
    pub auto_persist: bool,
    /// Persist requests not yet written (with `auto_persist` off).
    pub writes: Vec<(u64, RelayState)>,
    /// `RegistryChanged` events seen.
    pub registry_changes: u64,
    /// `FrontsChanged` events seen.
    pub front_changes: u64,
}

impl Sim {
    /// A hub with [`config`] and `state`, randomness seeded with 1.
    pub fn new(state: RelayState) -> Result<Sim, HubError> {
        Sim::with(config(), state, 1)
    }

    /// A hub with `cfg`, `state` and randomness seeded with `seed`.
    pub fn with(cfg: HubConfig, state: RelayState, seed: u64) -> Result<Sim, HubError> {
        let clock = Clock::new(NOW);
        let rng = Box::new(rand_chacha::ChaCha20Rng::seed_from_u64(seed));
        let hub = Hub::new(cfg, state, clock.now(), rng)?;
        let mut sim = Sim {
            hub,
            clock,
            store: MemStore::default(),
            sent: Vec::new(),
            gateway: Vec::new(),
            lookups: Vec::new(),
            jobs: Vec::new(),
            auto_persist: true,
            writes: Vec::new(),
            registry_changes: 0,
            front_changes: 0,
        };
        sim.drain();
        Ok(sim)
    }

    /// A hub restarted from what the store holds, with the same clock.
    pub fn restart(&self, seed: u64) -> Result<Sim, HubError> {
        let state = self.store.state().cloned().unwrap_or_default();
        let mut sim = Sim::with(self.hub.config().clone(), state, seed)?;
        sim.clock = self.clock.clone();
        sim.store = self.store.clone();
        Ok(sim)
    }

    /// The time now.
    pub fn now(&self) -> Now {
        self.clock.now()
    }

    /// Sets the catalog to one remote service, `orders` on port 8080 at `orders.svc:8080`,
    /// as the hub's tests, the fuzz target and its seeds use it.
    pub fn set_orders_catalog(&mut self) -> Result<crate::names::registry::RemoteUpdate, HubError> {
        let now = self.now();
        self.hub.set_catalog(
            vec![crate::names::registry::RemoteEntry {
                name: "orders".into(),
                port: 8080,
                target: "orders.svc:8080".into(),
            }],
            now,
        )
    }

    /// Collects everything the hub has to say: datagrams, gateway packets, lookups, jobs, and
    /// persist requests (written and reported at once with `auto_persist`).
    pub fn drain(&mut self) {
        loop {
            while let Some(t) = self.hub.poll_transmit() {
                self.sent.push((t.destination, t.contents.to_vec()));
            }
            let Some(e) = self.hub.poll_event() else {
                return;
            };
            match e {
                Event::Gateway(p) => self.gateway.push(p),
                Event::Lookup(l) => self.lookups.push(l),
                Event::OpenJoin(j) => self.jobs.push(j),
                Event::RegistryChanged => self.registry_changes += 1,
                Event::FrontsChanged => self.front_changes += 1,
                Event::Persist { version, state } => {
                    self.writes.push((version, *state));
                    if self.auto_persist {
                        self.complete_writes();
                    }
                }
            }
        }
    }

    /// Writes the waiting persist requests to the store and reports each to the hub.
    pub fn complete_writes(&mut self) {
        for (version, state) in std::mem::take(&mut self.writes) {
            let now = self.now();
            match self.store.save(version, state) {
                Ok(()) => self.hub.persisted(now, version),
                Err(e) => self.hub.persist_failed(now, version, &e),
            }
        }
        self.drain();
    }

    /// The datagrams sent since the last call.
    pub fn take_sent(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.sent)
    }

    /// Hands the hub a datagram from `from`; returns what it sent in answer (to anyone).
    pub fn datagram(&mut self, from: SocketAddr, d: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        let now = self.now();
        self.hub.handle_datagram(now, from, d);
        self.drain();
        self.take_sent()
    }

    /// Hands the hub a packet from the gateway; returns what it sent.
    pub fn from_gateway(&mut self, packet: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        self.hub.handle_gateway_packet(packet);
        self.drain();
        self.take_sent()
    }

    /// Moves time on by `d`, running every timer when it is due; returns what was sent.
    pub fn advance(&mut self, d: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
        let end = self.clock.now().instant + d;
        while let Some(at) = self.hub.poll_timeout().filter(|at| *at <= end) {
            self.clock.advance_to(at);
            let now = self.now();
            self.hub.handle_timeout(now);
            self.drain();
        }
        self.clock.advance_to(end);
        self.take_sent()
    }
}

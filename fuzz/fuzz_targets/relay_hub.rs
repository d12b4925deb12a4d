//! The relay's whole datagram path (`relay::Hub`), as a sequence of events from the fuzz input.
//!
//! Each run starts a fresh hub (relay key `[9; 32]`, network 100.64.0.0/10, clock `NOW`) with
//! two registered peers `a` and `b` (keys `[1; 32]` and `[2; 32]`, the first two node prefixes),
//! one join token (`TOKEN_ID`, secret `[0xa5; 32]`, two uses), a remote service `orders`, names
//! on demand under `svc.cluster.local`, and callback ports; the state lives in an in-memory
//! store. The input is a list of chunks, each `op`, `len` (u16, little-endian; cut to what is
//! left), then `len` bytes. The op's bits:
//!
//! * 0-1: the source address, one of `SOURCES` (two IPv4 endpoints, a third one, an IPv6 one);
//! * 2-4: the action: 0-3 `on_datagram(source, bytes)`; 4-5 the bytes are an inner packet that
//!   a simulated node (a real boringtun `Tunn` with peer `a`'s or `b`'s key, by bit 5) sends
//!   through its tunnel from that source, and the exchange runs until quiet (so the fuzzer gets
//!   past the handshake and the encryption, to routing, the control channel and the gateway);
//!   6 `from_gateway(bytes)`; 7 an operation chosen by the first byte: `on_tick`, answer the
//!   pending lookups (resolved or not), make the store fail or work again, `greet`, remove
//!   peer `b`, revoke the token, turn names on demand off;
//! * 6-7: seconds the clock moves on before the chunk.
//!
//! Properties, besides never panicking:
//! * the hub only sends to addresses it has heard from in this run, datagrams of 1 to 65535
//!   bytes;
//! * what goes to the gateway comes from a registered node, is a valid IPv4 packet whose source
//!   is in that node's prefix (no spoofing through the gateway), and goes to the remote-service
//!   block, or is TCP to the relay's own address;
//! * what a simulated node decrypts is addressed to its own prefix, and every control datagram
//!   from the relay parses with `control::parse_reply` (so it fits in `MAX_CONTROL_LEN`);
//! * after every event the state in the store is the hub's state (what the relay acknowledged
//!   is on disk), the peers of the state are the peers of the routing table, and `stats`
//!   counts them.
//!
//! The seeds (fuzz/seeds/relay_hub/, made by fuzz/seedgen) hold real handshake initiations of
//! `a` and `b`, a valid join request for the token, control requests, forwarded and gateway
//! packets. Keep the constants in step with fuzz/seedgen/src/hub.rs.
//!
//! `RELAY_HUB_TRACE=1` prints each event and what the hub did on stderr (to check what a seed
//! or a crash input does: `cargo fuzz run -O relay_hub FILE`).
#![no_main]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::OnceLock;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use libfuzzer_sys::fuzz_target;
use overlay_core::addressing::AddressPlan;
use overlay_core::control::{self, CONTROL_PORT};
use overlay_core::gateway::CallbackPlan;
use overlay_core::key;
use overlay_core::prefix::Ipv4Prefix;
use overlay_core::registry::RemoteEntry;
use overlay_core::relay::state::{hex, RelayState, TokenRecord};
use overlay_core::relay::{
    Hub, HubConfig, LookupFailure, LookupRequest, OnDemandConfig, Store, Wire,
};
use overlay_core::token;
use overlay_core::wire::{self, IpProtocol};

const NOW: u64 = 1_800_000_000;
const RELAY_SECRET: [u8; 32] = [9; 32];
const NODE_SECRETS: [[u8; 32]; 2] = [[1; 32], [2; 32]];
const NODE_NAMES: [&str; 2] = ["a", "b"];
const TOKEN_ID: &str = "0123456789abcdef";
const TOKEN_SECRET: [u8; 32] = [0xa5; 32];
const SOURCES: [&str; 4] = [
    "10.0.0.1:1000",
    "10.0.0.2:2000",
    "192.0.2.7:4000",
    "[2001:db8::7]:51820",
];
const MAX_CHUNKS: usize = 24;

fn tracing() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("RELAY_HUB_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!($($arg)*);
        }
    };
}

/// Datagrams the hub sent, packets it handed to the gateway, names it asked to resolve.
#[derive(Default)]
struct Outbox {
    sent: Vec<(SocketAddr, Vec<u8>)>,
    gateway: Vec<(String, Option<String>, Vec<u8>)>,
    lookups: Vec<LookupRequest>,
}

impl Wire for Outbox {
    fn send(&mut self, to: SocketAddr, d: &[u8]) {
        self.sent.push((to, d.to_vec()));
    }

    fn send_to_gateway(&mut self, node: &str, target: Option<&str>, packet: &[u8]) {
        self.gateway.push((
            node.to_string(),
            target.map(str::to_string),
            packet.to_vec(),
        ));
    }

    fn resolve(&mut self, request: LookupRequest) {
        self.lookups.push(request);
    }
}

/// Keeps the last saved state; can be told to fail.
#[derive(Clone, Default)]
struct MemStore {
    saved: Rc<RefCell<Option<RelayState>>>,
    fail: Rc<Cell<bool>>,
}

impl Store for MemStore {
    fn save(&mut self, state: &RelayState) -> Result<(), String> {
        if self.fail.get() {
            return Err("disk full".into());
        }
        *self.saved.borrow_mut() = Some(state.clone());
        Ok(())
    }
}

/// The nodes' public keys, computed once (X25519 is most of the cost of a run).
fn node_keys() -> &'static [String; 2] {
    static K: OnceLock<[String; 2]> = OnceLock::new();
    K.get_or_init(|| {
        NODE_SECRETS.map(|s| key::encode(PublicKey::from(&StaticSecret::from(s)).as_bytes()))
    })
}

struct Run {
    hub: Hub<MemStore>,
    store: MemStore,
    sources: [SocketAddr; 4],
    heard: [bool; 4],
    /// The simulated nodes, made when first used.
    nodes: [Option<Tunn>; 2],
    /// The prefixes `a` and `b` were given.
    node_prefix: [Ipv4Prefix; 2],
    /// Every node name seen in this run and its latest prefix.
    prefixes: BTreeMap<String, Ipv4Prefix>,
    relay: Ipv4Addr,
    remote_block: Ipv4Prefix,
    pending_lookups: Vec<u64>,
    now: u64,
    buf: Vec<u8>,
}

impl Run {
    fn new() -> Run {
        let store = MemStore::default();
        let state = RelayState {
            tokens: vec![TokenRecord {
                id: TOKEN_ID.into(),
                secret_hash: hex(&token::hash_secret(&TOKEN_SECRET)),
                created: NOW - 60,
                expires: NOW + 86_400,
                uses_left: 2,
                uses: 2,
                name_prefix: Some("dev-".into()),
                revoked: false,
                used_by: vec![],
            }],
            ..RelayState::default()
        };
        let plan = AddressPlan::new("100.64.0.0/10".parse().unwrap()).unwrap();
        let (relay, remote_block) = (plan.relay_addr(), plan.remote_block());
        let cfg = HubConfig {
            private_key: RELAY_SECRET,
            plan,
            endpoints: vec!["10.0.0.254:51820".into()],
            url: None,
            domain: "ovl.internal".into(),
            mtu: 1420,
        };
        let mut hub = Hub::new(cfg, state, store.clone(), NOW).expect("the hub starts");
        let mut node_prefix = Vec::new();
        for (name, public) in NODE_NAMES.iter().zip(node_keys()) {
            let added = hub.peer_add(name, public, NOW).expect("peer added");
            node_prefix.push(added.prefix.parse::<Ipv4Prefix>().unwrap());
        }
        hub.set_catalog(vec![RemoteEntry {
            name: "orders".into(),
            port: 8080,
            target: "orders.svc:8080".into(),
        }])
        .expect("catalog set");
        hub.set_on_demand(OnDemandConfig {
            enabled: true,
            suffixes: vec!["svc.cluster.local".into()],
            ttl_secs: 60,
        });
        hub.set_callback_plan(CallbackPlan {
            ports: Some("30000-30001".parse().unwrap()),
            host: "relay.staging".into(),
            http_port: Some(8000),
        });
        let mut run = Run {
            hub,
            store,
            sources: SOURCES.map(|s| s.parse().unwrap()),
            heard: [false; 4],
            nodes: [None, None],
            node_prefix: [node_prefix[0], node_prefix[1]],
            prefixes: BTreeMap::new(),
            relay,
            remote_block,
            pending_lookups: Vec::new(),
            now: NOW,
            buf: vec![0; 65536],
        };
        run.refresh_prefixes();
        run.check_state();
        run
    }

    fn refresh_prefixes(&mut self) {
        for n in self.hub.nodes() {
            let p = n.prefix.parse().expect("a node's prefix parses");
            self.prefixes.insert(n.name, p);
        }
    }

    /// What the hub did in one call.
    fn check_out(&mut self, out: &Outbox) {
        self.refresh_prefixes();
        for (to, d) in &out.sent {
            trace!("    hub -> {to}: {} bytes (type {})", d.len(), d[0]);
        }
        for (node, target, p) in &out.gateway {
            trace!(
                "    hub -> gateway: {} bytes from {node} for {target:?}",
                p.len()
            );
        }
        for l in &out.lookups {
            trace!("    hub -> resolver: {:?}", l.name);
        }
        for (to, d) in &out.sent {
            let i = self.sources.iter().position(|s| s == to);
            assert!(
                i.is_some_and(|i| self.heard[i]),
                "the hub sent {} bytes to {to}, which it never heard from",
                d.len()
            );
            assert!(
                !d.is_empty() && d.len() <= 65535,
                "a datagram of {} bytes",
                d.len()
            );
        }
        for (node, target, p) in &out.gateway {
            let prefix = self
                .prefixes
                .get(node)
                .unwrap_or_else(|| panic!("a packet for the gateway from unknown node {node:?}"));
            let ip = wire::ipv4(p).expect("the gateway gets a valid IPv4 packet");
            assert!(
                prefix.contains(ip.src_addr()),
                "node {node} ({prefix}) sent {} to the gateway",
                ip.src_addr()
            );
            match target {
                Some(t) => {
                    assert!(
                        self.remote_block.contains(ip.dst_addr()),
                        "{} for {t}",
                        ip.dst_addr()
                    );
                    assert!(!t.is_empty());
                }
                None => {
                    assert!(ip.dst_addr() == self.relay && ip.next_header() == IpProtocol::Tcp)
                }
            }
        }
        for l in &out.lookups {
            assert!(!l.name.is_empty());
            self.pending_lookups.push(l.token);
        }
    }

    /// The persisted state and the live tables agree.
    fn check_state(&self) {
        let state = self.hub.state();
        if let Some(saved) = self.store.saved.borrow().as_ref() {
            assert!(saved == state, "the hub's state is not the saved one");
        }
        let mut live: Vec<String> = self.hub.nodes().into_iter().map(|n| n.name).collect();
        let mut persisted: Vec<String> = state.peers.iter().map(|p| p.name.clone()).collect();
        live.sort();
        persisted.sort();
        assert_eq!(live, persisted, "routing table and persisted peers differ");
        assert_eq!(self.hub.stats(self.now).peers, live.len());
    }

    fn datagram(&mut self, src: usize, d: &[u8]) -> Outbox {
        self.heard[src] = true;
        let mut out = Outbox::default();
        self.hub
            .on_datagram(self.sources[src], d, self.now, &mut out);
        self.check_out(&out);
        out
    }

    /// What simulated node `n` decrypted.
    fn received(&self, n: usize, p: &[u8]) {
        let ip = wire::ipv4(p).expect("boringtun hands over valid IPv4");
        trace!(
            "    node {} decrypted {} bytes {} -> {} proto {}: {}",
            NODE_NAMES[n],
            p.len(),
            ip.src_addr(),
            ip.dst_addr(),
            ip.next_header(),
            String::from_utf8_lossy(&ip.payload()[ip.payload().len().min(8)..])
        );
        assert!(
            self.node_prefix[n].contains(ip.dst_addr()),
            "node {} got a packet for {}",
            NODE_NAMES[n],
            ip.dst_addr()
        );
        if ip.src_addr() == self.relay && ip.next_header() == IpProtocol::Udp {
            if let Ok(u) = wire::udp(&ip) {
                if u.src_port() == CONTROL_PORT {
                    if let Err(e) = control::parse_reply(u.payload()) {
                        panic!(
                            "node {} cannot read the relay's control datagram: {e}\n{}",
                            NODE_NAMES[n],
                            String::from_utf8_lossy(&u.payload()[..u.payload().len().min(400)])
                        );
                    }
                }
            }
        }
    }

    /// Node `n` sends `inner` through its tunnel from source `src`; runs until quiet.
    fn tunnel(&mut self, n: usize, src: usize, inner: &[u8]) {
        let hub_public = PublicKey::from(self.hub.public_key());
        let mut tunn = self.nodes[n].take().unwrap_or_else(|| {
            Tunn::new(
                StaticSecret::from(NODE_SECRETS[n]),
                hub_public,
                None,
                None,
                n as u32 + 1,
                None,
            )
        });
        let mut buf = std::mem::take(&mut self.buf);
        let mut to_hub = Vec::new();
        if let TunnResult::WriteToNetwork(d) = tunn.encapsulate(inner, &mut buf) {
            to_hub.push(d.to_vec());
        }
        for _ in 0..8 {
            if to_hub.is_empty() {
                break;
            }
            let mut back = Vec::new();
            for d in to_hub.drain(..) {
                let out = self.datagram(src, &d);
                back.extend(
                    out.sent
                        .into_iter()
                        .filter(|(to, _)| *to == self.sources[src]),
                );
            }
            for (_, d) in back {
                let mut r = tunn.decapsulate(None, &d, &mut buf);
                loop {
                    match r {
                        TunnResult::WriteToNetwork(p) => to_hub.push(p.to_vec()),
                        TunnResult::WriteToTunnelV4(p, _) => self.received(n, p),
                        _ => break,
                    }
                    r = tunn.decapsulate(None, &[], &mut buf);
                }
            }
        }
        self.buf = buf;
        self.nodes[n] = Some(tunn);
    }

    fn operation(&mut self, which: u8) {
        let mut out = Outbox::default();
        match which % 8 {
            0 => self.hub.on_tick(self.now, &mut out),
            op @ (1 | 2) => {
                for token in std::mem::take(&mut self.pending_lookups) {
                    let result = if op == 1 {
                        Ok(())
                    } else {
                        Err(LookupFailure::NotFound("no such host".into()))
                    };
                    self.hub.lookup_done(token, result, self.now, &mut out);
                }
            }
            3 => self.store.fail.set(!self.store.fail.get()),
            4 => self.hub.greet(&mut out),
            5 => {
                let _ = self.hub.peer_remove("b");
            }
            6 => {
                let _ = self.hub.token_revoke(TOKEN_ID);
            }
            _ => self.hub.set_on_demand(OnDemandConfig {
                enabled: false,
                ..OnDemandConfig::default()
            }),
        }
        self.check_out(&out);
    }

    fn step(&mut self, op: u8, data: &[u8]) {
        self.now += u64::from(op >> 6);
        let src = usize::from(op & 3);
        trace!(
            "event op {op:#04x} (action {}, source {}) with {} bytes, t+{}",
            (op >> 2) & 7,
            self.sources[src],
            data.len(),
            self.now - NOW
        );
        match (op >> 2) & 7 {
            0..=3 => {
                self.datagram(src, data);
            }
            4 | 5 => self.tunnel(usize::from((op >> 5) & 1), src, data),
            6 => {
                let mut out = Outbox::default();
                self.hub.from_gateway(data, &mut out);
                self.check_out(&out);
            }
            _ => self.operation(data.first().copied().unwrap_or(0)),
        }
        self.check_state();
    }
}

fuzz_target!(|data: &[u8]| {
    let mut run = Run::new();
    let mut rest = data;
    for _ in 0..MAX_CHUNKS {
        let Some((&op, tail)) = rest.split_first() else {
            break;
        };
        let len = match tail {
            [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi])),
            _ => 0,
        };
        let tail = tail.get(2..).unwrap_or(&[]);
        let (chunk, next) = tail.split_at(len.min(tail.len()));
        run.step(op, chunk);
        rest = next;
    }
    trace!(
        "end: nodes {:?}",
        run.hub.nodes().iter().map(|n| &n.name).collect::<Vec<_>>()
    );
    trace!("end: stats {:?}", run.hub.stats(run.now).global);
    let _ = run.hub.services();
    let _ = run.hub.callback_routes();
});

//! The relay's whole datagram path (`relay::Hub`), as a sequence of events from the fuzz input.
//!
//! Each run starts a fresh hub in `overlay_core::testing::Sim` (relay key `[9; 32]`, network
//! 100.64.0.0/10, a virtual clock from `NOW` that boringtun follows, seeded randomness) with
//! two registered peers `a` and `b` (keys `[1; 32]` and `[2; 32]`, the first two node prefixes),
//! one join token (`TOKEN_ID`, secret `[0xa5; 32]`, two uses), a remote service `orders`, names
//! on demand under `svc.cluster.local`, and callback ports; the state is written to an in-memory
//! store as the hub asks. The input is a list of chunks, each `op`, `len` (u16, little-endian; cut to what is
//! left), then `len` bytes. The op's bits:
//!
//! * 0-1: the source address, one of `SOURCES` (two IPv4 endpoints, a third one, an IPv6 one);
//! * 2-4: the action: 0-3 `handle_datagram(source, bytes)`; 4-5 the bytes are an inner packet that
//!   a simulated node (a real boringtun `Tunn` with peer `a`'s or `b`'s key, by bit 5) sends
//!   through its tunnel from that source, and the exchange runs until quiet (so the fuzzer gets
//!   past the handshake and the encryption, to routing, the control channel and the gateway);
//!   6 `handle_gateway_packet(bytes)`; 7 an operation chosen by the first byte: 100 ms of timers, answer the
//!   pending lookups (resolved or not), make the store fail or work again, `greet`, remove
//!   peer `b`, revoke the token, turn names on demand off;
//! * 6-7: seconds the clock moves on (timers running) before the chunk.
//!
//! Properties, besides never panicking:
//! * the hub only sends to addresses it has heard from in this run, datagrams of 1 to 65535
//!   bytes;
//! * what goes to the gateway comes from a registered node, is a valid IPv4 packet whose source
//!   is in that node's prefix (no spoofing through the gateway), and goes to the remote-service
//!   block, or is TCP to the relay's own address;
//! * what a simulated node decrypts is addressed to its own prefix, and every control datagram
//!   from the relay parses with `control::parse_reply` (so it fits in `MAX_CONTROL_LEN`);
//! * after every event no reply waits for the disk unless the last write failed (the store
//!   answers at once; after a failure replies wait for the retry a second later), the store holds
//!   the version the hub counts as durable and, when nothing is unsaved, the hub's state; the
//!   peers of the state are the peers of the routing table, and `stats` counts them.
//!
//! The seeds (fuzz/seeds/relay_hub/, made by fuzz/seedgen) hold real handshake initiations of
//! `a` and `b`, a valid join request for the token, control requests, forwarded and gateway
//! packets. Keep the constants in step with fuzz/seedgen/src/hub.rs.
//!
//! `RELAY_HUB_TRACE=1` prints each event and what the hub did on stderr (to check what a seed
//! or a crash input does: `cargo fuzz run -O relay_hub FILE`).
#![no_main]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use overlay_core::identity::key;
use overlay_core::identity::token;
use overlay_core::net::prefix::Ipv4Prefix;
use overlay_core::net::wire::{self, IpProtocol};
use overlay_core::relay::gateway::CallbackPlan;
use overlay_core::relay::state::{hex, RelayState, TokenRecord};
use overlay_core::relay::OnDemandConfig;
use overlay_core::testing::{self, Sim, SimNode, NOW};
use overlay_core::transport::control::{self, CONTROL_PORT};

const NODE_KEYS: [u8; 2] = [1, 2];
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

/// The nodes' public keys, computed once (X25519 is most of the cost of a run).
fn node_keys() -> &'static [String; 2] {
    static K: OnceLock<[String; 2]> = OnceLock::new();
    K.get_or_init(|| NODE_KEYS.map(|k| key::encode(&testing::public(k))))
}

struct Run {
    sim: Sim,
    sources: [SocketAddr; 4],
    heard: [bool; 4],
    /// The simulated nodes, made when first used.
    nodes: [Option<SimNode>; 2],
    /// The prefixes `a` and `b` were given.
    node_prefix: [Ipv4Prefix; 2],
    /// Every node name seen in this run and its latest prefix.
    prefixes: BTreeMap<String, Ipv4Prefix>,
    relay: Ipv4Addr,
    remote_block: Ipv4Prefix,
    pending_lookups: Vec<u64>,
}

impl Run {
    fn new() -> Run {
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
        let cfg = testing::config();
        let (relay, remote_block) = (cfg.plan.relay_addr(), cfg.plan.remote_block());
        let mut sim = Sim::with(cfg, state, 1).expect("the hub starts");
        let mut node_prefix = Vec::new();
        for (name, public) in NODE_NAMES.iter().zip(node_keys()) {
            let now = sim.now();
            let added = sim.hub.peer_add(name, public, now).expect("peer added");
            node_prefix.push(added.prefix.parse::<Ipv4Prefix>().unwrap());
        }
        sim.set_orders_catalog().expect("catalog set");
        sim.hub.set_on_demand(OnDemandConfig {
            enabled: true,
            suffixes: vec!["svc.cluster.local".into()],
            ttl_secs: 60,
        });
        sim.hub.set_callback_plan(CallbackPlan {
            ports: Some("30000-30001".parse().unwrap()),
            host: "relay.staging".into(),
            http_port: Some(8000),
        });
        sim.drain();
        sim.take_sent();
        let mut run = Run {
            sim,
            sources: SOURCES.map(|s| s.parse().unwrap()),
            heard: [false; 4],
            nodes: [None, None],
            node_prefix: [node_prefix[0], node_prefix[1]],
            prefixes: BTreeMap::new(),
            relay,
            remote_block,
            pending_lookups: Vec::new(),
        };
        run.refresh_prefixes();
        run.check_state();
        run
    }

    fn refresh_prefixes(&mut self) {
        for n in self.sim.hub.nodes() {
            let p = n.prefix.parse().expect("a node's prefix parses");
            self.prefixes.insert(n.name, p);
        }
    }

    /// What the hub did in one call: returns the datagrams it sent.
    fn check_out(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.refresh_prefixes();
        let sent = self.sim.take_sent();
        let gateway = std::mem::take(&mut self.sim.gateway);
        let lookups = std::mem::take(&mut self.sim.lookups);
        for (to, d) in &sent {
            trace!("    hub -> {to}: {} bytes (type {})", d.len(), d[0]);
        }
        for p in &gateway {
            trace!(
                "    hub -> gateway: {} bytes from {} for {:?}",
                p.packet.len(),
                p.node,
                p.target
            );
        }
        for l in &lookups {
            trace!("    hub -> resolver: {:?}", l.name);
        }
        for (to, d) in &sent {
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
        for p in &gateway {
            let (node, target) = (&p.node, &p.target);
            let prefix = self
                .prefixes
                .get(node)
                .unwrap_or_else(|| panic!("a packet for the gateway from unknown node {node:?}"));
            let ip = wire::ipv4(&p.packet).expect("the gateway gets a valid IPv4 packet");
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
                None => assert!(ip.dst_addr() == self.relay && ip.next_header() == IpProtocol::Tcp),
            }
        }
        for l in &lookups {
            assert!(!l.name.is_empty());
            self.pending_lookups.push(l.token);
        }
        sent
    }

    /// The persisted state and the live tables agree.
    fn check_state(&self) {
        let hub = &self.sim.hub;
        // Writes complete at once here; after a failed one, replies wait for its retry.
        assert!(
            hub.held_replies() == 0 || self.sim.store.last_failed,
            "a reply waits although the store answered"
        );
        let saved_version = self.sim.store.saved.as_ref().map_or(0, |(v, _)| *v);
        assert_eq!(
            saved_version,
            hub.persisted_version(),
            "the hub counts another version durable than the store holds"
        );
        let state = hub.snapshot();
        if hub.persisted_version() == hub.state_version() {
            if let Some(saved) = self.sim.store.state() {
                assert!(*saved == state, "nothing is unsaved, but the store differs");
            }
        }
        let mut live: Vec<String> = hub.nodes().into_iter().map(|n| n.name).collect();
        let mut persisted: Vec<String> = state.peers.iter().map(|p| p.name.clone()).collect();
        live.sort();
        persisted.sort();
        assert_eq!(live, persisted, "routing table and persisted peers differ");
        assert_eq!(hub.stats(self.sim.now().unix).peers, live.len());
    }

    fn datagram(&mut self, src: usize, d: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        self.heard[src] = true;
        let now = self.sim.now();
        self.sim.hub.handle_datagram(now, self.sources[src], d);
        self.sim.drain();
        self.check_out()
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
        let hub_public = self.sim.hub.public_key();
        let mut node = self.nodes[n]
            .take()
            .unwrap_or_else(|| SimNode::new(hub_public, NODE_KEYS[n], Ipv4Addr::UNSPECIFIED, 1));
        node.addr = self.sources[src];
        let mut buf = vec![0u8; 65536];
        let mut to_hub = Vec::new();
        if let boringtun::noise::TunnResult::WriteToNetwork(d) =
            node.tunn.encapsulate(inner, &mut buf)
        {
            to_hub.push(d.to_vec());
        }
        for _ in 0..8 {
            if to_hub.is_empty() {
                break;
            }
            let mut back = Vec::new();
            for d in to_hub.drain(..) {
                let out = self.datagram(src, &d);
                back.extend(out.into_iter().filter(|(to, _)| *to == self.sources[src]));
            }
            for (_, d) in back {
                let (more, got) = node.receive(&d);
                to_hub.extend(more);
                for p in got {
                    self.received(n, &p);
                }
            }
        }
        self.nodes[n] = Some(node);
    }

    fn operation(&mut self, which: u8) {
        let now = self.sim.now();
        match which % 8 {
            0 => {
                let sent = self.sim.advance(Duration::from_millis(100));
                self.sim.sent.extend(sent);
            }
            op @ (1 | 2) => {
                for token in std::mem::take(&mut self.pending_lookups) {
                    let result = if op == 1 {
                        Ok(())
                    } else {
                        Err(overlay_core::relay::LookupFailure::NotFound(
                            "no such host".into(),
                        ))
                    };
                    self.sim.hub.lookup_done(now, token, result);
                }
            }
            3 => {
                self.sim.store.fail = match self.sim.store.fail {
                    Some(_) => None,
                    None => Some("disk full".into()),
                }
            }
            4 => self.sim.hub.greet(),
            5 => {
                let _ = self.sim.hub.peer_remove("b", now);
            }
            6 => {
                let _ = self.sim.hub.token_revoke(TOKEN_ID, now);
            }
            _ => self.sim.hub.set_on_demand(OnDemandConfig {
                enabled: false,
                ..OnDemandConfig::default()
            }),
        }
        self.sim.drain();
        self.check_out();
    }

    fn step(&mut self, op: u8, data: &[u8]) {
        let sent = self.sim.advance(Duration::from_secs(u64::from(op >> 6)));
        self.sim.sent.extend(sent);
        self.check_out();
        let src = usize::from(op & 3);
        trace!(
            "event op {op:#04x} (action {}, source {}) with {} bytes, t+{}",
            (op >> 2) & 7,
            self.sources[src],
            data.len(),
            self.sim.now().unix - NOW
        );
        match (op >> 2) & 7 {
            0..=3 => {
                self.datagram(src, data);
            }
            4 | 5 => self.tunnel(usize::from((op >> 5) & 1), src, data),
            6 => {
                self.sim.hub.handle_gateway_packet(data);
                self.sim.drain();
                self.check_out();
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
    let hub = &run.sim.hub;
    trace!(
        "end: nodes {:?}",
        hub.nodes().iter().map(|n| &n.name).collect::<Vec<_>>()
    );
    trace!("end: stats {:?}", hub.stats(run.sim.now().unix).global);
    let _ = hub.services();
    let _ = hub.callback_routes();
});

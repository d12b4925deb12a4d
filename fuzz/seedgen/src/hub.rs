//! Seeds of fuzz_targets/relay_hub.rs: event lists in its chunk format (`op`, `len` u16 LE,
//! bytes). The constants and the hub set-up follow that target; keep them in step.

use std::net::Ipv4Addr;
use std::path::Path;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use overlay_core::transport::control::{self, ControlMessage, ControlRequest, CONTROL_PORT};
use overlay_core::identity::join::{JoinInitiator, JoinRequest};
use overlay_core::identity::key;
use overlay_core::net::wire::{build_echo_request, build_ipv4, build_udp, IpProtocol};
use overlay_core::names::registry::Protocol;
use overlay_core::relay::state::RelayState;
use overlay_core::testing::{Sim, NOW};

use crate::write;

const NODE_SECRETS: [[u8; 32]; 2] = [[1; 32], [2; 32]];
const NODE_NAMES: [&str; 2] = ["a", "b"];
const TOKEN_ID: &str = "0123456789abcdef";
/// `[0xa5; 32]` as unpadded base64url: the token secret of the target's token.
const TOKEN_SECRET_B64: &str = "paWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaU";
/// The key of a node that joins with the token (not registered).
const JOINER_SECRET: [u8; 32] = [3; 32];

/// Sources (bits 0-1 of an op): a's, b's, a third IPv4 one, an IPv6 one.
const SRC_A: u8 = 0;
const SRC_B: u8 = 1;
const SRC_OTHER: u8 = 2;
const SRC_V6: u8 = 3;

/// What the seeds need from the target's set-up: the nodes' addresses and `orders`'s.
struct Fixture {
    relay: Ipv4Addr,
    a: Ipv4Addr,
    b: Ipv4Addr,
    orders: Ipv4Addr,
    relay_public: [u8; 32],
}

/// The target's hub (the same simulation, `overlay_core::testing`), set up as the target does.
fn fixture() -> Fixture {
    let mut sim = Sim::new(RelayState::default()).unwrap();
    let relay = sim.hub.config().plan.relay_addr();
    let mut addrs = Vec::new();
    for (name, secret) in NODE_NAMES.iter().zip(NODE_SECRETS) {
        let public = PublicKey::from(&StaticSecret::from(secret));
        let now = sim.now();
        let added = sim
            .hub
            .peer_add(name, &key::encode(public.as_bytes()), now)
            .unwrap();
        addrs.push(added.address.parse::<Ipv4Addr>().unwrap());
    }
    sim.set_orders_catalog()
        .unwrap();
    let orders = sim
        .hub
        .services()
        .into_iter()
        .find(|s| s.name == "orders")
        .unwrap()
        .address;
    Fixture {
        relay,
        a: addrs[0],
        b: addrs[1],
        orders,
        relay_public: sim.hub.public_key(),
    }
}

/// A list of events.
#[derive(Default)]
struct Events(Vec<u8>);

impl Events {
    fn chunk(mut self, op: u8, data: &[u8]) -> Self {
        self.0.push(op);
        self.0.extend_from_slice(&(data.len() as u16).to_le_bytes());
        self.0.extend_from_slice(data);
        self
    }

    /// `handle_datagram(source, d)`.
    fn raw(self, src: u8, d: &[u8]) -> Self {
        self.chunk(src, d)
    }

    /// Node `node` (0 = a, 1 = b) sends `inner` through its tunnel from `src`.
    fn tunnel(self, node: u8, src: u8, inner: &[u8]) -> Self {
        self.chunk(src | 4 << 2 | node << 5, inner)
    }

    fn from_gateway(self, packet: &[u8]) -> Self {
        self.chunk(6 << 2, packet)
    }

    /// Operation `which`: 0 tick, 1/2 lookups resolved/failed, 3 store fails/works,
    /// 4 greet, 5 remove b, 6 revoke the token, 7 names on demand off.
    fn op(self, which: u8) -> Self {
        self.chunk(7 << 2, &[which])
    }

    /// Moves the clock by `secs` (0-3) before the next chunk: an op 7 with a tick.
    fn later(self, secs: u8) -> Self {
        self.chunk(7 << 2 | secs << 6, &[0])
    }
}

fn handshake_init(node: usize, relay_public: [u8; 32]) -> Vec<u8> {
    let mut t = Tunn::new(
        StaticSecret::from(NODE_SECRETS[node]),
        PublicKey::from(relay_public),
        None,
        None,
        node as u32 + 1,
        None,
    );
    let mut buf = vec![0u8; 2048];
    match t.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        _ => panic!("no handshake initiation"),
    }
}

fn join_request(relay_public: [u8; 32], secret: &str, name: Option<&str>) -> Vec<u8> {
    let req: JoinRequest = serde_json::from_value(serde_json::json!({
        "token_id": TOKEN_ID,
        "token_secret": secret,
        "name": name,
        "timestamp": NOW,
    }))
    .unwrap();
    let node = x25519_dalek::StaticSecret::from(JOINER_SECRET);
    JoinInitiator::new(&node, relay_public, &req, &mut rand_core::OsRng)
        .unwrap()
        .1
}

fn control_packet(from: Ipv4Addr, relay: Ipv4Addr, id: u64, request: ControlRequest) -> Vec<u8> {
    let payload = control::encode(&ControlMessage { id, request });
    build_udp(from, 40_000, relay, CONTROL_PORT, &payload)
}

fn raw_control(from: Ipv4Addr, relay: Ipv4Addr, json: &str) -> Vec<u8> {
    build_udp(from, 40_001, relay, CONTROL_PORT, json.as_bytes())
}

pub fn seeds(out: &Path) {
    let f = fixture();
    let (a, b, relay) = (f.a, f.b, f.relay);
    let w = |name: &str, e: Events| write(out, "relay_hub", name, &e.0);
    let init_a = handshake_init(0, f.relay_public);
    let init_b = handshake_init(1, f.relay_public);
    let ping_a = build_echo_request(a, relay, 1, 1, b"ping");
    let ping_b = build_echo_request(b, relay, 2, 1, b"ping");
    let register = |id, name: &str, tag: Option<&str>, protocol| {
        control_packet(
            a,
            relay,
            id,
            ControlRequest::Register {
                name: name.into(),
                tag: tag.map(Into::into),
                port: 8080,
                protocol,
            },
        )
    };
    let lookup =
        |id, name: &str| control_packet(a, relay, id, ControlRequest::Lookup { name: name.into() });

    // Raw handshake initiations: the hub answers with a handshake response.
    w("wg-init-a", Events::default().raw(SRC_A, &init_a));
    w(
        "wg-init-b-ipv6",
        Events::default().raw(SRC_V6, &init_b).op(0),
    );
    w(
        "wg-init-replayed",
        Events::default()
            .raw(SRC_A, &init_a)
            .raw(SRC_OTHER, &init_a)
            .later(1),
    );
    // Join requests for the target's token: valid (with and without a name), bad secret, replay.
    let join = join_request(f.relay_public, TOKEN_SECRET_B64, Some("laptop"));
    w("join-request", Events::default().raw(SRC_OTHER, &join));
    w(
        "join-request-unnamed-twice",
        Events::default()
            .raw(
                SRC_V6,
                &join_request(f.relay_public, TOKEN_SECRET_B64, None),
            )
            .raw(SRC_OTHER, &join),
    );
    w(
        "join-bad-secret",
        Events::default().raw(
            SRC_OTHER,
            &join_request(
                f.relay_public,
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                None,
            ),
        ),
    );
    w(
        "join-replayed",
        Events::default().raw(SRC_OTHER, &join).raw(SRC_V6, &join),
    );
    w(
        "join-revoked",
        Events::default().op(6).raw(SRC_OTHER, &join),
    );
    // Through the tunnel: pings, forwarding, roaming, spoofing, the gateway.
    w("ping-a", Events::default().tunnel(0, SRC_A, &ping_a));
    w(
        "a-to-b",
        Events::default().tunnel(1, SRC_B, &ping_b).tunnel(
            0,
            SRC_A,
            &build_udp(a, 5000, b, 6000, b"to b"),
        ),
    );
    w(
        "roam",
        Events::default()
            .tunnel(0, SRC_A, &ping_a)
            .tunnel(0, SRC_OTHER, &ping_a)
            .op(0)
            .op(4),
    );
    w(
        "spoofed-source",
        Events::default().tunnel(0, SRC_A, &build_udp(b, 1, relay, CONTROL_PORT, b"{}")),
    );
    w(
        "gateway",
        Events::default()
            .tunnel(0, SRC_A, &build_udp(a, 5000, f.orders, 8080, b"GET"))
            .from_gateway(&build_udp(f.orders, 8080, a, 5000, b"200")),
    );
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&5000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&30000u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x12;
    w(
        "callback-tcp",
        Events::default()
            .tunnel(0, SRC_A, &register(1, "api", None, Protocol::Tcp))
            .tunnel(0, SRC_A, &build_ipv4(a, relay, IpProtocol::Tcp, &tcp)),
    );
    // The control channel.
    w(
        "control-ping",
        Events::default().tunnel(0, SRC_A, &control_packet(a, relay, 1, ControlRequest::Ping)),
    );
    w(
        "control-register-unregister",
        Events::default()
            .tunnel(0, SRC_A, &register(1, "api", Some("v2"), Protocol::Tcp))
            .tunnel(1, SRC_B, &ping_b)
            .tunnel(0, SRC_A, &register(2, "metrics", None, Protocol::Udp))
            .tunnel(
                0,
                SRC_A,
                &control_packet(
                    a,
                    relay,
                    3,
                    ControlRequest::Unregister {
                        name: "api".into(),
                        tag: Some("v2".into()),
                    },
                ),
            )
            .op(0),
    );
    w(
        "control-pull",
        Events::default()
            .tunnel(0, SRC_A, &register(1, "api", None, Protocol::Tcp))
            .tunnel(
                0,
                SRC_A,
                &raw_control(
                    a,
                    relay,
                    r#"{"id":2,"op":"pull","want":{"pull":"snapshot"}}"#,
                ),
            )
            .tunnel(
                0,
                SRC_A,
                &raw_control(
                    a,
                    relay,
                    r#"{"id":3,"op":"pull","want":{"pull":"changes","epoch":0,"seq":0}}"#,
                ),
            ),
    );
    w(
        "control-lookup",
        Events::default()
            .tunnel(0, SRC_A, &lookup(1, "inventory"))
            .op(1)
            .tunnel(0, SRC_A, &lookup(2, "redis.default.svc.cluster.local"))
            .op(2)
            .tunnel(0, SRC_A, &lookup(3, "inventory")),
    );
    w(
        "control-leave",
        Events::default()
            .tunnel(
                0,
                SRC_A,
                &control_packet(a, relay, 1, ControlRequest::Leave),
            )
            .tunnel(0, SRC_A, &ping_a)
            .raw(SRC_OTHER, &join),
    );
    w(
        "control-malformed",
        Events::default().tunnel(0, SRC_A, &raw_control(a, relay, r#"{"id":1,"op":"fly"}"#)),
    );
    // Persistence failing, admin operations.
    w(
        "store-fails",
        Events::default()
            .op(3)
            .tunnel(0, SRC_A, &register(1, "api", None, Protocol::Tcp))
            .raw(SRC_OTHER, &join)
            .op(3)
            .tunnel(0, SRC_OTHER, &ping_a)
            .op(0),
    );
    w(
        "admin",
        Events::default()
            .tunnel(1, SRC_B, &ping_b)
            .op(5)
            .tunnel(0, SRC_A, &build_udp(a, 1, b, 2, b"gone"))
            .op(7)
            .tunnel(0, SRC_A, &lookup(1, "x")),
    );
}

//! The hub in an in-memory network (`crate::testing`): real boringtun peers, a virtual
//! clock, no sockets, no root.

use super::state::RelayState;
use super::*;
use crate::identity::join::cookie::Notice;
use crate::identity::join::{JoinInitiator, JoinRequest, JoinResponse, Reply};
use crate::identity::token::Token;
use crate::net::wire::{self, build_echo_request, build_udp};
use crate::testing::{public, secret, Sim, SimNode, NOW};
use crate::transport::control::{
    self, ControlMessage, ControlReply, ControlRequest, ErrorCode, CONTROL_PORT,
};
use rand_core::OsRng;
use std::net::Ipv4Addr;
use std::time::Duration;

fn sim() -> Sim {
    Sim::new(RelayState::default()).unwrap()
}

fn node(sim: &Sim, key: u8, ip: Ipv4Addr, port: u16) -> SimNode {
    SimNode::new(sim.hub.public_key(), key, ip, port)
}

fn add(sim: &mut Sim, name: &str, key: u8) -> Ipv4Addr {
    let a = sim
        .hub
        .peer_add(name, &key::encode(&public(key)), sim.now())
        .unwrap();
    sim.drain();
    a.address.parse().unwrap()
}

const RELAY: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

#[test]
fn node_pings_the_relay() {
    let mut sim = sim();
    let ip = add(&mut sim, "a", 1);
    let mut a = node(&sim, 1, ip, 1000);
    let (got, _) = a.send(&mut sim, &build_echo_request(ip, RELAY, 1, 1, b"hi"));
    assert_eq!(got.len(), 1, "one echo reply");
    let p = wire::ipv4(&got[0]).unwrap();
    assert_eq!((p.src_addr(), p.dst_addr(), p.payload()[0]), (RELAY, ip, 0));
    let n = &sim.hub.nodes()[0];
    assert_eq!(n.endpoint.as_deref(), Some("10.0.0.1:1000"));
    assert_eq!(n.counters.rx_packets, 1);
}

#[test]
fn forwards_between_nodes_and_roams() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    let ib = add(&mut sim, "b", 2);
    let mut a = node(&sim, 1, ia, 1000);
    let mut b = node(&sim, 2, ib, 2000);
    // b connects first so the relay knows where it is.
    b.send(&mut sim, &build_echo_request(ib, RELAY, 1, 1, b""));
    let (_, others) = a.send(&mut sim, &build_udp(ia, 5, ib, 6, b"to b"));
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].0, b.addr);
    let mut buf = vec![0u8; 2048];
    match b.tunn.decapsulate(None, &others[0].1, &mut buf) {
        TunnResult::WriteToTunnelV4(p, src) => {
            assert_eq!(src, ia);
            assert!(p.ends_with(b"to b"));
        }
        other => panic!("b did not get the packet: {other:?}"),
    }
    // a moves to another port; the next authenticated datagram updates its endpoint.
    a.addr = SocketAddr::from(([10, 0, 0, 99], 3000));
    a.send(&mut sim, &build_echo_request(ia, RELAY, 1, 2, b""));
    let na = sim.hub.nodes().into_iter().find(|n| n.name == "a").unwrap();
    assert_eq!(na.endpoint.as_deref(), Some("10.0.0.99:3000"));
    // Endpoints are written within a second, not at once.
    assert!(!sim
        .store
        .state()
        .unwrap()
        .peers
        .iter()
        .any(|p| p.endpoint == Some(a.addr)));
    sim.advance(Duration::from_secs(1));
    let saved = sim.store.state().cloned().unwrap();
    assert!(saved.peers.iter().any(|p| p.endpoint == Some(a.addr)));
}

#[test]
fn spoofed_and_unroutable_packets_are_counted() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    let _ib = add(&mut sim, "b", 2);
    let mut a = node(&sim, 1, ia, 1000);
    let (got, others) = a.send(
        &mut sim,
        &build_echo_request(Ipv4Addr::new(100, 64, 4, 70), RELAY, 1, 1, b""),
    );
    assert!(got.is_empty() && others.is_empty());
    a.send(
        &mut sim,
        &build_udp(ia, 1, Ipv4Addr::new(100, 70, 0, 1), 2, b""),
    );
    let na = sim.hub.nodes().into_iter().find(|n| n.name == "a").unwrap();
    assert_eq!(na.counters.drops.get("spoofed"), Some(&1));
    assert_eq!(na.counters.drops.get("no_route"), Some(&1));
}

#[test]
fn unknown_keys_get_nothing() {
    let mut sim = sim();
    let mut stranger = node(&sim, 7, Ipv4Addr::new(100, 64, 4, 1), 1000);
    let (got, others) = stranger.send(&mut sim, &build_echo_request(stranger.ip, RELAY, 1, 1, b""));
    assert!(got.is_empty() && others.is_empty());
    assert_eq!(
        sim.hub.stats(NOW).global.drops.get("unknown_peer"),
        Some(&1)
    );
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let mut sim = sim();
    add(&mut sim, "a", 1);
    let mut out = Vec::new();
    let from = SocketAddr::from(([10, 0, 0, 5], 9));
    let mut x: u32 = 12345;
    for len in [
        0usize, 1, 3, 4, 31, 32, 63, 64, 91, 92, 147, 148, 149, 1500, 65535, 70000,
    ] {
        for kind in 0u8..6 {
            let mut d: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            if len >= 4 {
                d[0] = kind;
                d[1..4].copy_from_slice(&[0, 0, 0]);
            }
            out.extend(sim.datagram(from, &d));
        }
    }
    assert!(out.is_empty());
    let drops: u64 = sim.hub.stats(NOW).global.drops.values().sum::<u64>()
        + sim
            .hub
            .nodes()
            .iter()
            .map(|n| n.counters.drops.values().sum::<u64>())
            .sum::<u64>();
    assert_eq!(drops, 16 * 6);
}

fn join(
    sim: &mut Sim,
    tok: &str,
    key: u8,
    name: Option<&str>,
    hint: Option<&str>,
    from_port: u16,
) -> Option<JoinResponse> {
    let t = Token::parse(tok).unwrap();
    let req = JoinRequest {
        token_id: t.id.clone(),
        token_secret: t.secret,
        name: name.map(String::from),
        hint: hint.map(String::from),
        timestamp: NOW,
    };
    let (init, d) = JoinInitiator::new(&secret(key), t.relay_key, &req, &mut OsRng).unwrap();
    let from = SocketAddr::from(([10, 0, 0, key], from_port));
    match exchange(sim, &init, &d, from)? {
        Reply::Response(r) => Some(r),
        _ => None,
    }
}

/// What a node does: sends the request, and once more with the cookie if the relay asks.
fn exchange(sim: &mut Sim, init: &JoinInitiator, d: &[u8], from: SocketAddr) -> Option<Reply> {
    let out = sim.datagram(from, d);
    let (_, resp) = out.first()?;
    match init.open_reply(resp).unwrap() {
        Reply::Cookie(c) => {
            let out = sim.datagram(from, &init.with_cookie(d, &c));
            let (_, resp) = out.first()?;
            Some(init.open_reply(resp).unwrap())
        }
        other => Some(other),
    }
}

fn accepted(r: Option<JoinResponse>) -> (String, String) {
    match r {
        Some(JoinResponse::Accepted {
            node_name, address, ..
        }) => (node_name, address),
        other => panic!("not accepted: {other:?}"),
    }
}

fn rejected(r: Option<JoinResponse>) -> String {
    match r {
        Some(JoinResponse::Rejected { reason }) => reason,
        other => panic!("not rejected: {other:?}"),
    }
}

#[test]
fn join_with_a_token() {
    let mut sim = sim();
    let t = sim.hub.token_create(2, 3600, None, sim.now()).unwrap();
    let (name, addr) = accepted(join(&mut sim, &t.token, 1, None, Some("Laptop.local"), 1));
    assert_eq!((name.as_str(), addr.as_str()), ("laptop", "100.64.4.1"));
    // Same host name from another key: a suffix, never a takeover.
    let (name2, addr2) = accepted(join(&mut sim, &t.token, 2, None, Some("laptop"), 2));
    assert_eq!(
        (name2.as_str(), addr2.as_str()),
        ("laptop-2", "100.64.4.65")
    );
    // Used up now.
    assert!(rejected(join(&mut sim, &t.token, 3, None, None, 3)).contains("used up"));
    // The first key joins again: same name and address, no use consumed.
    let (again, addr_again) = accepted(join(&mut sim, &t.token, 1, None, Some("other"), 4));
    assert_eq!((again, addr_again), (name, addr));
    let saved = sim.store.state().cloned().unwrap();
    assert_eq!(saved.peers.len(), 2);
    assert_eq!(saved.tokens[0].uses_left, 0);
    assert_eq!(saved.tokens[0].used_by, vec!["laptop", "laptop-2"]);
    // The secret is not stored, only its hash.
    let text = serde_json::to_string(&saved).unwrap();
    let secret = crate::identity::token::Token::parse(&t.token)
        .unwrap()
        .secret;
    assert!(!text.contains(&super::state::hex(&secret)));
}

#[test]
fn join_refusals() {
    let mut sim = sim();
    let t = sim.hub.token_create(5, 3600, None, sim.now()).unwrap();
    accepted(join(&mut sim, &t.token, 1, Some("anna"), None, 1));
    assert!(rejected(join(&mut sim, &t.token, 2, Some("anna"), None, 2)).contains("already used"));
    assert!(
        rejected(join(&mut sim, &t.token, 2, Some("Bad Name"), None, 2))
            .contains("not a valid name")
    );
    // A wrong secret.
    let mut forged = Token::parse(&t.token).unwrap();
    forged.secret[0] ^= 1;
    assert!(rejected(join(&mut sim, &forged.encode(), 3, None, None, 3)).contains("not valid"));
    // Revoked.
    sim.hub.token_revoke(&t.id, sim.now()).unwrap();
    assert!(rejected(join(&mut sim, &t.token, 4, None, None, 4)).contains("revoked"));
    // Expired.
    let short = sim
        .hub
        .token_create(
            1,
            10,
            None,
            Now {
                unix: NOW - 20,
                ..sim.now()
            },
        )
        .unwrap();
    assert!(rejected(join(&mut sim, &short.token, 5, None, None, 5)).contains("expired"));
}

#[test]
fn replayed_join_gets_no_answer() {
    let mut sim = sim();
    let t = sim.hub.token_create(5, 3600, None, sim.now()).unwrap();
    let tok = Token::parse(&t.token).unwrap();
    let req = JoinRequest {
        token_id: tok.id,
        token_secret: tok.secret,
        name: None,
        hint: None,
        timestamp: NOW,
    };
    let (_, d) = JoinInitiator::new(&secret(1), tok.relay_key, &req, &mut OsRng).unwrap();
    let from = SocketAddr::from(([10, 0, 0, 1], 1));
    let mut out = sim.datagram(from, &d);
    out.extend(sim.datagram(from, &d));
    assert_eq!(out.len(), 1);
    assert_eq!(sim.hub.tokens()[0].uses_left, 4);
}

#[test]
fn token_guessing_is_rate_limited() {
    let mut sim = sim();
    let t = sim.hub.token_create(5, 3600, None, sim.now()).unwrap();
    let mut forged = Token::parse(&t.token).unwrap();
    forged.secret[0] ^= 1;
    let bad = forged.encode();
    let mut answers = 0;
    for _ in 0..20 {
        if join(&mut sim, &bad, 50, None, None, 7).is_some() {
            answers += 1;
        }
    }
    // The first failure is not counted against the address, which has not proven itself yet;
    // from then on the relay wants a cookie, and proven failures count.
    assert_eq!(answers, guess::MAX_FAILURES + 1);
    // Even the right token is not answered from that address for now: it gets a notice.
    assert!(join(&mut sim, &t.token, 50, None, None, 7).is_none());
    // Other addresses are not affected.
    accepted(join(&mut sim, &t.token, 51, None, None, 7));
}

/// A join attempt for `tok` with node key `key`: the initiator and its request datagram.
fn attempt(tok: &str, key: u8) -> (JoinInitiator, Vec<u8>) {
    let t = Token::parse(tok).unwrap();
    let req = JoinRequest {
        token_id: t.id,
        token_secret: t.secret,
        name: None,
        hint: None,
        timestamp: NOW,
    };
    JoinInitiator::new(&secret(key), t.relay_key, &req, &mut OsRng).unwrap()
}

#[test]
fn forged_source_failures_do_not_lock_the_victim_out() {
    let mut sim = sim();
    let t = sim.hub.token_create(5, 3600, None, sim.now()).unwrap();
    let mut forged = Token::parse(&t.token).unwrap();
    forged.secret[0] ^= 1;
    let bad = forged.encode();
    let victim = SocketAddr::from(([10, 0, 0, 60], 4000));
    // The forger sends from the victim's address but never sees the answers, so it cannot
    // answer a cookie reply: its requests are opened at most once unproven, then need a cookie.
    // It does not know the victim's port either.
    for i in 0..30 {
        let (_, d) = attempt(&bad, 100 + i);
        let forged_from = SocketAddr::new(victim.ip(), 5000 + (i % 3) as u16);
        sim.datagram(forged_from, &d);
    }
    assert_eq!(
        sim.hub.join_stats.not_authentic + sim.hub.join_stats.refused,
        1
    );
    assert!(sim.hub.join_stats.cookies_sent >= 29);
    // The victim joins at once with one cookie round trip.
    let (init, d) = attempt(&t.token, 61);
    match exchange(&mut sim, &init, &d, victim) {
        Some(Reply::Response(r)) => {
            accepted(Some(r));
        }
        other => panic!("the victim did not get in: {other:?}"),
    }
}

#[test]
fn wrong_key_gets_a_notice_and_costs_no_public_key_work() {
    let mut sim = sim();
    let mut t = Token::parse(
        &sim.hub
            .token_create(5, 3600, None, sim.now())
            .unwrap()
            .token,
    )
    .unwrap();
    t.relay_key = public(99);
    let (init, d) = attempt(&t.encode(), 62);
    let from = SocketAddr::from(([10, 0, 0, 62], 4000));
    assert_eq!(
        exchange(&mut sim, &init, &d, from),
        Some(Reply::Notice(Notice::WrongKey))
    );
    assert_eq!(
        sim.hub.join_stats.opened + sim.hub.join_stats.not_authentic,
        0
    );
    // Anonymous garbage with the magic: counted, never opened, never more than the budget of
    // notices, and every reply is smaller than what it answers.
    sim.advance(Duration::from_secs(1));
    let mut out = Vec::new();
    for i in 0..1000u32 {
        let mut g = vec![0x33u8; 200];
        g[..4].copy_from_slice(b"OVJ\x01");
        g[4..8].copy_from_slice(&i.to_le_bytes());
        out.extend(sim.datagram(from, &g));
    }
    assert_eq!(sim.hub.join_stats.wrong_key, 1001);
    assert_eq!(
        sim.hub.join_stats.opened + sim.hub.join_stats.not_authentic,
        0
    );
    assert_eq!(out.len(), super::flood::REPLIES_PER_SOURCE_PER_SEC as usize);
    assert!(out.iter().all(|(_, d)| d.len() < 200));
}

#[test]
fn under_load_cookies_are_required_and_the_budget_holds() {
    let mut sim = sim();
    let t = sim.hub.token_create(1000, 3600, None, sim.now()).unwrap();
    let mut forged = Token::parse(&t.token).unwrap();
    forged.secret[0] ^= 1;
    let bad = forged.encode();
    // Many sources (each once, unproven) until the relay is under load.
    let mut sent = 0u32;
    while !sim.hub.opens.under_load(NOW) {
        let (_, d) = attempt(&bad, 1);
        let from = SocketAddr::from(([10, 1, (sent >> 8) as u8, sent as u8], 1));
        sim.datagram(from, &d);
        sent += 1;
        assert!(sent <= super::flood::LOAD_THRESHOLD_PER_SEC);
    }
    // Now a fresh address is asked for a cookie first, and a valid join still goes through.
    let (init, d) = attempt(&t.token, 70);
    let from = SocketAddr::from(([10, 0, 0, 70], 4000));
    let out = sim.datagram(from, &d);
    assert!(matches!(init.open_reply(&out[0].1), Ok(Reply::Cookie(_))));
    assert!(matches!(
        exchange(&mut sim, &init, &d, from),
        Some(Reply::Response(JoinResponse::Accepted { .. }))
    ));
    // Past the budget of opens in a second, even proven requests get a `Busy` notice.
    while sim.hub.opens.take(NOW) {}
    let (init, d) = attempt(&t.token, 71);
    let from = SocketAddr::from(([10, 0, 0, 71], 4000));
    assert_eq!(
        exchange(&mut sim, &init, &d, from),
        Some(Reply::Notice(Notice::Busy))
    );
    // The next second it is answered (after its cookie).
    sim.advance(Duration::from_secs(1));
    assert!(matches!(
        exchange(&mut sim, &init, &d, from),
        Some(Reply::Response(JoinResponse::Accepted { .. }))
    ));
}

#[test]
fn a_join_worker_opens_off_the_hub() {
    let mut sim = sim();
    sim.hub.use_join_worker();
    let opener = sim.hub.join_opener();
    let t = sim.hub.token_create(5, 3600, None, sim.now()).unwrap();
    let (init, d) = attempt(&t.token, 80);
    let from = SocketAddr::from(([10, 0, 0, 80], 4000));
    let out = sim.datagram(from, &d);
    assert!(
        out.is_empty(),
        "nothing is answered before the worker opened it"
    );
    let jobs = std::mem::take(&mut sim.jobs);
    assert_eq!(jobs.len(), 1);
    for job in jobs {
        let now = sim.now();
        sim.hub.handle_join_opened(now, opener.open(job, NOW));
    }
    sim.drain();
    let out = sim.take_sent();
    assert!(matches!(
        init.open_reply(&out[0].1),
        Ok(Reply::Response(JoinResponse::Accepted { .. }))
    ));
    // The worker's queue is bounded: past it, requests get a `Busy` notice (each proves its
    // address first: under load the relay asks for cookies).
    let mut busy = 0;
    sim.advance(Duration::from_secs(5));
    for i in 0..(JOB_QUEUE as u32 + 5) {
        let (init, d) = attempt(&t.token, 81);
        let from = SocketAddr::from(([10, 2, (i >> 8) as u8, i as u8], 1));
        if let Some(Reply::Notice(Notice::Busy)) = exchange(&mut sim, &init, &d, from) {
            busy += 1;
        }
    }
    assert_eq!(sim.jobs.len(), JOB_QUEUE);
    assert_eq!(busy, 5);
}

#[test]
fn a_failed_write_is_answered_with_an_error_and_tried_again() {
    let mut sim = sim();
    let t = sim.hub.token_create(5, 3600, None, sim.now()).unwrap();
    sim.drain();
    sim.store.fail = Some("disk full".into());
    // The join takes effect in memory, but its acceptance is never sent: a refusal instead.
    assert!(rejected(join(&mut sim, &t.token, 2, None, None, 2)).contains("could not save"));
    assert_eq!(sim.hub.nodes().len(), 1);
    assert_eq!(
        sim.store.state().unwrap().tokens[0].uses_left,
        5,
        "not on disk"
    );
    // A second later the write is tried again, and works once the disk does.
    sim.store.fail = None;
    sim.advance(Duration::from_secs(1));
    let saved = sim.store.state().unwrap();
    assert_eq!((saved.peers.len(), saved.tokens[0].uses_left), (1, 4));
    // The node asks again: the same registration, no use spent.
    let (name, _) = accepted(join(&mut sim, &t.token, 2, None, None, 2));
    assert_eq!(sim.hub.nodes()[0].name, name);
    assert_eq!(sim.hub.tokens()[0].uses_left, 4);
}

#[test]
fn state_survives_a_restart() {
    let mut sim = sim();
    let t = sim
        .hub
        .token_create(5, 3600, Some("ci-".into()), sim.now())
        .unwrap();
    let (name, addr) = accepted(join(&mut sim, &t.token, 1, Some("runner"), None, 1));
    assert_eq!(name, "ci-runner");
    let sim2 = sim.restart(2).unwrap();
    let n = &sim2.hub.nodes()[0];
    assert_eq!((n.name.clone(), n.address.clone()), (name, addr));
    assert_eq!(sim2.hub.tokens()[0].uses_left, 4);
}

#[test]
fn leave_through_the_control_channel() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    let mut a = node(&sim, 1, ia, 1000);
    let req = crate::transport::control::encode(&ControlMessage {
        id: 42,
        request: ControlRequest::Leave,
    });
    let (got, _) = a.send(&mut sim, &build_udp(ia, 5555, RELAY, CONTROL_PORT, &req));
    assert_eq!(got.len(), 1, "the reply comes back through the tunnel");
    let p = wire::ipv4(&got[0]).unwrap();
    let u = wire::udp(&p).unwrap();
    assert_eq!(u.dst_port(), 5555);
    let reply = control::parse_reply(u.payload()).unwrap();
    assert!(
        matches!(reply, ControlReply::Ok { id: 42, .. }),
        "{reply:?}"
    );
    assert!(sim.hub.nodes().is_empty());
    assert!(sim.store.state().unwrap().peers.is_empty());
    // The name and prefix are free again.
    assert_eq!(add(&mut sim, "a", 2), ia);
}

#[test]
fn remote_service_packets_go_to_the_gateway_and_back() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    sim.set_orders_catalog().unwrap();
    let orders = sim
        .hub
        .services()
        .into_iter()
        .find(|s| s.name == "orders")
        .unwrap()
        .address;
    let mut a = node(&sim, 1, ia, 1000);
    a.send(&mut sim, &build_echo_request(ia, RELAY, 1, 1, b""));
    // Drive one packet by hand so the gateway output is visible.
    let mut buf = vec![0u8; 2048];
    let d = match a
        .tunn
        .encapsulate(&build_udp(ia, 5, orders, 8080, b"hi"), &mut buf)
    {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    sim.datagram(a.addr, &d);
    let gw = std::mem::take(&mut sim.gateway);
    assert_eq!(gw.len(), 1);
    assert_eq!(
        (gw[0].node.as_str(), gw[0].target.as_deref()),
        ("a", Some("orders.svc:8080"))
    );
    // The answer comes back from the service's address to a.
    let reply = build_udp(orders, 8080, ia, 5, b"hello");
    let out = sim.from_gateway(&reply);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, a.addr);
    // The gateway cannot speak for node addresses.
    let forged = build_udp(Ipv4Addr::new(100, 64, 4, 70), 1, ia, 5, b"x");
    assert!(sim.from_gateway(&forged).is_empty());
    // An address in the remote block with no service has no route.
    let d = match a.tunn.encapsulate(
        &build_udp(ia, 5, Ipv4Addr::new(100, 64, 3, 200), 1, b""),
        &mut buf,
    ) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    sim.datagram(a.addr, &d);
    assert!(sim.gateway.is_empty());
}

/// A control request from `ip` to the relay.
fn control_packet(ip: Ipv4Addr, id: u64, request: ControlRequest) -> Vec<u8> {
    build_udp(
        ip,
        CONTROL_PORT,
        RELAY,
        CONTROL_PORT,
        &control::encode(&ControlMessage { id, request }),
    )
}

/// The control replies among the packets a node received.
fn replies(packets: &[Vec<u8>]) -> Vec<ControlReply> {
    packets
        .iter()
        .filter_map(|p| {
            let v = wire::ipv4(p).ok()?;
            control::parse_reply(wire::udp(&v).ok()?.payload()).ok()
        })
        .collect()
}

#[test]
fn lookups_map_remote_names_on_demand() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    let mut a = node(&sim, 1, ia, 1000);
    let lookup = |name: &str| ControlRequest::Lookup { name: name.into() };
    // The answer waits for the driver's resolver.
    let (got, _) = a.send(&mut sim, &control_packet(ia, 7, lookup("inventory")));
    assert!(replies(&got).is_empty());
    // A retry of the same request starts nothing new.
    let (got, _) = a.send(&mut sim, &control_packet(ia, 7, lookup("inventory")));
    assert!(replies(&got).is_empty());
    let tokens: Vec<u64> = sim.lookups.drain(..).map(|l| l.token).collect();
    assert_eq!(tokens.len(), 1);
    let now = sim.now();
    sim.hub.lookup_done(now, tokens[0], Ok(()));
    sim.drain();
    let mut got = Vec::new();
    for (to, d) in sim.take_sent() {
        assert_eq!(to, a.addr);
        got.extend(a.receive(&d).1);
    }
    let r = replies(&got);
    let Some(ControlReply::Ok { data, .. }) = r.iter().find(|r| r.id() == 7) else {
        panic!("{r:?}");
    };
    assert_eq!(data["name"], "inventory");
    assert_eq!(data["target"], "inventory:0");
    assert_eq!(data["port"], 0, "an on-demand name has no port of its own");
    let saved = sim.store.state().cloned().unwrap();
    assert_eq!(saved.registry.on_demand.len(), 1);
    // Known names answer at once; names that are not labels are refused.
    let (got, _) = a.send(&mut sim, &control_packet(ia, 8, lookup("inventory")));
    assert!(matches!(replies(&got)[0], ControlReply::Ok { id: 8, .. }));
    let (got, _) = a.send(&mut sim, &control_packet(ia, 9, lookup("a.example.com")));
    assert!(matches!(
        replies(&got)[0],
        ControlReply::Error { id: 9, .. }
    ));
    // A failed resolution is an error for the node; one the remote side called a miss says so.
    let decode = |sim: &mut Sim, result, a: &mut SimNode| {
        let token = sim.lookups.pop().expect("a lookup").token;
        let now = sim.now();
        sim.hub.lookup_done(now, token, result);
        sim.drain();
        let out = sim.take_sent();
        assert_eq!(out.len(), 1);
        let mut got = Vec::new();
        for (_, d) in out {
            got.extend(a.receive(&d).1);
        }
        replies(&got).remove(0)
    };
    let (_, _) = a.send(&mut sim, &control_packet(ia, 10, lookup("nothing")));
    let r = decode(
        &mut sim,
        Err(LookupFailure::NotFound("no such host".into())),
        &mut a,
    );
    assert!(
        matches!(
            r,
            ControlReply::Error {
                id: 10,
                code: Some(ErrorCode::NotFound),
                ..
            }
        ),
        "{r:?}"
    );
    let (_, _) = a.send(&mut sim, &control_packet(ia, 12, lookup("later")));
    let r = decode(
        &mut sim,
        Err(LookupFailure::Unavailable("timed out".into())),
        &mut a,
    );
    assert!(
        matches!(
            r,
            ControlReply::Error {
                id: 12,
                code: None,
                ..
            }
        ),
        "{r:?}"
    );
    // Any port of an on-demand address reaches the same host on that port.
    let inv = sim
        .hub
        .services()
        .into_iter()
        .find(|s| s.name == "inventory")
        .unwrap()
        .address;
    let mut buf = vec![0u8; 2048];
    let d = match a
        .tunn
        .encapsulate(&build_udp(ia, 5, inv, 6379, b"x"), &mut buf)
    {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    sim.datagram(a.addr, &d);
    assert_eq!(sim.gateway[0].target.as_deref(), Some("inventory:6379"));
    // Turned off: refused.
    sim.hub.set_on_demand(OnDemandConfig {
        enabled: false,
        ..Default::default()
    });
    let (got, _) = a.send(&mut sim, &control_packet(ia, 11, lookup("other")));
    assert!(matches!(
        replies(&got)[0],
        ControlReply::Error { id: 11, .. }
    ));
}

#[test]
fn node_services_get_stable_callback_ports() {
    let mut sim = sim();
    sim.hub
        .set_callback_plan(crate::relay::gateway::CallbackPlan {
            ports: Some("30000-30001".parse().unwrap()),
            host: "relay.staging".into(),
            http_port: Some(8000),
        });
    let ia = add(&mut sim, "a", 1);
    let mut a = node(&sim, 1, ia, 1000);
    let register = |name: &str| ControlRequest::Register {
        name: name.into(),
        tag: None,
        port: 8080,
        protocol: crate::names::registry::Protocol::Tcp,
    };
    // The reply, not the notice of the change (id 0) that comes with it.
    let url = |got: &[Vec<u8>]| match replies(got).iter().find(|r| r.id() != 0) {
        Some(ControlReply::Ok { data, .. }) => data["callback_url"].clone(),
        other => panic!("{other:?}"),
    };
    let (got, _) = a.send(&mut sim, &control_packet(ia, 1, register("api")));
    assert_eq!(url(&got), "http://relay.staging:30000");
    let (got, _) = a.send(&mut sim, &control_packet(ia, 2, register("web")));
    assert_eq!(url(&got), "http://relay.staging:30001");
    // Full range: the third service is routed by Host only.
    let (got, _) = a.send(&mut sim, &control_packet(ia, 3, register("db")));
    assert_eq!(url(&got), "http://db.a.ovl.internal:8000");
    // Again after unregistering and registering: the same port.
    a.send(
        &mut sim,
        &control_packet(
            ia,
            4,
            ControlRequest::Unregister {
                name: "api".into(),
                tag: None,
            },
        ),
    );
    let (got, _) = a.send(&mut sim, &control_packet(ia, 5, register("api")));
    assert_eq!(url(&got), "http://relay.staging:30000");
    let saved = sim.store.state().cloned().unwrap();
    assert_eq!(saved.callback_ports.len(), 2);
    let routes = sim.hub.callback_routes();
    assert!(routes
        .iter()
        .any(|(k, addr, port)| k.name == "api" && addr.port() == 8080 && *port == Some(30000)));
}

#[test]
fn control_acts_only_for_the_sender_and_only_on_whole_datagrams() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    let ib = add(&mut sim, "b", 2);
    let mut a = node(&sim, 1, ia, 1000);
    let mut b = node(&sim, 2, ib, 2000);
    let register = |name: &str| ControlRequest::Register {
        name: name.into(),
        tag: None,
        port: 8080,
        protocol: crate::names::registry::Protocol::Tcp,
    };
    let (got, _) = a.send(&mut sim, &control_packet(ia, 1, register("api")));
    // The reply, and maybe the notice of the change.
    assert!(
        replies(&got)
            .iter()
            .any(|r| matches!(r, ControlReply::Ok { id: 1, .. })),
        "{:?}",
        replies(&got)
    );
    let names = |sim: &Sim| {
        let mut n: Vec<String> = sim.hub.nodes().into_iter().map(|n| n.name).collect();
        n.sort();
        n
    };
    let has_api = |sim: &Sim| sim.hub.services().iter().any(|s| s.name == "api");
    // b speaking from a's address: dropped as spoofed before any control request is read.
    for (id, request) in [
        (2, ControlRequest::Leave),
        (3, register("evil")),
        (
            4,
            ControlRequest::Unregister {
                name: "api".into(),
                tag: None,
            },
        ),
    ] {
        let (got, _) = b.send(&mut sim, &control_packet(ia, id, request));
        assert!(got.is_empty());
    }
    assert_eq!(names(&sim), ["a", "b"]);
    assert!(has_api(&sim));
    assert!(!sim.hub.services().iter().any(|s| s.name == "evil"));
    let nb = sim.hub.nodes().into_iter().find(|n| n.name == "b").unwrap();
    assert_eq!(nb.counters.drops.get("spoofed"), Some(&3));
    // From b's own address, a request for a's service touches only b's (which it has none of).
    let (got, _) = b.send(
        &mut sim,
        &control_packet(
            ib,
            5,
            ControlRequest::Unregister {
                name: "api".into(),
                tag: None,
            },
        ),
    );
    assert!(replies(&got).iter().any(|r| r.id() == 5));
    assert!(has_api(&sim));
    // A fragment never counts as a control request: only the first one has the port.
    let mut frag = control_packet(ia, 6, ControlRequest::Leave);
    frag[6] = 0x20;
    let sum = !wire::checksum::data(&{
        let mut h = frag[..20].to_vec();
        h[10] = 0;
        h[11] = 0;
        h
    });
    frag[10..12].copy_from_slice(&sum.to_be_bytes());
    let (got, _) = a.send(&mut sim, &frag);
    assert!(got.is_empty());
    assert_eq!(names(&sim), ["a", "b"]);
}

fn register_reply(a: &mut SimNode, sim: &mut Sim, ip: Ipv4Addr, name: &str) -> ControlReply {
    let req = ControlRequest::Register {
        name: name.into(),
        tag: None,
        port: 8080,
        protocol: crate::names::registry::Protocol::Tcp,
    };
    let (got, _) = a.send(sim, &control_packet(ip, 1, req));
    // The reply, not the notice of the change that may come with it.
    replies(&got)
        .into_iter()
        .find(|r| r.id() == 1)
        .expect("a reply to the registration")
}

#[test]
fn node_and_service_names_are_one_namespace() {
    let mut sim = sim();
    let i1 = add(&mut sim, "lap1", 1);
    add(&mut sim, "lap2", 2);
    let mut a = node(&sim, 1, i1, 1000);
    // A service cannot take another node's name.
    match register_reply(&mut a, &mut sim, i1, "lap2") {
        ControlReply::Error { message, .. } => {
            assert!(message.contains("belongs to node lap2"), "{message}")
        }
        other => panic!("registered: {other:?}"),
    }
    assert!(sim.hub.services().is_empty());
    assert!(matches!(
        register_reply(&mut a, &mut sim, i1, "orders"),
        ControlReply::Ok { .. }
    ));
    // A node cannot take a service's name: not by peer add, not by join, not by host name.
    let e = sim
        .hub
        .peer_add("orders", &key::encode(&public(3)), sim.now())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the name 'orders' belongs to the service orders on node lap1, and node and service \
         names share one namespace; choose another name"
    );
    let t = sim.hub.token_create(3, 3600, None, sim.now()).unwrap();
    let why = rejected(join(&mut sim, &t.token, 4, Some("orders"), None, 4));
    assert!(
        why.contains("belongs to the service orders on node lap1") && why.contains("--name"),
        "{why}"
    );
    let (name, _) = accepted(join(&mut sim, &t.token, 5, None, Some("orders"), 5));
    assert_eq!(
        name, "orders-2",
        "a host name that is a service's gets a suffix"
    );
    // The catalog cannot take a node's name either: that entry is not applied.
    let up = sim
        .hub
        .set_catalog(
            vec![crate::names::registry::RemoteEntry {
                name: "lap2".into(),
                port: 80,
                target: "lap2.staging:80".into(),
            }],
            sim.now(),
        )
        .unwrap();
    assert_eq!((up.changes, up.rejected.len()), (0, 1));
    // After lap2 is removed its name is free for a service.
    sim.hub.peer_remove("lap2", sim.now()).unwrap();
    assert!(matches!(
        register_reply(&mut a, &mut sim, i1, "lap2"),
        ControlReply::Ok { .. }
    ));
    // A state from before the rule: on start the node keeps its name, the service goes.
    let mut saved = sim.store.state().cloned().unwrap();
    let orders = saved
        .registry
        .instances
        .iter()
        .find(|i| i.name == "orders")
        .cloned()
        .unwrap();
    saved
        .registry
        .instances
        .push(crate::names::registry::ServiceInstance {
            name: "orders-2".into(),
            address: Ipv4Addr::new(100, 64, 4, 40),
            ..orders
        });
    let sim2 = Sim::new(saved).unwrap();
    let names: Vec<String> = sim2.hub.services().into_iter().map(|i| i.name).collect();
    assert!(!names.contains(&"orders-2".to_string()), "{names:?}");
    assert!(names.contains(&"orders".to_string()), "{names:?}");
    let persisted = sim2.store.state().cloned().unwrap();
    assert!(persisted
        .registry
        .instances
        .iter()
        .all(|i| i.name != "orders-2"));
}

mod intercept;
mod persist;
mod replay;
mod timers;

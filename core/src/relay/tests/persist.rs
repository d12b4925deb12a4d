//! Persistence as an event: acknowledged replies wait for the disk, forwarding does not, and
//! changes made while a write is in progress are written together.

use super::*;
use crate::names::registry::Protocol;

fn register(ip: Ipv4Addr, id: u64, name: &str) -> Vec<u8> {
    let request = ControlRequest::Register {
        name: name.into(),
        tag: None,
        port: 8080,
        protocol: Protocol::Tcp,
    };
    control_packet(ip, id, request)
}

fn unregister(ip: Ipv4Addr, id: u64, name: &str) -> Vec<u8> {
    let request = ControlRequest::Unregister {
        name: name.into(),
        tag: None,
    };
    control_packet(ip, id, request)
}

/// The control replies node `n` gets out of what the hub sent.
fn replies_to(n: &mut SimNode, sent: &[(SocketAddr, Vec<u8>)]) -> Vec<ControlReply> {
    let mut got = Vec::new();
    for (to, d) in sent {
        if *to == n.addr {
            got.extend(n.receive(d).1);
        }
    }
    replies(&got)
}

/// Two nodes with sessions, `a` and `b`.
fn two_nodes(sim: &mut Sim) -> (SimNode, SimNode) {
    let ia = add(sim, "a", 1);
    let ib = add(sim, "b", 2);
    let mut a = node(sim, 1, ia, 1000);
    let mut b = node(sim, 2, ib, 2000);
    a.send(sim, &build_echo_request(ia, RELAY, 1, 1, b""));
    b.send(sim, &build_echo_request(ib, RELAY, 1, 1, b""));
    (a, b)
}

#[test]
fn replies_wait_for_the_disk_and_forwarding_does_not() {
    let mut sim = sim();
    let (mut a, b) = two_nodes(&mut sim);
    sim.auto_persist = false;
    let (got, _) = a.send(&mut sim, &register(a.ip, 1, "api"));
    assert!(
        replies(&got).iter().all(|r| r.id() != 1),
        "answered before the write"
    );
    assert_eq!((sim.writes.len(), sim.hub.held_replies()), (1, 1));
    // Other nodes hear of the change at once, and packets flow meanwhile.
    let (_, others) = a.send(&mut sim, &build_udp(a.ip, 5, b.ip, 6, b"to b"));
    assert!(others.iter().any(|(to, _)| *to == b.addr));
    assert_eq!(sim.hub.held_replies(), 1);
    // Once the write is done the reply goes out.
    sim.complete_writes();
    let sent = sim.take_sent();
    let r = replies_to(&mut a, &sent);
    assert!(
        r.iter()
            .any(|r| matches!(r, ControlReply::Ok { id: 1, .. })),
        "{r:?}"
    );
    assert_eq!(sim.hub.held_replies(), 0);
    let saved = sim.store.state().unwrap();
    assert!(saved.registry.instances.iter().any(|i| i.name == "api"));
}

#[test]
fn a_leave_is_carried_out_once_durable() {
    let mut sim = sim();
    let (mut a, _) = two_nodes(&mut sim);
    sim.auto_persist = false;
    let (got, _) = a.send(&mut sim, &control_packet(a.ip, 9, ControlRequest::Leave));
    assert!(replies(&got).is_empty());
    // The tunnel stays until the reply went out through it.
    assert_eq!(sim.hub.nodes().len(), 2);
    sim.complete_writes();
    let sent = sim.take_sent();
    assert!(matches!(
        replies_to(&mut a, &sent)[..],
        [ControlReply::Ok { id: 9, .. }]
    ));
    assert_eq!(sim.hub.nodes().len(), 1);
    assert_eq!(sim.store.state().unwrap().peers.len(), 1);
}

#[test]
fn a_burst_of_changes_costs_two_writes() {
    let mut sim = sim();
    let (mut a, _) = two_nodes(&mut sim);
    sim.auto_persist = false;
    let before = sim.hub.persist_requests();
    // 150 changes while the first write is in progress: 75 register/unregister cycles.
    for i in 0..75u64 {
        a.send(&mut sim, &register(a.ip, 2 * i + 1, "api"));
        a.send(&mut sim, &unregister(a.ip, 2 * i + 2, "api"));
    }
    assert_eq!(sim.hub.persist_requests() - before, 1);
    assert_eq!(sim.hub.held_replies(), 150);
    sim.complete_writes();
    // The first write answers the first registration; the second carries all the rest.
    assert_eq!(sim.hub.persist_requests() - before, 2);
    assert_eq!(sim.hub.held_replies(), 149);
    sim.complete_writes();
    let sent = sim.take_sent();
    let mut ids: Vec<u64> = replies_to(&mut a, &sent)
        .into_iter()
        .filter(|r| matches!(r, ControlReply::Ok { .. }))
        .map(|r| r.id())
        .filter(|id| *id != 0)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=150).collect::<Vec<u64>>());
    assert_eq!(sim.hub.persist_requests() - before, 2);
    assert_eq!(
        sim.store.state().unwrap().registry.seq,
        sim.hub.registry_seq()
    );
}

#[test]
fn held_replies_are_bounded() {
    let mut sim = sim();
    let (mut a, _) = two_nodes(&mut sim);
    sim.auto_persist = false;
    for i in 0..(MAX_HELD as u64 + 10) {
        let name = if i % 2 == 0 {
            register(a.ip, i + 1, "api")
        } else {
            unregister(a.ip, i + 1, "api")
        };
        a.send(&mut sim, &name);
    }
    assert_eq!(sim.hub.held_replies(), MAX_HELD);
}

/// What a write costs on the hub's thread with many services: the snapshot the hub takes
/// when the driver is free, against the registry clone every change used to make.
/// `cargo test -p overlay-core --release -- --ignored snapshot_cost --nocapture`
#[test]
#[ignore]
fn snapshot_cost() {
    let mut sim = sim();
    let mut nodes = Vec::new();
    for k in 1..=50u8 {
        let ip = add(&mut sim, &format!("n{k}"), k);
        nodes.push((k, ip));
    }
    for (k, ip) in &nodes {
        let name = format!("n{k}");
        let prefix = crate::net::prefix::Ipv4Prefix::containing(*ip, 26);
        for s in 0..60 {
            sim.hub
                .change_registry(|r| {
                    r.register(&name, prefix, &format!("s{s}"), None, 80, Protocol::Tcp)
                })
                .unwrap();
        }
    }
    sim.drain();
    let n = 200;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(sim.hub.snapshot());
    }
    let snap = t.elapsed() / n;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(sim.hub.registry.clone());
    }
    let clone = t.elapsed() / n;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(serde_json::to_vec_pretty(&sim.hub.snapshot()).unwrap());
    }
    let json = t.elapsed() / n;
    println!(
        "{} services, {} peers: snapshot {snap:?}, registry clone (with its change log) {clone:?}, snapshot + pretty JSON {json:?}",
        sim.hub.registry.len(),
        nodes.len()
    );
}

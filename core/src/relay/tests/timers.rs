//! WireGuard timers in simulated time (feature `sim-time`: boringtun's clock is the
//! simulation's): keepalives, rekeys and session expiry on the relay's side.

use super::*;

#[test]
fn the_relay_sends_a_keepalive_when_it_only_received() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    let ib = add(&mut sim, "b", 2);
    let mut a = node(&sim, 1, ia, 1000);
    let mut b = node(&sim, 2, ib, 2000);
    b.send(&mut sim, &build_echo_request(ib, RELAY, 1, 1, b""));
    a.send(&mut sim, &build_echo_request(ia, RELAY, 1, 1, b""));
    // a sends to b: the relay receives from a and sends it nothing back.
    sim.advance(Duration::from_secs(1));
    a.send(&mut sim, &build_udp(ia, 5, ib, 6, b"to b"));
    let out = sim.advance(Duration::from_secs(8));
    assert!(
        out.iter().all(|(to, _)| *to != a.addr),
        "too early: {out:?}"
    );
    // KEEPALIVE_TIMEOUT (10 s) after the relay last sent to a, an empty data message goes to
    // a, which a accepts.
    let out = sim.advance(Duration::from_secs(2));
    let to_a: Vec<&Vec<u8>> = out
        .iter()
        .filter(|(to, _)| *to == a.addr)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(to_a.len(), 1, "{out:?}");
    assert_eq!((to_a[0][0], to_a[0].len()), (4, 32), "a keepalive");
    let (back, got) = a.receive(to_a[0]);
    assert!(back.is_empty() && got.is_empty());
    // Only one.
    assert!(sim
        .advance(Duration::from_secs(5))
        .iter()
        .all(|(to, _)| *to != a.addr));
}

#[test]
fn a_node_rekeys_after_two_minutes_and_the_session_goes_on() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    let mut a = node(&sim, 1, ia, 1000);
    a.send(&mut sim, &build_echo_request(ia, RELAY, 1, 1, b""));
    sim.advance(Duration::from_secs(2));
    let first = sim.store.state().unwrap().peers[0].handshake_timestamp;
    assert!(first.is_some());
    // The node runs its timers too (boringtun stamps events with the time of the last run).
    let mut buf = vec![0u8; 2048];
    for _ in 0..119 {
        sim.advance(Duration::from_secs(1));
        assert!(matches!(a.tunn.update_timers(&mut buf), TunnResult::Done));
    }
    // The old session still carries traffic; sending on it after REKEY_AFTER_TIME makes the
    // node (the initiator) start a new handshake, which the relay accepts.
    let (got, _) = a.send(&mut sim, &build_echo_request(ia, RELAY, 1, 2, b""));
    assert_eq!(got.len(), 1);
    let init = match a.tunn.update_timers(&mut buf) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("no rekey: {other:?}"),
    };
    assert_eq!(init[0], 1, "a handshake initiation");
    a.pump(&mut sim, vec![init]);
    assert!(sim.hub.nodes()[0]
        .last_handshake_secs
        .is_some_and(|s| s < 1));
    let (got, _) = a.send(&mut sim, &build_echo_request(ia, RELAY, 1, 3, b""));
    assert_eq!(got.len(), 1, "the new session works");
    // The newer timestamp is written within a second (a restart then refuses the old one).
    sim.advance(Duration::from_secs(1));
    assert!(sim.store.state().unwrap().peers[0].handshake_timestamp > first);
}

#[test]
fn an_expired_session_is_rebuilt_by_the_relay_when_it_has_something_to_send() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    sim.set_orders_catalog().unwrap();
    let orders = sim.hub.services()[0].address;
    let mut a = node(&sim, 1, ia, 1000);
    a.send(&mut sim, &build_echo_request(ia, RELAY, 1, 1, b""));
    assert_eq!(sim.hub.stats(sim.now().unix).connected, 1);
    // Quiet for REJECT_AFTER_TIME * 3 (9 minutes): the relay's keys are gone.
    sim.advance(Duration::from_secs(541));
    assert_eq!(sim.hub.stats(sim.now().unix).connected, 0);
    assert_eq!(sim.hub.nodes()[0].last_handshake_secs, None);
    // An answer from a remote service for a: the relay starts a handshake to a's endpoint and
    // sends the packet once a has answered.
    let out = sim.from_gateway(&build_udp(orders, 8080, ia, 5, b"late answer"));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].0, out[0].1[0]),
        (a.addr, 1),
        "a handshake initiation"
    );
    let (back, _) = a.receive(&out[0].1);
    let (got, _) = a.pump(&mut sim, back);
    assert_eq!(got.len(), 1, "the queued packet arrives");
    assert!(got[0].ends_with(b"late answer"));
    assert_eq!(sim.hub.stats(sim.now().unix).connected, 1);
}

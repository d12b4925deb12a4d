//! Handshake replay across a restart: the newest accepted initiation timestamp is persisted.

use super::*;

fn replayed(sim: &Sim, name: &str) -> u64 {
    let n = sim
        .hub
        .nodes()
        .into_iter()
        .find(|n| n.name == name)
        .unwrap();
    n.counters.drops.get("replayed").copied().unwrap_or(0)
}

/// The persisted handshake timestamp of the first peer.
fn saved_ts(sim: &Sim) -> Option<initiation::Tai64n> {
    sim.store.state().unwrap().peers[0].handshake_timestamp
}

#[test]
fn a_recorded_initiation_is_refused_after_a_restart() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    let mut a = node(&sim, 1, ia, 1000);
    let recorded = a.initiation();
    a.pump(&mut sim, vec![recorded.clone()]);
    let (got, _) = a.send(&mut sim, &build_echo_request(ia, RELAY, 1, 1, b""));
    assert_eq!(got.len(), 1, "the session works");
    sim.advance(Duration::from_secs(1));
    assert!(saved_ts(&sim).is_some());

    // The relay restarts from what is on disk; the eavesdropper replays from elsewhere.
    let mut sim = sim.restart(2).unwrap();
    sim.advance(Duration::from_secs(60));
    let attacker = SocketAddr::from(([10, 9, 9, 9], 4444));
    assert!(
        sim.datagram(attacker, &recorded).is_empty(),
        "the replay got an answer"
    );
    assert_eq!(replayed(&sim, "a"), 1);
    let n = &sim.hub.nodes()[0];
    assert_eq!(
        n.endpoint.as_deref(),
        Some("10.0.0.1:1000"),
        "endpoint moved"
    );

    // The real node's fresh initiation is accepted and the session works again.
    let mut a = node(&sim, 1, ia, 1000);
    let (got, _) = a.send(&mut sim, &build_echo_request(ia, RELAY, 1, 2, b""));
    assert_eq!(got.len(), 1, "a fresh handshake was refused");
    // And its first initiation is now a replay in this run too.
    sim.advance(Duration::from_secs(1));
    assert!(sim.datagram(attacker, &recorded).is_empty());
    assert_eq!(replayed(&sim, "a"), 2);
}

#[test]
fn handshake_timestamps_are_saved_at_most_once_a_second_and_at_shutdown() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    let mut a = node(&sim, 1, ia, 1000);
    let i = a.initiation();
    a.pump(&mut sim, vec![i]);
    // Written a second after the last write (the peer's registration), not at once.
    assert_eq!(saved_ts(&sim), None);
    sim.advance(Duration::from_secs(1));
    let first = saved_ts(&sim);
    assert!(first.is_some());
    // A second handshake soon after waits for the next second.
    sim.advance(Duration::from_millis(10));
    let i = a.initiation();
    a.pump(&mut sim, vec![i]);
    sim.advance(Duration::from_millis(500));
    assert_eq!(saved_ts(&sim), first);
    sim.advance(Duration::from_millis(500));
    let second = saved_ts(&sim);
    assert!(second > first);
    // At shutdown the driver writes whatever is newer, whatever the second.
    sim.advance(Duration::from_millis(10));
    let i = a.initiation();
    a.pump(&mut sim, vec![i]);
    let (_, state) = sim.hub.unsaved().expect("something unsaved");
    assert!(state.peers[0].handshake_timestamp > second);
}

#[test]
fn a_failed_save_keeps_refusing_replays_in_memory() {
    let mut sim = sim();
    let ia = add(&mut sim, "a", 1);
    let mut a = node(&sim, 1, ia, 1000);
    let recorded = a.initiation();
    sim.store.fail = Some("disk full".into());
    a.pump(&mut sim, vec![recorded.clone()]);
    sim.advance(Duration::from_secs(1));
    let attacker = SocketAddr::from(([10, 9, 9, 9], 4444));
    assert!(sim.datagram(attacker, &recorded).is_empty());
    assert_eq!(replayed(&sim, "a"), 1);
    // Once the disk works again the timestamp is written.
    sim.store.fail = None;
    sim.advance(Duration::from_secs(1));
    assert!(saved_ts(&sim).is_some());
}

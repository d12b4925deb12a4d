//! Handshake replay across a restart: the newest accepted initiation timestamp is persisted.

use super::*;

/// A fresh initiation from `n`, as it goes on the wire (and as an eavesdropper records it).
fn initiation(n: &mut SimNode) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    match n.tunn.format_handshake_initiation(&mut buf, true) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("no initiation: {other:?}"),
    }
}

fn replayed(hub: &Hub<MemStore>, name: &str) -> u64 {
    let n = hub.nodes().into_iter().find(|n| n.name == name).unwrap();
    n.counters.drops.get("replayed").copied().unwrap_or(0)
}

#[test]
fn a_recorded_initiation_is_refused_after_a_restart() {
    let (mut hub, store) = hub();
    let ia = add(&mut hub, "a", 1);
    let mut a = SimNode::new(&hub, 1, ia, 1000);
    let recorded = initiation(&mut a);
    a.pump(&mut hub, vec![recorded.clone()]);
    let (got, _) = a.send(&mut hub, &build_echo_request(ia, RELAY, 1, 1, b""));
    assert_eq!(got.len(), 1, "the session works");
    hub.on_tick(NOW, &mut Outbox::default());
    let saved = store.saved.borrow().clone().unwrap();
    assert!(saved.peers[0].handshake_timestamp.is_some());

    // The relay restarts from what is on disk; the eavesdropper replays from elsewhere.
    let mut hub = hub_with(saved, store.clone());
    let attacker = SocketAddr::from(([10, 9, 9, 9], 4444));
    let mut out = Outbox::default();
    hub.on_datagram(attacker, &recorded, NOW + 60, &mut out);
    assert!(out.0.is_empty(), "the replay got an answer");
    assert_eq!(replayed(&hub, "a"), 1);
    let n = &hub.nodes()[0];
    assert_eq!(
        n.endpoint.as_deref(),
        Some("10.0.0.1:1000"),
        "endpoint moved"
    );

    // The real node's fresh initiation is accepted and the session works again.
    let mut a = SimNode::new(&hub, 1, ia, 1000);
    let (got, _) = a.send(&mut hub, &build_echo_request(ia, RELAY, 1, 2, b""));
    assert_eq!(got.len(), 1, "a fresh handshake was refused");
    // And its first initiation is now a replay in this run too.
    hub.on_datagram(attacker, &recorded, NOW + 61, &mut out);
    assert!(out.0.is_empty());
    assert_eq!(replayed(&hub, "a"), 2);
}

#[test]
fn handshake_timestamps_are_saved_at_most_once_a_second_and_at_shutdown() {
    let (mut hub, store) = hub();
    let ia = add(&mut hub, "a", 1);
    let mut a = SimNode::new(&hub, 1, ia, 1000);
    let i = initiation(&mut a);
    a.pump(&mut hub, vec![i]);
    hub.on_tick(NOW, &mut Outbox::default());
    let first = store.saved.borrow().clone().unwrap().peers[0].handshake_timestamp;
    assert!(first.is_some());
    // A second handshake in the same second waits for the next second's tick.
    let i = initiation(&mut a);
    a.pump(&mut hub, vec![i]);
    hub.on_tick(NOW, &mut Outbox::default());
    let saved = || store.saved.borrow().clone().unwrap().peers[0].handshake_timestamp;
    assert_eq!(saved(), first);
    hub.on_tick(NOW + 1, &mut Outbox::default());
    let second = saved();
    assert!(second > first);
    // At shutdown the driver saves whatever is newer, whatever the second.
    let i = initiation(&mut a);
    a.pump(&mut hub, vec![i]);
    hub.save_live(NOW + 1);
    assert!(saved() > second);
}

#[test]
fn a_failed_save_keeps_refusing_replays_in_memory() {
    let (mut hub, store) = hub();
    let ia = add(&mut hub, "a", 1);
    let mut a = SimNode::new(&hub, 1, ia, 1000);
    let recorded = initiation(&mut a);
    *store.fail.borrow_mut() = true;
    a.pump(&mut hub, vec![recorded.clone()]);
    hub.on_tick(NOW, &mut Outbox::default());
    let mut out = Outbox::default();
    let attacker = SocketAddr::from(([10, 9, 9, 9], 4444));
    hub.on_datagram(attacker, &recorded, NOW, &mut out);
    assert!(out.0.is_empty());
    assert_eq!(replayed(&hub, "a"), 1);
    // Once the disk works again the timestamp is written.
    *store.fail.borrow_mut() = false;
    hub.on_tick(NOW + 1, &mut Outbox::default());
    assert!(store.saved.borrow().clone().unwrap().peers[0]
        .handshake_timestamp
        .is_some());
}

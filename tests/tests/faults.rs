//! Faults the data plane must survive: loss, partitions, address changes.

use overlay_tests::overlay::{join_node, start_relay, transfer, Node};
use overlay_tests::world::{wait_until, World};
use std::time::{Duration, Instant};

fn world(tag: &str) -> (World, Node, Node) {
    let mut w = World::new(tag);
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 2");
    let ha = w.add_host("a", 2);
    let hb = w.add_host("b", 3);
    let a = join_node(&w, &ha, &token, "--name alpha");
    let b = join_node(&w, &hb, &token, "--name beta");
    (w, a, b)
}

#[test]
fn transfer_survives_five_percent_loss() {
    let (w, a, b) = world("loss");
    // 5% of the tunnel's datagrams are lost on a's side, both directions.
    w.exec_ok(
        &a.host,
        "nft add table inet loss && \
         nft add chain inet loss out '{ type filter hook output priority 0; }' && \
         nft add chain inet loss in '{ type filter hook input priority 0; }' && \
         nft add rule inet loss out udp dport 51820 numgen random mod 100 '<' 5 drop && \
         nft add rule inet loss in udp sport 51820 numgen random mod 100 '<' 5 drop",
    );
    transfer(&w, &a, &b, 50_000_000, Duration::from_secs(150), || {});
    let counters = w.exec_ok(&a.host, "nft list table inet loss");
    assert!(counters.contains("drop"), "{counters}");
}

#[test]
fn partition_shows_and_heals_without_rejoin() {
    let (w, a, b) = world("partition");
    let status = |n: &Node| {
        n.status(&w)
            .map(|s| s["state"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(status(&a), "connected");
    w.exec_ok(
        &a.host,
        "nft add table inet part && nft add chain inet part out '{ type filter hook output priority 0; }' && \
         nft add chain inet part in '{ type filter hook input priority 0; }' && \
         nft add rule inet part out udp dport 51820 drop && nft add rule inet part in udp sport 51820 drop",
    );
    let began = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || status(&a) == "connecting"),
        "the outage does not show in overlay status"
    );
    eprintln!("outage visible after {} ms", began.elapsed().as_millis());
    // Hold the partition for 30 s in all.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(began.elapsed()));
    assert_eq!(status(&a), "connecting");
    w.exec_ok(&a.host, "nft delete table inet part");
    let healed = Instant::now();
    let ok = wait_until(Duration::from_secs(5), || {
        w.exec(&a.host, &format!("ping -c 1 -W 1 {}", b.address))
            .status
            .success()
    });
    assert!(ok, "no traffic within 5 s of the heal");
    eprintln!(
        "traffic again {} ms after the heal",
        healed.elapsed().as_millis()
    );
    assert!(wait_until(Duration::from_secs(5), || status(&a) == "connected"));
}

#[test]
fn address_change_mid_transfer_continues() {
    let (w, a, b) = world("roam");
    let host = a.host.clone();
    transfer(&w, &a, &b, 30_000_000, Duration::from_secs(90), || {
        std::thread::sleep(Duration::from_millis(700));
        // The laptop moves: a new outer address, the old one gone.
        w.exec_ok(
            &host,
            "ip addr add 10.78.0.12/24 dev eth0 && ip addr del 10.78.0.2/24 dev eth0",
        );
    });
}

//! Faults the data plane must survive: loss, partitions, address changes.

use overlay_core::api::daemon::LinkState;
use overlay_core::relay::NodeInfo;
use overlay_tests::overlay::{join_node, parse_json, start_relay, transfer, transfer_paced, Node};
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
    let status = |n: &Node| n.status(&w).map(|s| s.state);
    assert_eq!(status(&a), Some(LinkState::Connected));
    w.exec_ok(
        &a.host,
        "nft add table inet part && nft add chain inet part out '{ type filter hook output priority 0; }' && \
         nft add chain inet part in '{ type filter hook input priority 0; }' && \
         nft add rule inet part out udp dport 51820 drop && nft add rule inet part in udp sport 51820 drop",
    );
    let began = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || status(&a)
            == Some(LinkState::Connecting)),
        "the outage does not show in overlay status"
    );
    eprintln!("outage visible after {} ms", began.elapsed().as_millis());
    // Hold the partition for 30 s in all: the sleep is the test (a long outage, then the heal).
    std::thread::sleep(Duration::from_secs(30).saturating_sub(began.elapsed()));
    assert_eq!(status(&a), Some(LinkState::Connecting));
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
    assert!(wait_until(Duration::from_secs(5), || status(&a)
        == Some(LinkState::Connected)));
}

#[test]
fn address_change_mid_transfer_continues() {
    let (w, a, b) = world("roam");
    let host = a.host.clone();
    const BYTES: u64 = 30_000_000;
    // Paced at 5 MB/s, the transfer takes about 6 s: the move lands in its middle.
    transfer_paced(
        &w,
        &a,
        &b,
        BYTES,
        Some(5_000_000),
        Duration::from_secs(90),
        |received| {
            assert!(
                wait_until(Duration::from_secs(20), || received() >= 2_000_000),
                "the transfer did not start: {} bytes",
                received()
            );
            // The laptop moves: a new outer address, the old one gone (promoting the new one,
            // which Linux would otherwise delete with the old primary address).
            w.exec_ok(
                &host,
                "sysctl -qw net.ipv4.conf.eth0.promote_secondaries=1 && \
                 ip addr add 10.78.0.12/24 dev eth0 && ip addr del 10.78.0.2/24 dev eth0",
            );
            let addrs = w.exec_ok(&host, "ip -4 -o addr show dev eth0");
            assert!(
                addrs.contains("10.78.0.12/24") && !addrs.contains("10.78.0.2/"),
                "{addrs}"
            );
            let at_move = received();
            eprintln!("address moved after {at_move} of {BYTES} bytes");
            assert!(
                at_move < BYTES / 2,
                "the transfer was nearly over when the address moved ({at_move} bytes)"
            );
        },
    );
}

#[test]
fn relay_sigkill_loses_no_state() {
    let mut w = World::new("relaystate");
    let flags = [
        "--callback-listen",
        "10.78.0.1:8000",
        "--callback-ports",
        "30000-30009",
    ];
    let mut relay = start_relay(&w, &flags);
    let token = relay.token(&w, "--uses 3");
    let ha = w.add_host("a", 2);
    let a = join_node(&w, &ha, &token, "--name alpha");
    let reg = a.register(&w, "api --port 8080");
    let before = |r: &overlay_tests::overlay::Relay| {
        (
            r.admin(&w, "nodes --json"),
            r.admin(&w, "token list --json"),
            r.admin(&w, "services --json"),
        )
    };
    let (nodes, tokens, services) = before(&relay);
    relay.kill_and_restart(&w, Duration::from_millis(200), &flags);
    let (nodes2, tokens2, services2) = before(&relay);
    let names = |j: &str| -> Vec<(String, String)> {
        parse_json::<Vec<NodeInfo>>("overlay-relay nodes --json", j)
            .into_iter()
            .map(|n| (n.name, n.prefix))
            .collect()
    };
    assert_eq!(names(&nodes), names(&nodes2), "nodes or prefixes changed");
    assert_eq!(tokens, tokens2, "tokens changed");
    assert_eq!(services, services2, "services or callback ports changed");
    assert!(services2.contains(reg.callback_url.as_deref().expect("callback url")));
    // And the node is back without rejoining (a new handshake: a few seconds, more on a busy host).
    assert!(wait_until(Duration::from_secs(20), || {
        w.exec(&a.host, "ping -c 1 -W 1 100.64.0.1")
            .status
            .success()
    }));
}

//! The data plane end to end: relay and nodes in namespaces, real traffic through the tunnel.

use overlay_core::api::daemon::LinkState;
use overlay_tests::overlay::{
    config_address, start_node, start_node_with, start_relay, transfer, Node,
};
use overlay_tests::world::{wait_until, World};
use std::time::Duration;

/// A 3-host world: relay in the hub, nodes `a` and `b`.
fn two_nodes(
    tag: &str,
) -> (
    World,
    overlay_tests::overlay::Relay,
    overlay_tests::overlay::Node,
    overlay_tests::overlay::Node,
) {
    two_nodes_with(tag, &[])
}

/// [`two_nodes`] with extra `overlay daemon` flags for `b`.
fn two_nodes_with(
    tag: &str,
    b_flags: &[&str],
) -> (
    World,
    overlay_tests::overlay::Relay,
    overlay_tests::overlay::Node,
    overlay_tests::overlay::Node,
) {
    let mut w = World::new(tag);
    let relay = start_relay(&w, &[]);
    let ha = w.add_host("a", 2);
    let hb = w.add_host("b", 3);
    let ca = relay.peer_add(&w, &ha, "node-a");
    let cb = relay.peer_add(&w, &hb, "node-b");
    let a = start_node(&w, &ha, &ca);
    let b = start_node_with(&w, &hb, &cb, b_flags);
    (w, relay, a, b)
}

#[test]
fn ping_relay_and_node_to_node() {
    let (w, relay, a, b) = two_nodes("ping");
    w.exec_ok(&a.host, "ping -c 3 -i 0.2 -W 2 100.64.0.1");
    let out = w.exec_ok(&a.host, &format!("ping -c 5 -i 0.2 -W 2 {}", b.address));
    assert!(out.contains("5 received"), "{out}");
    w.exec_ok(&b.host, &format!("ping -c 3 -i 0.2 -W 2 {}", a.address));
    // Both nodes are connected and counted on the relay.
    let nodes = relay.nodes(&w);
    assert_eq!(nodes.len(), 2);
    for n in &nodes {
        assert!(n.counters.rx_packets >= 3, "{n:?}");
        assert!(n.last_handshake_secs.is_some(), "{n:?}");
    }
    let st = a.status(&w).expect("status");
    assert_eq!(st.state, LinkState::Connected);
    assert_eq!(st.address.to_string(), a.address);
    assert!(st.rx_bytes > 0, "{st:?}");
}

/// The kernel's current CPU-latency limit in µs (what every request together asks for).
fn cpu_latency_limit() -> i32 {
    let b = std::fs::read("/dev/cpu_dma_latency").expect("read /dev/cpu_dma_latency");
    i32::from_ne_bytes(b[..4].try_into().expect("4 bytes"))
}

#[test]
fn quick_cpu_wakeups_are_held_while_pings_flow_and_given_back() {
    let (w, _relay, a, b) = two_nodes_with("wake", &["--cpu-latency", "off"]);
    // The node's CPU-latency request and its packet counts, from `overlay status`.
    let cpu = |n: &Node| {
        let r = n
            .status(&w)
            .and_then(|s| s.running)
            .expect("a running daemon");
        (r.cpu_latency, r.rx_packets)
    };
    // The relay in the next namespace is near: its round trip was measured at start.
    let near = wait_until(Duration::from_secs(10), || {
        cpu(&a).0.relay_rtt_us.is_some_and(|us| us < 2000)
    });
    assert!(near, "{:?}", a.status(&w));
    // Pings 5 ms apart for 2 s: a holds the request all along, b (off) never takes it.
    let mut ping = std::process::Command::new("ip")
        .args(["netns", "exec", &a.host.ns, "ping", "-n", "-q", "-c", "400"])
        .args(["-i", "0.005", "-W", "1", &b.address])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ping");
    // (On a failed assertion the world's teardown kills it with everything in the namespace.)
    if !std::path::Path::new("/dev/cpu_dma_latency").exists() {
        // A kernel without PM QoS: the node must do without, and traffic must not notice.
        assert!(ping.wait().expect("ping wait").success(), "pings lost");
        let (sa, _) = cpu(&a);
        assert!(!sa.held && sa.holds == 0, "{sa:?}");
        return;
    }
    let held = wait_until(Duration::from_secs(2), || cpu(&a).0.held);
    assert!(held, "{:?}", a.status(&w));
    assert_eq!(
        cpu_latency_limit(),
        0,
        "held, so idle CPUs must be asked to poll"
    );
    let (sb, _) = cpu(&b);
    assert_eq!(sb.mode, "off");
    assert!(!sb.held, "{sb:?}");
    let done = ping.wait().expect("ping wait");
    assert!(done.success(), "pings lost");
    // Given back within LINGER (20 ms) after the last packet; taken once or a few times.
    let released = wait_until(Duration::from_secs(2), || !cpu(&a).0.held);
    let (sa, _) = cpu(&a);
    assert!(released, "{sa:?}");
    let holds = sa.holds;
    assert!((1..50).contains(&holds), "{sa:?}");
    // Idle again: the liveness ping (every 3 s) is a lone exchange and must not take it. The
    // sleep is the test: nothing may happen during a liveness period (no condition to wait on).
    std::thread::sleep(Duration::from_millis(3500));
    let (sa, _) = cpu(&a);
    assert!(sa.holds == holds && !sa.held, "{sa:?}");
    let (sb, rx_packets) = cpu(&b);
    assert_eq!(sb.holds, 0, "{sb:?}");
    assert!(rx_packets >= 400, "{rx_packets}");
}

#[test]
fn tcp_transfer_content_checked() {
    let (w, _relay, a, b) = two_nodes("tcp");
    transfer(&w, &a, &b, 20_000_000, Duration::from_secs(60), || {});
}

#[test]
fn forged_source_is_dropped_and_counted() {
    let (w, relay, a, b) = two_nodes("spoof");
    // a claims an address in b's prefix: 100.64.4.70 belongs to node-b (100.64.4.64/26).
    w.exec_ok(&a.host, "ip addr add 100.64.4.70/32 dev ovl0");
    let forged = w.exec(
        &a.host,
        &format!("ping -c 3 -i 0.2 -W 1 -I 100.64.4.70 {}", b.address),
    );
    assert!(
        !forged.status.success(),
        "a packet with a forged source got an answer"
    );
    let nodes = relay.nodes(&w);
    let a_entry = nodes
        .iter()
        .find(|n| n.name == "node-a")
        .expect("node-a listed");
    assert!(
        a_entry.counters.drops.get("spoofed").copied().unwrap_or(0) >= 3,
        "{a_entry:?}"
    );
    // Honest traffic still flows.
    w.exec_ok(&a.host, &format!("ping -c 2 -i 0.2 -W 2 {}", b.address));
}

#[test]
fn relay_restart_mid_transfer_resumes_without_rejoin() {
    let (w, mut relay, a, b) = two_nodes("restart");
    let src = a.host.dir.join("payload");
    let dst = b.host.dir.join("received");
    // 4 MB sent in 40 paced chunks over about 4 s, so the relay dies in the middle of it.
    w.exec_ok(
        &a.host,
        &format!("head -c 4000000 /dev/urandom > {}", src.display()),
    );
    w.spawn(
        &b.host,
        "sink",
        &[],
        &[
            "socat",
            "-u",
            "TCP-LISTEN:9000,reuseaddr",
            &format!("CREATE:{}", dst.display()),
        ],
    );
    w.wait_listening(&b.host, 9000);
    let sender = format!(
        "(for i in $(seq 0 39); do dd if={} bs=100000 skip=$i count=1 status=none; sleep 0.1; done) | \
         socat -u - TCP:{}:9000,retry=20,interval=0.2",
        src.display(),
        b.address
    );
    w.spawn(&a.host, "sender", &[], &["bash", "-c", &sender]);
    // Restart once a good part (but not all) has arrived: the sender needs 4 s in all.
    let received = || std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0);
    wait_until(Duration::from_secs(10), || received() >= 500_000);
    let partial = received();
    assert!(
        partial > 0 && partial < 4_000_000,
        "transfer not in progress at restart: {partial} bytes"
    );
    relay.kill_and_restart(&w, Duration::from_millis(500), &[]);
    let done = wait_until(Duration::from_secs(60), || {
        std::fs::metadata(&dst)
            .map(|m| m.len() == 4_000_000)
            .unwrap_or(false)
    });
    assert!(
        done,
        "transfer did not finish after the relay restart; relay log:\n{}",
        w.log(&w.hub, "relay")
    );
    let sum = |p: &std::path::Path| w.exec_ok(&a.host, &format!("sha256sum < {}", p.display()));
    assert_eq!(sum(&src), sum(&dst));
    // Same addresses, no new registration: the relay still knows exactly these two peers.
    assert_eq!(relay.nodes(&w).len(), 2);
    assert_eq!(a.status(&w).expect("status").address.to_string(), a.address);
}

#[test]
fn stock_wireguard_go_peer_joins_from_wireguard_config() {
    let (mut w, relay, a, _b) = two_nodes("wggo");
    let hc = w.add_host("wg", 4);
    let conf = relay.peer_add(&w, &hc, "ci-runner");
    let addr = config_address(&conf);
    // Configure wireguard-go exactly as wg-quick would, from the printed config only.
    let stripped = hc.dir.join("wg.conf");
    w.exec_ok(
        &hc,
        &format!(
            "grep -vE '^(Address|MTU|DNS) =' {} > {}",
            conf.display(),
            stripped.display()
        ),
    );
    // wireguard-go daemonises; its output must not hold our pipe open.
    w.exec_ok(
        &hc,
        "LOG_LEVEL=error wireguard-go wg0 >/dev/null 2>&1 </dev/null",
    );
    w.exec_ok(
        &hc,
        &format!(
            "wg setconf wg0 {} && ip addr add {addr}/32 dev wg0 && ip link set wg0 mtu 1420 up && \
             ip route add 100.64.0.0/10 dev wg0",
            stripped.display()
        ),
    );
    let out = w.exec_ok(&hc, "ping -c 3 -i 0.3 -W 3 100.64.0.1");
    assert!(out.contains("3 received"), "{out}");
    let out = w.exec_ok(&hc, &format!("ping -c 3 -i 0.3 -W 3 {}", a.address));
    assert!(out.contains("3 received"), "{out}");
    w.exec_ok(&a.host, &format!("ping -c 2 -i 0.3 -W 3 {addr}"));
}

#[test]
fn bad_datagrams_are_counted_and_harmless() {
    let (w, relay, a, b) = two_nodes("baddgram");
    let target = format!("UDP:{}", relay.endpoint);
    // Random, truncated, oversized, and WireGuard-shaped garbage.
    for cmd in [
        "head -c 200 /dev/urandom",
        "printf '\\x04\\x00\\x00\\x00'",
        "printf '\\x01\\x00\\x00\\x00'; head -c 144 /dev/urandom",
        "printf '\\x04\\x00\\x00\\x00'; head -c 1000 /dev/urandom",
        "head -c 60000 /dev/urandom",
        "printf 'OVJ\\x01garbage'",
    ] {
        for _ in 0..5 {
            w.exec_ok(&a.host, &format!("({cmd}) | socat -u - {target}"));
        }
    }
    // Every datagram is handled (and counted) soon after it arrived: wait for the counts.
    let drops = || {
        let stats = relay.stats(&w);
        let total: u64 = stats.global.drops.values().sum();
        let per_peer: u64 = relay
            .nodes(&w)
            .iter()
            .map(|n| n.counters.drops.values().sum::<u64>())
            .sum();
        (total + per_peer, stats)
    };
    wait_until(Duration::from_secs(5), || drops().0 >= 25);
    let (counted, stats) = drops();
    assert!(counted >= 25, "drops not counted: {stats:?}");
    // The relay still serves.
    w.exec_ok(&a.host, &format!("ping -c 2 -i 0.2 -W 2 {}", b.address));
}

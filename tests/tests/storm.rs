//! Bench `storm` (issue 16): ping p99 through the relay (node a -> relay -> node b) while a
//! third node registers and unregisters a service 150 times, beside the idle p99 of the same
//! run. Before the hub wrote its state on a thread of its own, every registration stalled
//! forwarding for a write and an fsync.
//!
//! Ignored (a measurement, not a check); run as root with the release binaries:
//! `cargo build --release --bins && OVERLAY_BIN_DIR=$PWD/target/release cargo test --release
//! -p overlay-tests --test storm -- --ignored --nocapture --test-threads=1`
//! (`STORM_CYCLES`, `STORM_ROUNDS` change the cycles per round and the rounds). Namespaces are
//! named `ovh-storm-*`.

use overlay_tests::overlay::{join_node, start_relay, Node};
use overlay_tests::world::{sh, World};
use std::time::{Duration, Instant};

/// Round-trip times in ms of the replies in `ping` output, and how many were sent.
fn rtts(text: &str) -> (Vec<f64>, usize) {
    let got: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    let sent = text
        .lines()
        .find_map(|l| {
            l.split(" packets transmitted")
                .next()
                .filter(|_| l.contains("transmitted"))
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(got.len());
    (got, sent)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Pings `to` from `from` every 5 ms until `during` returns; the replies' round-trip times.
fn ping_during(w: &World, from: &Node, to: &str, during: impl FnOnce()) -> (Vec<f64>, usize) {
    let pid = w.spawn(
        &from.host,
        "ping",
        &[],
        &["ping", "-n", "-i", "0.005", "-W", "1", "-c", "1000000", to],
    );
    std::thread::sleep(Duration::from_millis(200));
    during();
    // SIGINT: ping prints its summary and flushes its output.
    sh(&format!("kill -INT {pid}"));
    std::thread::sleep(Duration::from_millis(500));
    rtts(&w.log(&from.host, "ping"))
}

#[test]
#[ignore]
fn ping_p99_during_a_registration_storm() {
    let cycles = env_num("STORM_CYCLES", 150);
    let rounds = env_num("STORM_ROUNDS", 3);
    let mut w = World::named("ovh", "storm");
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 3");
    let (ha, hb, hc) = (w.add_host("a", 2), w.add_host("b", 3), w.add_host("c", 4));
    let a = join_node(&w, &ha, &token, "--name alpha");
    let b = join_node(&w, &hb, &token, "--name beta");
    let c = join_node(&w, &hc, &token, "--name gamma");
    let overlay = overlay_tests::world::bin("overlay");
    let storm = format!(
        "for i in $(seq {cycles}); do {env} {bin} register storm --port 80 >/dev/null && \
         {env} {bin} unregister storm >/dev/null || exit 1; done",
        env = c.env(),
        bin = overlay.display()
    );
    // Warm up: sessions, ARP, caches.
    w.exec_ok(&a.host, &format!("ping -n -c 20 -i 0.01 {}", b.address));
    for round in 1..=rounds {
        let (idle, idle_sent) = ping_during(&w, &a, &b.address, || {
            std::thread::sleep(Duration::from_secs(4))
        });
        let mut storm_secs = 0.0;
        let (busy, busy_sent) = ping_during(&w, &a, &b.address, || {
            let t = Instant::now();
            w.exec_ok(&c.host, &storm);
            storm_secs = t.elapsed().as_secs_f64();
        });
        let (i99, s99) = (percentile(&idle, 0.99), percentile(&busy, 0.99));
        println!(
            "storm round {round}: idle p50 {:.3} ms p99 {i99:.3} ms ({} of {idle_sent} answered); \
             during {cycles} register/unregister cycles ({storm_secs:.1} s): p50 {:.3} ms p99 \
             {s99:.3} ms ({} of {busy_sent} answered); p99 ratio {:.2}",
            percentile(&idle, 0.5),
            idle.len(),
            percentile(&busy, 0.5),
            busy.len(),
            s99 / i99
        );
    }
    let stats = relay.stats(&w);
    println!("relay drops: {}", stats["global"]["drops"]);
}

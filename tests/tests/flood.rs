//! The relay's join path under an anonymous flood and forged sources, and what `overlay join`
//! says when it gets no registration (issue 15, findings 1, 2 and 9).

use overlay_core::identity::token::Token;
use overlay_tests::overlay::{join_node, overlay, start_relay};
use overlay_tests::world::{bin, wait_until, World};
use std::time::{Duration, Instant};

/// Packet loss (percent) and average RTT (ms) from `ping`'s summary.
fn ping_figures(out: &str) -> (f64, f64) {
    let loss = out
        .split(',')
        .find(|p| p.contains("packet loss"))
        .and_then(|p| p.trim().split('%').next()?.parse().ok())
        .unwrap_or(100.0);
    let avg = out
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1)?.split('/').nth(1)?.trim().parse().ok())
        .unwrap_or(f64::INFINITY);
    (loss, avg)
}

#[test]
fn an_anonymous_flood_leaves_pings_and_joins_working() {
    let mut w = World::new("flflood");
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 5");
    let a = w.add_host("a", 2);
    join_node(&w, &a, &token, "--name pinger");
    let f = w.add_host("f", 3);
    let flood = bin("overlay-flood");
    // 50k anonymous join datagrams a second for 20 s, from one host inside the world.
    let pid = w.spawn(
        &f,
        "flood",
        &[],
        &[
            flood.to_str().expect("utf-8 path"),
            "anon",
            "--relay",
            &relay.endpoint,
            "--rate",
            "50000",
            "--secs",
            "20",
        ],
    );
    assert!(pid > 0);
    // Wait until the flood reaches the relay (its counters say so).
    assert!(
        wait_until(Duration::from_secs(10), || {
            relay.stats(&w).joins.wrong_key > 10_000
        }),
        "the flood did not reach the relay: {}",
        w.log(&f, "flood")
    );
    let log_before = w.log(&w.hub, "relay").len();
    let ping = w.exec(&a, "ping -q -c 100 -i 0.05 -W 1 100.64.0.1");
    let (loss, rtt) = ping_figures(&String::from_utf8_lossy(&ping.stdout));
    // A valid join completes during the flood, within the node's 10 s.
    let c = w.add_host("c", 4);
    let started = Instant::now();
    join_node(&w, &c, &token, "--name during");
    let join_secs = started.elapsed().as_secs_f64();
    let wrong_key = relay.stats(&w).joins.wrong_key;
    let log_growth = w.log(&w.hub, "relay").len() - log_before;
    eprintln!("flood 50k/s: loss {loss}% rtt {rtt} ms, join {join_secs:.1} s, wrong_key {wrong_key}, log +{log_growth} B");
    assert!(loss <= 5.0, "ping loss {loss}% during the flood");
    assert!(join_secs < 10.0);
    // Counters and summary lines, not a line per datagram.
    assert!(log_growth < 4096, "the relay log grew {log_growth} bytes");
}

#[test]
fn forged_source_wrong_tokens_do_not_lock_the_victim_out() {
    let mut w = World::new("flforge");
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 5");
    let victim = w.add_host("v", 2);
    let x = w.add_host("x", 3);
    let flood = bin("overlay-flood");
    let out = w.exec_ok(
        &x,
        &format!(
            "{} forge --relay {} --token {token} --source {} --count 30",
            flood.display(),
            relay.endpoint,
            victim.ip
        ),
    );
    assert!(out.contains("\"sent\":30"), "{out}");
    // The relay saw them (opened once unproven, then asked for cookies nobody answered).
    assert!(
        wait_until(Duration::from_secs(5), || relay.stats(&w).joins.requests
            >= 30),
        "the forged requests did not reach the relay"
    );
    let started = Instant::now();
    join_node(&w, &victim, &token, "");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn join_says_what_the_relay_said() {
    let mut w = World::new("flmsg");
    let relay = start_relay(&w, &[]);
    let good = relay.token(&w, "--uses 5");
    let h = w.add_host("a", 2);
    let stderr = |args: &str| {
        let out = overlay(&w, &h, args);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A token for another relay key: the relay says so cheaply.
    let mut other = Token::parse(&good).expect("token");
    other.relay_key =
        overlay_core::identity::key::decode("mHXv2lZTBxy0qOHi6I3fH9gMqc0f0Gy6CnlJcXjnM30=")
            .expect("key");
    let e = stderr(&format!("join {}", other.encode()));
    assert!(e.contains("made for another relay"), "{e}");
    assert!(!e.contains("blocked"), "{e}");
    // Answered and refused: the relay's reason.
    let mut bad = Token::parse(&good).expect("token");
    bad.secret[0] ^= 0xff;
    let e = stderr(&format!("join {}", bad.encode()));
    assert!(
        e.contains("answered and refused") && e.contains("not valid"),
        "{e}"
    );
    // No answer at all: then UDP or the endpoint is the suspect.
    let mut silent = Token::parse(&good).expect("token");
    silent.endpoints = vec![format!("{}:51999", w.hub.ip)];
    let e = stderr(&format!("join {}", silent.encode()));
    assert!(e.contains("did not answer") && e.contains("UDP"), "{e}");
}

//! `overlay join` end to end: tokens, registration, stable addresses, leave, bad input.

use overlay_core::api::daemon::LinkState;
use overlay_core::identity::token::Token;
use overlay_tests::overlay::{join_node, overlay, start_relay, wait_daemon_gone, wait_expired};
use overlay_tests::world::{wait_until, World};
use std::time::{Duration, Instant};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[test]
fn two_nodes_join_and_reach_each_other() {
    let mut w = World::new("join");
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 2 --ttl 1h");
    assert!(token.starts_with("ovl1_"), "{token}");
    let ha = w.add_host("a", 2);
    let hb = w.add_host("b", 3);
    let a = join_node(&w, &ha, &token, "--name alpha");
    let b = join_node(&w, &hb, &token, "--name beta");
    w.exec_ok(&a.host, &format!("ping -c 3 -i 0.2 -W 2 {}", b.address));
    let st = a.status(&w).expect("status");
    assert_eq!(st.node, "alpha");
    assert_eq!(st.domain, "ovl.internal");
    assert!(st.relay.last_handshake_secs.is_some(), "{st:?}");
    // The token is used up and remembers who used it.
    let list = relay.tokens(&w);
    assert_eq!(list[0].uses_left, 0);
    assert_eq!(list[0].used_by, ["alpha", "beta"]);
    assert_eq!(relay.nodes(&w).len(), 2);
    // The key file is private.
    let mode = w.exec_ok(
        &ha,
        &format!("stat -c %a {}/state/private.key", ha.dir.display()),
    );
    assert_eq!(mode.trim(), "600");
}

#[test]
fn addresses_survive_node_and_relay_restarts() {
    let mut w = World::new("stable");
    let mut relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 2");
    let ha = w.add_host("a", 2);
    let hb = w.add_host("b", 3);
    let a = join_node(&w, &ha, &token, "");
    let b = join_node(&w, &hb, &token, "");
    // down / up keeps the address.
    let out = overlay(&w, &ha, "down");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(a.status(&w).expect("status").state, LinkState::Down);
    let out = overlay(&w, &ha, "up");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(a.status(&w).expect("status").address.to_string(), a.address);
    // A daemon killed outright comes back with the same address too.
    let pid = a.daemon_pid(&w);
    w.exec_ok(&ha, &format!("kill -9 {pid}"));
    wait_daemon_gone(&w, &ha, pid);
    let out = overlay(&w, &ha, "up");
    assert!(out.status.success(), "{}", stderr(&out));
    w.exec_ok(&ha, &format!("ping -c 2 -i 0.2 -W 2 {}", b.address));
    // The relay restarts: everyone keeps its address and reconnects without rejoining.
    let before = relay.state_bytes();
    relay.kill_and_restart(&w, Duration::from_millis(300), &[]);
    let started = Instant::now();
    let ok = wait_until(Duration::from_secs(15), || {
        w.exec(&ha, &format!("ping -c 1 -W 1 {}", b.address))
            .status
            .success()
    });
    assert!(ok, "nodes did not reconnect after the relay restart");
    eprintln!(
        "reconnected {} ms after the relay restart",
        started.elapsed().as_millis()
    );
    assert_eq!(a.status(&w).expect("status").address.to_string(), a.address);
    assert_eq!(b.status(&w).expect("status").address.to_string(), b.address);
    let names = relay.node_names(&w);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!before.is_empty());
}

#[test]
fn leave_frees_the_name() {
    let mut w = World::new("leave");
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 3");
    let ha = w.add_host("a", 2);
    let hb = w.add_host("b", 3);
    join_node(&w, &ha, &token, "--name laptop");
    // The name is taken while the node exists.
    let out = overlay(&w, &hb, &format!("join {token} --name laptop"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already used"), "{}", stderr(&out));
    let out = overlay(&w, &ha, "leave");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!ha.dir.join("state/node.json").exists());
    assert!(!ha.dir.join("state/private.key").exists());
    let b = join_node(&w, &hb, &token, "--name laptop");
    assert_eq!(b.status(&w).expect("status").node, "laptop");
    assert_eq!(relay.nodes(&w).len(), 1);
}

#[test]
fn bad_tokens_and_conditions_are_refused_clearly() {
    let mut w = World::new("badjoin");
    let relay = start_relay(&w, &[]);
    let h = w.add_host("a", 2);
    let good = relay.token(&w, "--uses 1");
    let used = relay.token(&w, "--uses 1");
    let hu = w.add_host("u", 3);
    join_node(&w, &hu, &used, "");
    let revoked = relay.token(&w, "--uses 5");
    let revoked_id = Token::parse(&revoked).expect("token").id;
    relay.admin(&w, &format!("token revoke {revoked_id}"));
    let expired = relay.token(&w, "--uses 5 --ttl 1s");
    let mut other_key = Token::parse(&good).expect("token");
    other_key.relay_key = [7; 32];
    let mut unreachable = Token::parse(&good).expect("token");
    unreachable.endpoints = vec!["10.78.0.250:51820".into()];
    wait_expired(&w, &relay, &expired);

    let before = relay.state_bytes();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "malformed",
            "hello-world".into(),
            "not an overlay join token",
        ),
        ("truncated", good[..good.len() / 2].to_string(), "token"),
        (
            "other relay key",
            other_key.encode(),
            "made for another relay",
        ),
        ("expired", expired.clone(), "expired"),
        ("revoked", revoked.clone(), "revoked"),
        ("used up", used.clone(), "used up"),
        ("unreachable", unreachable.encode(), "did not answer"),
    ];
    for (what, token, expect) in cases {
        let started = Instant::now();
        let out = overlay(&w, &h, &format!("join {token}"));
        let err = stderr(&out);
        assert!(!out.status.success(), "{what}: join succeeded");
        assert!(err.contains(expect), "{what}: unexpected error: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("overlay: "),
            "{what}: the error is not one clear line: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(13),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert_eq!(relay.state_bytes(), before, "{what}: relay state changed");
        assert!(
            !h.dir.join("state/node.json").exists(),
            "{what}: settings were saved"
        );
    }
    // Without root.
    let out = w.exec(
        &h,
        &format!(
            "setpriv --reuid 65534 --regid 65534 --clear-groups env OVERLAY_STATE_DIR=/tmp/nobody-ovl {} join {good}",
            overlay_tests::world::bin("overlay").display()
        ),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("sudo overlay join"),
        "{}",
        stderr(&out)
    );
    assert_eq!(relay.state_bytes(), before);
    // And the good token still works afterwards.
    join_node(&w, &h, &good, "");
}

#[test]
fn acknowledged_joins_survive_a_relay_sigkill() {
    let mut w = World::new("burst");
    let mut relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 200");
    let h = w.add_host("a", 2);
    // 40 joins in parallel, each with its own state directory and no daemon.
    let script = format!(
        "for i in $(seq 1 40); do (OVERLAY_STATE_DIR={dir}/s$i OVERLAY_RUN_DIR={dir}/r$i {bin} join {token} --name n$i --no-start \
         > {dir}/out$i 2>&1) & sleep 0.01; done; wait",
        dir = h.dir.display(),
        bin = overlay_tests::world::bin("overlay").display()
    );
    w.spawn(&h, "burst", &[], &["bash", "-c", &script]);
    // SIGKILL in the middle of the burst: once the first joins were acknowledged.
    assert!(wait_until(Duration::from_secs(10), || {
        (1..=40).any(|i| {
            std::fs::read_to_string(h.dir.join(format!("out{i}")))
                .is_ok_and(|s| s.contains("joined as") || s.contains("overlay:"))
        })
    }));
    relay.kill_and_restart(&w, Duration::from_millis(200), &[]);
    // Joins that were not answered retry within their 10 s and reach the restarted relay.
    assert!(wait_until(Duration::from_secs(20), || {
        (1..=40).all(|i| {
            std::fs::read_to_string(h.dir.join(format!("out{i}")))
                .map(|s| s.contains("joined as") || s.contains("overlay:"))
                .unwrap_or(false)
        })
    }));
    let names = relay.node_names(&w);
    let mut acked = 0;
    for i in 1..=40 {
        let out = std::fs::read_to_string(h.dir.join(format!("out{i}"))).unwrap_or_default();
        if out.contains("joined as") {
            acked += 1;
            assert!(
                names.contains(&format!("n{i}")),
                "n{i} was acknowledged but is gone: {names:?}"
            );
        }
    }
    assert!(acked >= 30, "only {acked} of 40 joins succeeded");
    // The state file parses (the relay started from it) and no prefix is handed out twice.
    let mut prefixes: Vec<String> = relay.nodes(&w).into_iter().map(|n| n.prefix).collect();
    let n = prefixes.len();
    prefixes.sort();
    prefixes.dedup();
    assert_eq!(prefixes.len(), n);
}

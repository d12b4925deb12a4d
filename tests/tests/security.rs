//! Nobody in who should not be, and bad conditions refused without damage.

use overlay_core::token::Token;
use overlay_tests::overlay::{join_node, overlay, start_relay};
use overlay_tests::world::{bin, sh, wait_until, World};
use std::time::Duration;

#[test]
fn control_and_admin_are_not_reachable_from_outside() {
    let mut w = World::new("ctlsec");
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 1");
    let h = w.add_host("a", 2);
    let a = join_node(&w, &h, &token, "");
    let _ = a;
    // A control request sent to the relay's UDP port outside the tunnel gets nothing back.
    let out = w.exec_ok(
        &h,
        &format!(
            "printf '{{\"id\":1,\"op\":\"leave\"}}' | timeout 3 socat -t 2 - UDP:{} || true",
            relay.endpoint
        ),
    );
    assert!(
        out.is_empty(),
        "the relay answered a control request from outside the tunnel: {out}"
    );
    assert_eq!(
        relay.nodes(&w).as_array().map(|l| l.len()),
        Some(1),
        "the node was removed"
    );
    // The admin socket and the state are private.
    let mode = sh(&format!(
        "stat -c %a {}",
        relay.state.join("admin.sock").display()
    ));
    assert_eq!(mode.trim(), "600");
    let mode = sh(&format!(
        "stat -c %a {}",
        relay.state.join("state.json").display()
    ));
    assert_eq!(mode.trim(), "600");
    let mode = sh(&format!(
        "stat -c %a {}",
        relay.state.join("private.key").display()
    ));
    assert_eq!(mode.trim(), "600");
}

#[test]
fn node_socket_serves_root_and_the_joining_user_only() {
    let mut w = World::new("nodesock");
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 1");
    let h = w.add_host("a", 2);
    // Joined through "sudo" by uid 4343.
    let env = format!(
        "OVERLAY_STATE_DIR={0}/state OVERLAY_RUN_DIR={0}/run",
        h.dir.display()
    );
    w.exec_ok(&h, &format!("chmod 755 {}", h.dir.display()));
    w.exec_ok(
        &h,
        &format!(
            "{env} SUDO_UID=4343 SUDO_GID=4343 {} join {token}",
            bin("overlay").display()
        ),
    );
    let as_user = |uid: u32| {
        w.exec(
            &h,
            &format!(
                "setpriv --reuid {uid} --regid {uid} --clear-groups env {env} {} status --json",
                bin("overlay").display()
            ),
        )
    };
    let owner = as_user(4343);
    assert!(
        owner.status.success(),
        "the joining user was refused: {}",
        String::from_utf8_lossy(&owner.stderr)
    );
    let stranger = as_user(4242);
    assert!(
        !stranger.status.success(),
        "another user got the node's status"
    );
    assert!(
        overlay(&w, &h, "status --json").status.success(),
        "root was refused"
    );
}

#[test]
fn expired_and_revoked_tokens_stay_dead_after_a_relay_restart() {
    let mut w = World::new("tokdead");
    let mut relay = start_relay(&w, &[]);
    let h = w.add_host("a", 2);
    let revoked = relay.token(&w, "--uses 5");
    relay.admin(
        &w,
        &format!("token revoke {}", Token::parse(&revoked).expect("token").id),
    );
    let expired = relay.token(&w, "--uses 5 --ttl 1s");
    std::thread::sleep(Duration::from_millis(1100));
    relay.kill_and_restart(&w, Duration::from_millis(200), &[]);
    for (what, t) in [("revoked", &revoked), ("expired", &expired)] {
        let out = overlay(&w, &h, &format!("join {t}"));
        assert!(!out.status.success(), "{what} token worked after a restart");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(what),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn token_guessing_is_rate_limited() {
    let mut w = World::new("guess");
    let relay = start_relay(&w, &[]);
    let good = relay.token(&w, "--uses 5");
    let mut forged = Token::parse(&good).expect("token");
    forged.secret[0] ^= 0xff;
    let forged = forged.encode();
    let h = w.add_host("a", 2);
    // The first failure only makes the address prove itself (a cookie round trip); the ten
    // after it count against the proven address.
    for _ in 0..11 {
        let out = overlay(&w, &h, &format!("join {forged}"));
        assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
    }
    // The next attempt from this address is refused, even with the right token, and says why.
    let out = overlay(&w, &h, &format!("join {good}"));
    assert!(
        !out.status.success(),
        "a join went through right after 11 bad guesses"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refuses joins from this address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        relay.stats(&w)["joins"]["locked_out"].as_u64().unwrap_or(0) >= 1,
        "the relay did not count the lockout"
    );
    // Another address is not affected.
    let other = w.add_host("b", 3);
    join_node(&w, &other, &good, "");
}

/// A tmpfs mounted for the length of a test.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_state_directory_refuses_changes_and_keeps_serving() {
    let mut w = World::new("diskfull");
    let state = w.hub.dir.join("relay-state");
    std::fs::create_dir_all(&state).expect("state dir");
    sh(&format!(
        "mount -t tmpfs -o size=256k tmpfs {}",
        state.display()
    ));
    let _mount = Tmpfs(state.clone());
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 2");
    let ha = w.add_host("a", 2);
    let a = join_node(&w, &ha, &token, "");
    // Fill the disk.
    let _ = sh(&format!(
        "dd if=/dev/zero of={}/filler bs=4k count=1000 2>/dev/null || true",
        state.display()
    ));
    let before = relay.state_bytes();
    let out = w.exec(
        &w.hub,
        &format!(
            "{} --state {} token create",
            bin("overlay-relay").display(),
            state.display()
        ),
    );
    assert!(!out.status.success(), "a token was created on a full disk");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not be saved") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(relay.state_bytes(), before, "the state file changed");
    serde_json::from_slice::<serde_json::Value>(&before).expect("the state file still parses");
    // Service continues.
    w.exec_ok(&a.host, "ping -c 2 -i 0.2 -W 2 100.64.0.1");
    // Room again: changes work again.
    sh(&format!("rm {}/filler", state.display()));
    assert!(relay.token(&w, "--uses 1").starts_with("ovl1_"));
}

#[test]
fn a_killed_daemon_comes_back_with_its_services() {
    let mut w = World::new("nodekill");
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 2");
    let ha = w.add_host("a", 2);
    let hb = w.add_host("b", 3);
    let a = join_node(&w, &ha, &token, "--name alpha");
    let b = join_node(&w, &hb, &token, "--name beta");
    w.spawn(
        &ha,
        "web",
        &[],
        &[
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "18080",
            "--directory",
            "/etc",
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || w
        .exec(&ha, "curl -sf -o /dev/null http://127.0.0.1:18080/hostname")
        .status
        .success()));
    let out = overlay(&w, &ha, "register web --port 80 --target 18080 --json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reg: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let addr = reg["address"].as_str().expect("address").to_string();
    let fetch = || {
        w.exec(
            &hb,
            &format!("curl -sf --max-time 3 -o /dev/null http://{addr}/hostname"),
        )
        .status
        .success()
    };
    assert!(
        wait_until(Duration::from_secs(5), fetch),
        "b cannot reach a's service"
    );
    let pid = a.status(&w).expect("status")["pid"].as_u64().expect("pid");
    w.exec_ok(&ha, &format!("kill -9 {pid}"));
    std::thread::sleep(Duration::from_millis(300));
    // Names outside the overlay still have a resolver behind ours while the daemon is dead.
    let resolv = std::fs::read_to_string(
        std::path::Path::new("/etc/netns")
            .join(&ha.ns)
            .join("resolv.conf"),
    )
    .unwrap_or_default();
    assert!(resolv.contains("100.100.100.100"));
    let out = overlay(&w, &ha, "up");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_until(Duration::from_secs(10), fetch),
        "the service did not come back after the daemon restart"
    );
    let _ = b;
}

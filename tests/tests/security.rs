//! Nobody in who should not be, and bad conditions refused without damage.

use overlay_core::api::daemon::LinkState;
use overlay_core::identity::token::Token;
use overlay_tests::overlay::{join_node, overlay, start_relay, wait_daemon_gone, wait_expired};
use overlay_tests::world::{bin, sh, wait_until, World};
use std::time::{Duration, Instant};

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
    assert_eq!(relay.nodes(&w).len(), 1, "the node was removed");
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
    // Refused with the socket's sentence, not a daemon that seems to be down.
    let err = String::from_utf8_lossy(&stranger.stderr);
    assert!(
        err.contains("the overlay daemon answers only root and the user who joined"),
        "{err}"
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
    wait_expired(&w, &relay, &expired);
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
        relay.stats(&w).joins.locked_out >= 1,
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
    let pid = a.daemon_pid(&w);
    w.exec_ok(&ha, &format!("kill -9 {pid}"));
    wait_daemon_gone(&w, &ha, pid);
    // A SIGKILL cannot restore: resolv.conf still names only the node's DNS until the next start
    // restores the original first (the original servers are not listed behind ours any more).
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

/// What an unprivileged program on a laptop tries against the relay's control port: it
/// unregisters the node's service, registers one of its own and makes the node leave, from an
/// ephemeral port and (when it can bind it) from the daemon's own control port, then prints
/// whatever the relay answers.
const CONTROL_ATTACK: &str = r#"
import json, socket, sys
node, relay = sys.argv[1], ("100.64.0.1", 4100)
requests = [
    {"id": 11, "op": "unregister", "name": "web"},
    {"id": 12, "op": "register", "name": "evil", "port": 80},
    {"id": 13, "op": "leave"},
]
socks = []
for bind in [("0.0.0.0", 0), (node, 4100)]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(bind)
    except OSError as e:
        print("cannot bind", bind, e, file=sys.stderr)
        continue
    s.settimeout(1.5)
    socks.append(s)
for s in socks:
    for r in requests:
        for _ in range(3):
            s.sendto(json.dumps(r).encode(), relay)
for s in socks:
    try:
        while True:
            print("answer:", s.recv(4096).decode(errors="replace"))
    except socket.timeout:
        pass
"#;

#[test]
fn other_local_users_cannot_speak_for_the_node() {
    let mut w = World::new("ctl2user");
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 1");
    let h = w.add_host("a", 2);
    let a = join_node(&w, &h, &token, "--name alpha");
    w.spawn(
        &h,
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
    let register = |name: &str, port: u16| {
        let out = overlay(
            &w,
            &h,
            &format!("register {name} --port {port} --target 18080 --json"),
        );
        assert!(
            out.status.success(),
            "the daemon could not register {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    register("web", 80);
    let services = || -> Vec<String> { relay.services(&w).into_iter().map(|s| s.name).collect() };
    assert!(services().contains(&"web".to_string()));

    // The attack, as uid 65534 on the laptop.
    let script = h.dir.join("control-attack.py");
    std::fs::write(&script, CONTROL_ATTACK).expect("write script");
    w.exec_ok(
        &h,
        &format!(
            "chmod 755 {0} && chmod 644 {1}",
            h.dir.display(),
            script.display()
        ),
    );
    let out = w.exec(
        &h,
        &format!(
            "setpriv --reuid 65534 --regid 65534 --clear-groups timeout 20 python3 {} {}",
            script.display(),
            a.address
        ),
    );
    assert!(
        out.status.success(),
        "the attack script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = String::from_utf8_lossy(&out.stdout);
    assert!(
        answers.trim().is_empty(),
        "a local user read the relay's control replies: {answers}"
    );

    // The daemon's own control still works; once its request is through, the attacker's
    // (sent earlier, on the same tunnel) have been dealt with too.
    register("after", 81);
    assert!(
        wait_until(Duration::from_secs(5), || services()
            .contains(&"after".to_string())),
        "the daemon's registration did not reach the relay: {:?}",
        services()
    );
    let nodes = relay.node_names(&w);
    assert!(
        nodes.iter().any(|n| n == "alpha"),
        "the node was deregistered by another user: {nodes:?}"
    );
    let names = services();
    assert!(
        names.contains(&"web".to_string()),
        "another user unregistered the node's service: {names:?}"
    );
    assert!(
        !names.contains(&"evil".to_string()),
        "another user registered a service as the node: {names:?}"
    );
    // Names still resolve, and the node counted what it refused.
    assert!(
        wait_until(Duration::from_secs(5), || !w
            .exec_ok(
                &h,
                "dig +time=2 +tries=1 @100.100.100.100 +short after.ovl.internal"
            )
            .trim()
            .is_empty()),
        "the daemon's service does not resolve"
    );
    let st = a.status(&w).expect("status");
    assert_eq!(st.state, LinkState::Connected, "{st:?}");
    let refused = st
        .running
        .as_ref()
        .and_then(|r| r.drops.get("local_control"));
    assert!(
        refused.is_some_and(|&n| n >= 9),
        "the local control requests were not refused at the TUN device: {st:?}"
    );
}

#[test]
fn a_lost_relay_key_is_refused_until_new_key_is_asked_for() {
    let w = World::new("st8key");
    let mut relay = start_relay(&w, &[]);
    relay.token(&w, "--uses 2");
    let old_key = relay.stats(&w).relay_public_key;
    sh(&format!("kill -9 {}", relay.pid));
    let key = relay.state.join("private.key");
    let serve = format!(
        "timeout 10 {} --state {} serve --listen {}",
        bin("overlay-relay").display(),
        relay.state.display(),
        relay.endpoint
    );
    std::fs::remove_file(&key).expect("remove private.key");
    for (what, expect) in [
        ("missing", "private.key is missing"),
        ("damaged", "is damaged"),
    ] {
        if what == "damaged" {
            std::fs::write(&key, "not a key\n").expect("write key");
        }
        let t = Instant::now();
        let out = w.exec(&w.hub, &serve);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with a {what} key: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        assert!(
            err.contains(expect) && err.contains("1 token") && err.contains("--new-key"),
            "{err}"
        );
        assert_eq!(
            err.trim()
                .lines()
                .last()
                .map(|l| l.starts_with("overlay-relay: ")),
            Some(true)
        );
    }
    relay.kill_and_restart(&w, Duration::ZERO, &["--new-key"]);
    assert_ne!(relay.stats(&w).relay_public_key, old_key);
    assert!(relay.state.join("private.key.damaged").exists());
    let log = w.log(&w.hub, "relay");
    assert!(
        log.contains("WARN") && log.contains("every node must join again"),
        "{log}"
    );
    // The flag left set does not replace the good key at the next start.
    let new_key = relay.stats(&w).relay_public_key;
    relay.kill_and_restart(&w, Duration::ZERO, &["--new-key"]);
    assert_eq!(relay.stats(&w).relay_public_key, new_key);
}

/// Captures the first handshake initiation to the relay's port on the hub's bridge (an
/// eavesdropper on the underlay) into `out` as hex; writes `ready` once listening.
const CAPTURE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("br0", 0))
s.settimeout(30)
open(sys.argv[2], "w").close()
while True:
    f = s.recv(65535)
    if len(f) < 34 or f[12:14] != b"\x08\x00" or f[23] != 17:
        continue
    u = 14 + (f[14] & 15) * 4
    p = f[u + 8:]
    if int.from_bytes(f[u + 2:u + 4], "big") == 51820 and len(p) == 148 and p[:4] == b"\x01\0\0\0":
        open(sys.argv[1], "w").write(p.hex())
        break
"#;

/// Sends the recorded datagram to the relay and prints the size of an answer within 2 s (0: none).
const REPLAY: &str = r#"
import socket, sys, select
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(bytes.fromhex(open(sys.argv[1]).read()), (sys.argv[2], 51820))
r, _, _ = select.select([s], [], [], 2.0)
print(len(s.recv(2048)) if r else 0)
"#;

#[test]
fn a_recorded_handshake_replayed_after_a_relay_restart_is_dropped() {
    let mut w = World::new("st8replay");
    let mut relay = start_relay(&w, &[]);
    let ha = w.add_host("a", 2);
    let hm = w.add_host("m", 9);
    let (capture, replay) = (w.dir.join("capture.py"), w.dir.join("replay.py"));
    std::fs::write(&capture, CAPTURE).expect("capture script");
    std::fs::write(&replay, REPLAY).expect("replay script");
    let (recorded, ready) = (w.dir.join("init.hex"), w.dir.join("ready"));
    w.spawn(
        &w.hub,
        "capture",
        &[],
        &[
            "python3",
            capture.to_str().expect("utf-8"),
            recorded.to_str().expect("utf-8"),
            ready.to_str().expect("utf-8"),
        ],
    );
    assert!(wait_until(Duration::from_secs(10), || ready.exists()));
    let token = relay.token(&w, "--uses 1");
    let _node = join_node(&w, &ha, &token, "--name a");
    assert!(
        wait_until(Duration::from_secs(10), || recorded.exists()),
        "no initiation captured: {}",
        w.log(&w.hub, "capture")
    );
    let before = relay.nodes(&w)[0].endpoint.clone();
    assert!(before
        .as_deref()
        .is_some_and(|e| e.starts_with(&format!("{}:", ha.ip))));
    // A clean stop, then (second round) a crash: either way the newest timestamp is on disk.
    for round in ["restart", "crash"] {
        if round == "restart" {
            sh(&format!("kill -TERM {}", relay.pid));
            let sock = relay.state.join("admin.sock");
            assert!(wait_until(Duration::from_secs(10), || !sock.exists()));
        }
        relay.kill_and_restart(&w, Duration::ZERO, &[]);
        let answer = w.exec_ok(
            &hm,
            &format!(
                "python3 {} {} {}",
                replay.display(),
                recorded.display(),
                w.hub.ip
            ),
        );
        assert_eq!(
            answer.trim(),
            "0",
            "after a {round} the relay answered the replay"
        );
        let n = &relay.nodes(&w)[0];
        assert_eq!(n.counters.drops.get("replayed"), Some(&1), "{n:?}");
        assert_ne!(
            n.endpoint
                .as_deref()
                .map(|e| e.starts_with(&format!("{}:", hm.ip))),
            Some(true),
            "after a {round} the replay moved the endpoint: {n:?}"
        );
        // The real node still works through the relay.
        assert!(
            wait_until(Duration::from_secs(15), || {
                w.exec(&ha, "ping -c1 -W1 100.64.0.1").status.success()
            }),
            "the node lost the relay after a {round}: {}",
            w.log(&ha, "node")
        );
        let after = relay.nodes(&w)[0].endpoint.clone();
        assert_eq!(after, before);
    }
}

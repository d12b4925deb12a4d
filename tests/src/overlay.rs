//! Helpers that drive the overlay binaries inside a [`World`].

use crate::world::{bin, wait_until, Host, World};
use overlay_core::api::daemon::{LinkState, Registered, StatusReply};
use overlay_core::names::registry::ServiceInstance;
use overlay_core::names::resolver::{ServiceListing, Where};
use overlay_core::relay::state::TokenRecord;
use overlay_core::relay::{NodeInfo, RelayStats};
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;

/// A relay running in the world's hub namespace.
pub struct Relay {
    /// Its state directory.
    pub state: PathBuf,
    /// Its pid (changes on restart).
    pub pid: u32,
    /// The UDP endpoint nodes use.
    pub endpoint: String,
}

/// Starts `overlay-relay serve` in the hub and waits for its admin socket.
pub fn start_relay(w: &World, extra: &[&str]) -> Relay {
    let state = w.hub.dir.join("relay-state");
    let endpoint = format!("{}:51820", w.hub.ip);
    let mut relay = Relay {
        state,
        pid: 0,
        endpoint,
    };
    relay.pid = spawn_relay(w, &relay, extra);
    relay
}

fn spawn_relay(w: &World, r: &Relay, extra: &[&str]) -> u32 {
    let _ = std::fs::remove_file(r.state.join("admin.sock"));
    let relay_bin = bin("overlay-relay");
    let state = r.state.to_string_lossy().into_owned();
    let mut cmd = vec![
        relay_bin.to_str().expect("utf-8 path"),
        "--state",
        &state,
        "serve",
        "--listen",
        &r.endpoint,
    ];
    cmd.extend_from_slice(extra);
    let pid = w.spawn(&w.hub, "relay", &[("RUST_LOG", &log_filter())], &cmd);
    let sock = r.state.join("admin.sock");
    assert!(
        wait_until(Duration::from_secs(10), || sock.exists()),
        "relay did not start: {}",
        w.log(&w.hub, "relay")
    );
    pid
}

impl Relay {
    /// Kills the relay with SIGKILL and starts it again with the same state.
    pub fn kill_and_restart(&mut self, w: &World, pause: Duration, extra: &[&str]) {
        crate::world::sh(&format!("kill -9 {}", self.pid));
        // Its sockets are free once it is gone or a zombie; binding earlier fails (EADDRINUSE).
        let stat = format!("/proc/{}/stat", self.pid);
        assert!(
            wait_until(Duration::from_secs(10), || std::fs::read_to_string(&stat)
                .map_or(true, |s| s
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))),
            "relay {} did not exit after SIGKILL",
            self.pid
        );
        // The outage itself: the relay stays away this long (what the callers test).
        std::thread::sleep(pause);
        self.pid = spawn_relay(w, self, extra);
    }

    /// Runs an `overlay-relay` admin command in the hub and returns stdout.
    pub fn admin(&self, w: &World, args: &str) -> String {
        w.exec_ok(
            &w.hub,
            &format!(
                "{} --state {} {args}",
                bin("overlay-relay").display(),
                self.state.display()
            ),
        )
    }

    /// Registers a peer and writes its wg-quick config to `<host dir>/<name>.conf`.
    pub fn peer_add(&self, w: &World, host: &Host, name: &str) -> PathBuf {
        let conf = self.admin(w, &format!("peer add {name} --wireguard-config"));
        let path = host.dir.join(format!("{name}.conf"));
        std::fs::write(&path, conf).expect("write config");
        path
    }

    /// `overlay-relay nodes --json`.
    pub fn nodes(&self, w: &World) -> Vec<NodeInfo> {
        parse_json("overlay-relay nodes --json", &self.admin(w, "nodes --json"))
    }

    /// `overlay-relay stats --json`.
    pub fn stats(&self, w: &World) -> RelayStats {
        parse_json("overlay-relay stats --json", &self.admin(w, "stats --json"))
    }

    /// `overlay-relay token list --json`.
    pub fn tokens(&self, w: &World) -> Vec<TokenRecord> {
        parse_json(
            "overlay-relay token list --json",
            &self.admin(w, "token list --json"),
        )
    }

    /// `overlay-relay services --json`.
    pub fn services(&self, w: &World) -> Vec<ServiceInstance> {
        parse_json(
            "overlay-relay services --json",
            &self.admin(w, "services --json"),
        )
    }

    /// The names of the nodes `overlay-relay nodes --json` lists.
    pub fn node_names(&self, w: &World) -> Vec<String> {
        self.nodes(w).into_iter().map(|n| n.name).collect()
    }
}

/// The `Address =` of a wg-quick config, without the length.
pub fn config_address(conf: &PathBuf) -> String {
    let text = std::fs::read_to_string(conf).expect("read config");
    text.lines()
        .find_map(|l| l.strip_prefix("Address = "))
        .and_then(|a| a.split('/').next())
        .expect("config has an Address")
        .to_string()
}

/// A node daemon in a host.
pub struct Node {
    /// The host it runs in.
    pub host: Host,
    /// Its overlay address.
    pub address: String,
    /// Its pid.
    pub pid: u32,
}

impl Node {
    /// The environment that points `overlay` at this node's directories.
    pub fn env(&self) -> String {
        format!(
            "OVERLAY_STATE_DIR={0}/state OVERLAY_RUN_DIR={0}/run",
            self.host.dir.display()
        )
    }

    /// Runs an `overlay` command against this node.
    pub fn overlay(&self, w: &World, args: &str) -> std::process::Output {
        w.exec(
            &self.host,
            &format!("{} {} {args}", self.env(), bin("overlay").display()),
        )
    }

    /// `overlay status --json`, if the command succeeds (a node that is down says so).
    pub fn status(&self, w: &World) -> Option<StatusReply> {
        let out = self.overlay(w, "status --json");
        if !out.status.success() {
            return None;
        }
        Some(parse_json(
            "overlay status --json",
            &String::from_utf8_lossy(&out.stdout),
        ))
    }

    /// `overlay ARGS` (a `--json` output), which must succeed, as its typed reply.
    pub fn json<T: DeserializeOwned>(&self, w: &World, args: &str) -> T {
        let out = self.overlay(w, args);
        assert!(
            out.status.success(),
            "overlay {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_json(
            &format!("overlay {args}"),
            &String::from_utf8_lossy(&out.stdout),
        )
    }

    /// `overlay services --json`.
    pub fn services(&self, w: &World) -> Vec<ServiceListing> {
        self.json(w, "services --json")
    }

    /// The overlay `ip:port` of this node's own instance of `name` (tagged `tag`).
    pub fn local_address(&self, w: &World, name: &str, tag: Option<&str>) -> String {
        let list = self.services(w);
        let s = list
            .iter()
            .find(|s| s.name == name && s.where_ == Where::Local && s.tag.as_deref() == tag)
            .unwrap_or_else(|| panic!("{name} {tag:?} is not registered: {list:?}"));
        format!("{}:{}", s.address, s.port.expect("a registered port"))
    }

    /// `overlay register ARGS --json`, which must succeed.
    pub fn register(&self, w: &World, args: &str) -> Registered {
        self.json(w, &format!("register {args} --json"))
    }

    /// The running daemon's pid, from `overlay status`.
    pub fn daemon_pid(&self, w: &World) -> u32 {
        let st = self.status(w).expect("status");
        st.running.map(|r| r.pid).expect("a running daemon")
    }

    /// Whether `overlay status` says connected.
    pub fn connected(&self, w: &World) -> bool {
        self.status(w)
            .is_some_and(|s| s.state == LinkState::Connected)
    }
}

/// The `--json` output of `what` as its typed reply: a field that is missing, renamed or of
/// another type breaks the contract, and the test, here.
pub fn parse_json<T: DeserializeOwned>(what: &str, text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} does not parse ({e}): {text}"))
}

/// Starts `overlay daemon --config` in `host` and waits until it has a handshake.
pub fn start_node(w: &World, host: &Host, conf: &PathBuf) -> Node {
    start_node_with(w, host, conf, &[])
}

/// [`start_node`] with extra `overlay daemon` flags.
pub fn start_node_with(w: &World, host: &Host, conf: &PathBuf, flags: &[&str]) -> Node {
    let d = host.dir.display().to_string();
    let state = format!("{d}/state");
    let run = format!("{d}/run");
    let node_bin = bin("overlay");
    let pid = w.spawn(
        host,
        "node",
        &[
            ("OVERLAY_STATE_DIR", &state),
            ("OVERLAY_RUN_DIR", &run),
            ("RUST_LOG", &log_filter()),
        ],
        &[
            &[
                node_bin.to_str().expect("utf-8 path"),
                "daemon",
                "--config",
                conf.to_str().expect("utf-8 path"),
            ],
            flags,
        ]
        .concat(),
    );
    let node = Node {
        host: host.clone(),
        address: config_address(conf),
        pid,
    };
    let up = wait_until(Duration::from_secs(10), || node.connected(w));
    assert!(
        up,
        "node in {} did not connect: {}",
        host.ns,
        w.log(host, "node")
    );
    node
}

impl Relay {
    /// `overlay-relay token create` with extra flags; returns the token line.
    pub fn token(&self, w: &World, flags: &str) -> String {
        self.admin(w, &format!("token create {flags}"))
            .trim()
            .to_string()
    }

    /// The bytes of the relay's state file.
    pub fn state_bytes(&self) -> Vec<u8> {
        std::fs::read(self.state.join("state.json")).unwrap_or_default()
    }
}

/// The environment that points `overlay` at a host's own directories.
/// The log filter of the relays and daemons the tests start: `OVERLAY_TEST_LOG` (e.g.
/// `overlay=debug,overlay_core=trace` to chase a flaky test), else `info`.
pub fn log_filter() -> String {
    std::env::var("OVERLAY_TEST_LOG").unwrap_or_else(|_| "info".into())
}

/// The environment `overlay` commands run with in `host`: its directories (and `OVERLAY_TEST_LOG`).
pub fn node_env(host: &Host) -> String {
    format!(
        "OVERLAY_STATE_DIR={0}/state OVERLAY_RUN_DIR={0}/run{1}",
        host.dir.display(),
        // Only when asked: the commands' own stderr is part of what tests check.
        std::env::var("OVERLAY_TEST_LOG")
            .map(|l| format!(" RUST_LOG={l}"))
            .unwrap_or_default()
    )
}

/// Runs an `overlay` command in `host` with its directories.
pub fn overlay(w: &World, host: &Host, args: &str) -> std::process::Output {
    w.exec(
        host,
        &format!("{} {} {args}", node_env(host), bin("overlay").display()),
    )
}

/// `overlay join TOKEN [flags]` through the real CLI; returns the node once it is connected.
pub fn join_node(w: &World, host: &Host, token: &str, flags: &str) -> Node {
    let out = overlay(w, host, &format!("join {token} {flags}"));
    assert!(
        out.status.success(),
        "join failed in {}: {}{}",
        host.ns,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let address = text
        .lines()
        .find_map(|l| l.strip_prefix("address: "))
        .map(|a| a.trim().to_string())
        .unwrap_or_else(|| panic!("join printed no address: {text}"));
    let node = Node {
        host: host.clone(),
        address,
        pid: 0,
    };
    let st = node.status(w).expect("status after join");
    assert_eq!(st.state, LinkState::Connected, "{st:?}");
    node
}

/// Sends `bytes` of random data from `a` to `b` over TCP through the overlay (socat), runs
/// `during` while it flows, and checks it arrived whole and unchanged (sha256) within `timeout`.
pub fn transfer(
    w: &World,
    a: &Node,
    b: &Node,
    bytes: u64,
    timeout: Duration,
    during: impl FnOnce(),
) {
    transfer_paced(w, a, b, bytes, None, timeout, |_| during());
}

/// Like [`transfer`], with the sender limited to `rate` bytes a second when given, and `during`
/// handed a probe of how many bytes `b` has received so far.
pub fn transfer_paced(
    w: &World,
    a: &Node,
    b: &Node,
    bytes: u64,
    rate: Option<u64>,
    timeout: Duration,
    during: impl FnOnce(&dyn Fn() -> u64),
) {
    let src = a.host.dir.join("payload");
    let dst = b.host.dir.join("received");
    let _ = std::fs::remove_file(&dst);
    w.exec_ok(
        &a.host,
        &format!("head -c {bytes} /dev/urandom > {}", src.display()),
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
    let sender = match rate {
        None => format!(
            "socat -u FILE:{} TCP:{}:9000,retry=20,interval=0.2",
            src.display(),
            b.address
        ),
        // A paced sender: 64 KiB writes, each when the rate allows (connect retried as socat's).
        Some(rate) => format!(
            "python3 -c \"\nimport socket, time\n\
             for _ in range(20):\n\
             \x20   try: s = socket.create_connection(('{}', 9000)); break\n\
             \x20   except OSError: time.sleep(0.2)\n\
             f, t0, sent = open('{}', 'rb'), time.time(), 0\n\
             while chunk := f.read(65536):\n\
             \x20   s.sendall(chunk); sent += len(chunk)\n\
             \x20   time.sleep(max(0, t0 + sent / {rate} - time.time()))\n\
             s.close()\n\"",
            b.address,
            src.display()
        ),
    };
    w.spawn(&a.host, "sender", &[], &["bash", "-c", &sender]);
    let received = || std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0);
    during(&received);
    let done = wait_until(timeout, || received() == bytes);
    let got = received();
    assert!(done, "transfer incomplete: {got} of {bytes} bytes");
    let sum = |p: &std::path::Path| w.exec_ok(&a.host, &format!("sha256sum < {}", p.display()));
    assert_eq!(sum(&src), sum(&dst), "content differs after the transfer");
}

/// Waits (at most 5 s) until the relay lists `token` as expired (its TTL counts whole seconds,
/// the relay's clock decides).
pub fn wait_expired(w: &World, relay: &Relay, token: &str) {
    let id = overlay_core::identity::token::Token::parse(token)
        .expect("a token")
        .id;
    let expired = wait_until(Duration::from_secs(5), || {
        relay
            .admin(w, "token list")
            .lines()
            .any(|l| l.starts_with(id.as_str()) && l.contains("expired"))
    });
    assert!(
        expired,
        "token {id} did not expire: {}",
        relay.admin(w, "token list")
    );
}

/// Waits (at most 10 s) until the node daemon `pid` in `host` is gone and so is its TUN device:
/// the kernel tears the device (and its routes into 100.64.0.0/10) down after the process, and
/// `overlay up` refuses to start while another interface routes the overlay network.
pub fn wait_daemon_gone(w: &World, host: &Host, pid: u32) {
    let gone = wait_until(Duration::from_secs(10), || {
        crate::world::gone(pid)
            && w.exec(host, "ip route show 100.64.0.0/10")
                .stdout
                .is_empty()
    });
    assert!(
        gone,
        "the daemon {pid} or its interface is still there: {}",
        String::from_utf8_lossy(&w.exec(host, "ip route; ip link").stdout)
    );
}

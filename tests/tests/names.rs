//! Names end to end: registry, DNS with real clients (dig, getent), the OS resolver, the catalog.

use overlay_core::api::daemon::Registered;
use overlay_core::names::resolver::Where;
use overlay_tests::overlay::{join_node, overlay, start_relay, wait_daemon_gone, Node, Relay};
use overlay_tests::world::{bin, wait_until, World};
use std::time::Duration;

const ORIGINAL_RESOLV: &str = "# test namespace: no resolver\n";

fn dig(w: &World, n: &Node, args: &str) -> String {
    w.exec_ok(
        &n.host,
        &format!("dig +time=2 +tries=1 @100.100.100.100 {args}"),
    )
}

/// Waits up to 5 s until `dig +short NAME` on `n` prints `want`.
fn dig_answers(w: &World, n: &Node, name: &str, want: &str) -> bool {
    wait_until(Duration::from_secs(5), || {
        dig(w, n, &format!("+short {name}")).trim() == want
    })
}

fn world_with_catalog(tag: &str) -> (World, Relay, Node, Node, std::path::PathBuf) {
    let mut w = World::new(tag);
    let catalog = w.hub.dir.join("catalog.toml");
    std::fs::write(
        &catalog,
        "[services.orders]\naddress = \"10.78.0.1:8080\"\n",
    )
    .expect("catalog");
    let relay = start_relay(&w, &["--catalog", catalog.to_str().expect("utf-8")]);
    let token = relay.token(&w, "--uses 2");
    let ha = w.add_host("a", 2);
    let hb = w.add_host("b", 3);
    let a = join_node(&w, &ha, &token, "--name alpha");
    let b = join_node(&w, &hb, &token, "--name beta");
    (w, relay, a, b, catalog)
}

#[test]
fn dns_answers_every_record_type() {
    let (w, _relay, a, b, _) = world_with_catalog("dns");
    let api = a.register(&w, "api --port 8080");
    let addr = api.address.to_string();
    // Propagates to b.
    assert!(
        dig_answers(&w, &b, "api.ovl.internal", &addr),
        "api did not resolve on b"
    );
    assert_eq!(dig(&w, &b, "+short api.alpha.ovl.internal").trim(), addr);
    let srv = dig(&w, &b, "+short SRV _api._tcp.ovl.internal");
    assert!(srv.contains("8080 api.alpha.ovl.internal."), "{srv}");
    let txt = dig(&w, &b, "+short TXT api.alpha.ovl.internal");
    assert!(
        txt.contains("node=alpha") && txt.contains("where=peer"),
        "{txt}"
    );
    // (A deeper name: a single label would be looked up in the remote environment, whose
    // resolver this world leaves out, so that answer is SERVFAIL; see nm_dead_resolvers_...)
    let nx = dig(&w, &b, "nope.alpha.ovl.internal");
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("SOA"), "NXDOMAIN without the zone SOA: {nx}");
    let tcp = dig(&w, &b, "+tcp +short api.ovl.internal");
    assert_eq!(tcp.trim(), addr);
    let soa = dig(&w, &b, "+short SOA ovl.internal");
    assert!(!soa.trim().is_empty());
    // The catalog's remote service.
    assert!(!dig(&w, &b, "+short orders.ovl.internal").trim().is_empty());
    // The node address answers too.
    assert_eq!(
        dig(&w, &b, "+short api.ovl.internal @100.64.4.65").trim(),
        addr
    );
    // `overlay services --json` has the contract's fields.
    let out = overlay(&w, &b.host, "services --json");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let api_entry = list
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == "api"))
        .expect("api listed");
    for field in [
        "name",
        "tag",
        "node",
        "where",
        "address",
        "port",
        "hostname",
        "callback_url",
    ] {
        assert!(
            api_entry.get(field).is_some(),
            "missing {field}: {api_entry}"
        );
    }
    assert_eq!(api_entry["where"], "peer");
    assert_eq!(api_entry["node"], "alpha");
}

#[test]
fn plain_names_work_through_the_system_resolver() {
    let (w, _relay, a, b, _) = world_with_catalog("getent");
    let api = a.register(&w, "api --port 80");
    let addr = api.address.to_string();
    let ok = wait_until(Duration::from_secs(5), || {
        w.exec(&b.host, "getent hosts api")
            .stdout
            .starts_with(addr.as_bytes())
    });
    assert!(ok, "getent hosts api did not give {addr}");
    // Tagged variants side by side.
    let v2 = a.register(&w, "api --port 80 --tag v2");
    let v2addr = v2.address.to_string();
    assert_ne!(v2addr, addr);
    assert!(wait_until(Duration::from_secs(5), || {
        w.exec(&b.host, "getent hosts v2.api")
            .stdout
            .starts_with(v2addr.as_bytes())
    }));
    // `overlay resolve` gives the DNS server's answer for every form, as getent found it.
    for (name, qname, want) in [
        ("api", "api.ovl.internal", addr.as_str()),
        ("v2.api", "v2.api.ovl.internal", v2addr.as_str()),
        ("api.alpha", "api.alpha.ovl.internal", addr.as_str()),
        (
            "v2.api.alpha.ovl.internal",
            "v2.api.alpha.ovl.internal",
            v2addr.as_str(),
        ),
    ] {
        let out = overlay(&w, &b.host, &format!("resolve {name}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.contains(&format!("{qname}: A {want}")),
            "{name}: {text}"
        );
        assert!(!text.contains("outside"), "{name}: {text}");
    }
    // A name unknown in the domain fails like any unknown name.
    assert!(!w
        .exec(&b.host, "getent hosts no-such-service")
        .status
        .success());
}

#[test]
fn local_instance_shadows_remote_on_that_node_only() {
    let (w, _relay, a, b, _) = world_with_catalog("shadow");
    let remote = dig(&w, &b, "+short orders.ovl.internal").trim().to_string();
    assert!(!remote.is_empty());
    let local = a.register(&w, "orders --port 8080");
    let local_addr = local.address.to_string();
    assert!(dig_answers(&w, &a, "orders.ovl.internal", &local_addr));
    // b still prefers the remote one, and can name a's explicitly.
    assert!(dig_answers(
        &w,
        &b,
        "orders.alpha.ovl.internal",
        &local_addr
    ));
    assert_eq!(dig(&w, &b, "+short orders.ovl.internal").trim(), remote);
    let why = overlay(&w, &a.host, "resolve orders");
    assert!(
        String::from_utf8_lossy(&why.stdout).contains("this node"),
        "{}",
        String::from_utf8_lossy(&why.stdout)
    );
    let srv = dig(&w, &a, "+short SRV _orders._tcp.ovl.internal");
    assert_eq!(srv.lines().count(), 2, "{srv}");
    assert!(
        srv.lines().next().unwrap_or_default().starts_with("0 "),
        "local first: {srv}"
    );
}

#[test]
fn resolv_conf_is_restored_byte_for_byte() {
    let (w, _relay, a, _b, _) = world_with_catalog("resolv");
    let file = std::path::Path::new("/etc/netns")
        .join(&a.host.ns)
        .join("resolv.conf");
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    assert!(read().contains("nameserver 100.100.100.100"), "{}", read());
    // overlay down.
    assert!(overlay(&w, &a.host, "down").status.success());
    assert_eq!(read(), ORIGINAL_RESOLV);
    // SIGTERM.
    assert!(overlay(&w, &a.host, "up").status.success());
    assert!(read().contains("100.100.100.100"));
    let pid = a.daemon_pid(&w);
    w.exec_ok(&a.host, &format!("kill -TERM {pid}"));
    assert!(
        wait_until(Duration::from_secs(5), || read() == ORIGINAL_RESOLV),
        "after SIGTERM: {}",
        read()
    );
    wait_daemon_gone(&w, &a.host, pid);
    // SIGKILL, then the next start restores first (and applies again).
    let up = overlay(&w, &a.host, "up");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let pid = a.daemon_pid(&w);
    w.exec_ok(&a.host, &format!("kill -KILL {pid}"));
    wait_daemon_gone(&w, &a.host, pid);
    assert!(read().contains("100.100.100.100"), "SIGKILL cannot restore");
    let up = overlay(&w, &a.host, "up");
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(overlay(&w, &a.host, "down").status.success());
    assert_eq!(read(), ORIGINAL_RESOLV);
}

#[test]
fn malformed_queries_and_broken_catalogs_are_harmless() {
    let (w, _relay, a, b, catalog) = world_with_catalog("baddns");
    for cmd in [
        "head -c 300 /dev/urandom",
        "printf '\\x12\\x34'",
        "printf '\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\xc0\\x0c\\x00\\x01\\x00\\x01'",
        "head -c 4000 /dev/zero",
    ] {
        for _ in 0..5 {
            w.exec_ok(&b.host, &format!("({cmd}) | socat -u - UDP:100.100.100.100:53"));
        }
    }
    assert!(
        !dig(&w, &b, "+short orders.ovl.internal").trim().is_empty(),
        "DNS died"
    );
    // A broken catalog keeps the last good one, and the relay says which line.
    std::fs::write(
        &catalog,
        "[services.orders]\naddress = \"10.78.0.1:8080\"\ncolour = 3\n",
    )
    .expect("write");
    assert!(wait_until(Duration::from_secs(5), || w
        .log(&w.hub, "relay")
        .contains("line 3")));
    assert!(!dig(&w, &a, "+short orders.ovl.internal").trim().is_empty());
    // A good change is picked up.
    std::fs::write(&catalog, "[services.orders]\naddress = \"10.78.0.1:8080\"\n[services.billing]\naddress = \"10.78.0.1:9000\"\n").expect("write");
    assert!(wait_until(Duration::from_secs(5), || !dig(
        &w,
        &a,
        "+short billing.ovl.internal"
    )
    .trim()
    .is_empty()));
}

#[test]
fn repeated_queries_never_get_a_stale_answer() {
    // The node's DNS keeps encoded answers; every registry change must show at once anyway.
    // Only plain queries are cached: no EDNS cookie (dig sends one unless told not to), and
    // both with and without EDNS.
    let (w, _relay, a, b, _) = world_with_catalog("dnscache");
    let edns = std::cell::Cell::new(false);
    let dig = |w: &World, n: &Node, args: &str| {
        edns.set(!edns.get());
        let flag = if edns.get() { "+nocookie" } else { "+noedns" };
        dig(w, n, &format!("{flag} {args}"))
    };
    let status = |n: &Node, name: &str| {
        let out = dig(&w, n, name);
        out.lines()
            .find_map(|l| l.split("status: ").nth(1))
            .and_then(|s| s.split(',').next())
            .unwrap_or_default()
            .to_string()
    };
    let api = a.register(&w, "api --port 8080");
    let addr = api.address.to_string();
    assert!(dig_answers(&w, &b, "api.ovl.internal", &addr));
    // Asked many times (cached), in any case (one cache entry).
    for name in [
        "api.ovl.internal",
        "API.ovl.INTERNAL",
        "api.alpha.ovl.internal",
    ] {
        for _ in 0..5 {
            assert_eq!(
                dig(&w, &b, &format!("+short {name}")).trim(),
                addr,
                "{name}"
            );
            assert_eq!(
                dig(&w, &a, &format!("+short {name}")).trim(),
                addr,
                "{name}"
            );
        }
    }
    // A deeper name that does not exist yet: NXDOMAIN, asked until cached.
    for _ in 0..5 {
        assert_eq!(status(&b, "v2.api.alpha.ovl.internal"), "NXDOMAIN");
    }
    // Unregistered: gone on both nodes.
    let out = overlay(&w, &a.host, "unregister api");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in [&a, &b] {
        assert!(
            wait_until(Duration::from_secs(5), || status(
                n,
                "api.alpha.ovl.internal"
            ) == "NXDOMAIN"
                && dig(&w, n, "+short api.ovl.internal").trim().is_empty()),
            "api still answers on {}",
            n.host.ns
        );
    }
    // Registered under the cached NXDOMAIN name: answers.
    let v2 = a.register(&w, "api --port 8080 --tag v2");
    let v2addr = v2.address.to_string();
    assert!(
        dig_answers(&w, &b, "v2.api.alpha.ovl.internal", &v2addr),
        "the cached NXDOMAIN outlived the registration"
    );
    // A remote name asked on b, then shadowed by a local instance on b.
    let remote = dig(&w, &b, "+short orders.ovl.internal").trim().to_string();
    assert!(!remote.is_empty());
    for _ in 0..5 {
        assert_eq!(dig(&w, &b, "+short orders.ovl.internal").trim(), remote);
    }
    let local = b.register(&w, "orders --port 8080");
    let local_addr = local.address.to_string();
    assert!(
        dig_answers(&w, &b, "orders.ovl.internal", &local_addr),
        "the cached remote answer outlived the local registration"
    );
}

/// Stdout and stderr of `o`, for failure messages.
fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A relay and one joined node per name (hosts `h2`, `h3`, ...), with a token of spare uses.
fn world_of(tag: &str, names: &[&str]) -> (World, Relay, Vec<Node>, String) {
    let mut w = World::new(tag);
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 8");
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let octet = u8::try_from(i + 2).expect("few nodes");
        let h = w.add_host(&format!("h{octet}"), octet);
        nodes.push(join_node(&w, &h, &token, &format!("--name {name}")));
    }
    for n in &nodes {
        let ok = wait_until(Duration::from_secs(10), || {
            w.exec(&n.host, "ping -c1 -W1 100.64.0.1").status.success()
        });
        assert!(
            ok,
            "the tunnel of {} does not carry packets: {:?}\nrelay nodes: {:?}\nrelay stats: {:?}\nnode sockets: {}\nhub sockets: {}\nhub udp: {}",
            n.host.ns,
            n.status(&w),
            relay.nodes(&w),
            relay.stats(&w),
            text(&w.exec(
                &n.host,
                "ss -uan; nstat -az 'Udp*' 'Ip*Discards' 'IpOutRequests' 'IpOutNoRoutes' | grep -v ' 0 '; ip neigh; ip -s link show eth0; nft list ruleset; ip route"
            )),
            text(&w.exec(
                &w.hub,
                "ss -uan; ip neigh; ip -s link; bridge fdb show br br0; nft list ruleset"
            )),
            text(&w.exec(&w.hub, "nstat -az 'Udp*' 'Ip*Discards' 'IpInHdrErrors'"))
        );
    }
    (w, relay, nodes, token)
}

/// The error of a command that must fail: its last stderr line (before it, `join` prints
/// progress lines), the only error sentence.
fn refusal(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "not refused: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let mut lines = err.lines().rev();
    let last = lines.next().unwrap_or_default().to_string();
    assert!(
        !last.is_empty() && lines.all(|l| !l.starts_with("overlay: ") && !l.contains("refused:")),
        "not one error sentence: {err}"
    );
    last
}

#[test]
fn nm_node_and_service_names_cannot_take_each_other() {
    let (mut w, relay, nodes, token) = world_of("nmtake", &["lap1", "lap2", "obs"]);
    let (lap1, lap2, obs) = (&nodes[0], &nodes[1], &nodes[2]);
    // lap2 runs a service, which is how other nodes learn the node lap2's address. (Retried:
    // right after a join the first control request can miss the relay on a loaded machine.)
    assert!(wait_until(Duration::from_secs(10), || overlay(
        &w,
        &lap2.host,
        "register web --port 80"
    )
    .status
    .success()));
    assert!(dig_answers(&w, obs, "lap2.ovl.internal", &lap2.address));
    // On lap1 a service named lap2 is refused, by `overlay register` ...
    let err = refusal(&overlay(&w, &lap1.host, "register lap2 --port 8080"));
    assert!(
        err.contains("the name 'lap2' belongs to node lap2"),
        "{err}"
    );
    assert!(err.contains("give the service another name"), "{err}");
    // ... and by `overlay run`, whose output says why.
    let run = bin("overlay");
    w.spawn(
        &lap1.host,
        "run",
        &[
            (
                "OVERLAY_STATE_DIR",
                &format!("{}/state", lap1.host.dir.display()),
            ),
            (
                "OVERLAY_RUN_DIR",
                &format!("{}/run", lap1.host.dir.display()),
            ),
            ("NO_COLOR", "1"),
        ],
        &[
            run.to_str().expect("utf-8"),
            "run",
            "lap2",
            "--port",
            "8080",
            "--",
            "sleep",
            "600",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || w
            .log(&lap1.host, "run")
            .contains("belongs to node lap2")),
        "overlay run did not say why: {}",
        w.log(&lap1.host, "run")
    );
    // lap2 still means the node lap2 on a third node, and no service of that name exists.
    assert_eq!(
        dig(&w, obs, "+short lap2.ovl.internal").trim(),
        lap2.address
    );
    assert_eq!(
        dig(&w, lap1, "+short lap2.ovl.internal").trim(),
        lap2.address
    );
    let listed = obs.services(&w);
    assert!(listed.iter().all(|s| s.name != "lap2"), "{listed:?}");
    // A node cannot join under a service's name ...
    let hd = w.add_host("d", 9);
    let err = refusal(&overlay(&w, &hd, &format!("join {token} --name web")));
    assert!(
        err.contains("the name 'web' belongs to the service web on node lap2"),
        "{err}"
    );
    assert!(err.contains("--name"), "{err}");
    // ... nor be added under one as a plain WireGuard peer.
    let out = w.exec(
        &w.hub,
        &format!(
            "{} --state {} peer add web --wireguard-config",
            bin("overlay-relay").display(),
            relay.state.display()
        ),
    );
    let err = refusal(&out);
    assert!(
        err.contains("belongs to the service web on node lap2"),
        "{err}"
    );
    // The DNS server's own name is no service's either.
    let err = refusal(&overlay(&w, &lap1.host, "register ns --port 53"));
    assert!(
        err.contains("the name 'ns' belongs to the overlay's DNS server"),
        "{err}"
    );
}

#[test]
fn nm_first_registered_peer_instance_stays_preferred() {
    let (w, mut relay, nodes, _) = world_of("nmorder", &["zeta", "alpha", "obs"]);
    let (zeta, alpha, obs) = (&nodes[0], &nodes[1], &nodes[2]);
    let z = zeta.register(&w, "orders --port 8080").address.to_string();
    assert!(dig_answers(&w, obs, "orders.ovl.internal", &z));
    // alpha sorts first by name, and registers orders second.
    let a = alpha.register(&w, "orders --port 8080").address.to_string();
    assert!(dig_answers(&w, obs, "orders.alpha.ovl.internal", &a));
    let check_zeta_first = |w: &World| {
        assert_eq!(dig(w, obs, "+short orders.ovl.internal").trim(), z);
        let srv = dig(w, obs, "+short SRV _orders._tcp.ovl.internal");
        let mut lines: Vec<&str> = srv.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            vec![
                "0 0 8080 orders.zeta.ovl.internal.",
                "1 0 8080 orders.alpha.ovl.internal."
            ],
            "{srv}"
        );
    };
    check_zeta_first(&w);
    // On alpha its own instance is the local one: preferred there, not a takeover elsewhere.
    assert_eq!(dig(&w, alpha, "+short orders.ovl.internal").trim(), a);
    // The order is kept across a relay restart: obs syncs again (it sees a new service) and
    // still prefers zeta's.
    relay.kill_and_restart(&w, Duration::from_millis(300), &[]);
    let mut late = String::new();
    assert!(wait_until(Duration::from_secs(15), || {
        let out = overlay(&w, &alpha.host, "register late --port 80 --json");
        late = serde_json::from_slice::<Registered>(&out.stdout)
            .map(|r| r.address.to_string())
            .unwrap_or_default();
        out.status.success()
    }));
    assert!(dig_answers(&w, obs, "late.ovl.internal", &late));
    check_zeta_first(&w);
    // Once zeta's instance is gone, alpha's is next.
    let out = overlay(&w, &zeta.host, "unregister orders");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dig_answers(&w, obs, "orders.ovl.internal", &a),
        "alpha's orders did not take over after zeta's left"
    );
}

/// The address nobody answers on in the name worlds (on the bridge, no host has it).
const SILENT: &str = "10.78.0.250";

/// A dig run: status, the server's query time in ms, and the answer lines.
struct Dug {
    status: String,
    ms: u64,
    answers: Vec<String>,
    text: String,
}

fn dig_full(w: &World, n: &Node, args: &str) -> Dug {
    let text = w
        .exec(
            &n.host,
            &format!("dig +time=3 +tries=1 +nocookie @100.100.100.100 {args}"),
        )
        .stdout;
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_string();
    let ms = text
        .lines()
        .find_map(|l| l.strip_prefix(";; Query time: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let mut answers = Vec::new();
    let mut in_answer = false;
    for l in text.lines() {
        if l.starts_with(";; ANSWER SECTION") {
            in_answer = true;
        } else if l.trim().is_empty() {
            in_answer = false;
        } else if in_answer {
            answers.push(l.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    Dug {
        status,
        ms,
        answers,
        text,
    }
}

/// Runs `cmd` in `host` and returns its output and how long it took.
fn timed(
    w: &World,
    host: &overlay_tests::world::Host,
    cmd: &str,
) -> (std::process::Output, Duration) {
    let t = std::time::Instant::now();
    let out = w.exec(host, cmd);
    (out, t.elapsed())
}

/// A world whose upstream resolver (for the node) and remote resolver (for the relay) is a real
/// dnsmasq on [`SILENT`] in the hub, which the test can silence by taking the address away.
fn world_with_resolver(tag: &str) -> (World, Relay, Node) {
    let mut w = World::new(tag);
    let hub = w.hub.ns.clone();
    overlay_tests::world::sh(&format!("ip -n {hub} addr add {SILENT}/24 dev br0"));
    w.spawn(
        &w.hub,
        "dnsmasq",
        &[],
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={SILENT}"),
            "--local-ttl=300",
            "--host-record=www.example.test,10.78.0.77",
            "--host-record=db,10.78.0.60",
            "--host-record=cache,10.78.0.61",
            // Everything else does not exist: the resolver says NXDOMAIN.
            "--local=/#/",
            "--user=root",
            &format!("--pid-file={}/dnsmasq.pid", w.hub.dir.display()),
        ],
    );
    let resolv = format!("nameserver {SILENT}\n");
    std::fs::write(
        std::path::Path::new("/etc/netns")
            .join(&hub)
            .join("resolv.conf"),
        &resolv,
    )
    .expect("hub resolv.conf");
    assert!(
        wait_until(Duration::from_secs(5), || w
            .exec(&w.hub, &format!("dig +short +time=1 +tries=1 @{SILENT} db"))
            .stdout
            .starts_with(b"10.78.0.60")),
        "dnsmasq did not start: {}",
        w.log(&w.hub, "dnsmasq")
    );
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 2");
    let ha = w.add_host("a", 2);
    std::fs::write(
        std::path::Path::new("/etc/netns")
            .join(&ha.ns)
            .join("resolv.conf"),
        &resolv,
    )
    .expect("node resolv.conf");
    let a = join_node(&w, &ha, &token, "--name alpha");
    assert!(wait_until(Duration::from_secs(10), || w
        .exec(&a.host, "ping -c1 -W1 100.64.0.1")
        .status
        .success()));
    (w, relay, a)
}

#[test]
fn nm_dead_resolvers_get_quick_honest_answers() {
    let (w, _relay, a) = world_with_resolver("nmdead");
    // Upstream alive: forwarded.
    let d = dig_full(&w, &a, "www.example.test");
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert!(
        d.answers.iter().any(|l| l.ends_with("A 10.78.0.77")),
        "{}",
        d.text
    );
    // In the remote environment, on demand: the relay's resolver knows db.
    let d = dig_full(&w, &a, "db.ovl.internal");
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    let db_addr = d
        .answers
        .first()
        .and_then(|l| l.split(' ').next_back())
        .unwrap_or_default()
        .to_string();
    assert!(db_addr.starts_with("100.64.0."), "{}", d.text);
    // A name the remote resolver says does not exist: NXDOMAIN with the SOA, asked again: the
    // miss is cached.
    for _ in 0..2 {
        let d = dig_full(&w, &a, "nosuch.ovl.internal");
        assert_eq!(d.status, "NXDOMAIN", "{}", d.text);
        assert!(d.text.contains("SOA"), "{}", d.text);
    }

    // Every resolver goes silent: dnsmasq's address leaves the bridge.
    overlay_tests::world::sh(&format!("ip -n {} addr del {SILENT}/24 dev br0", w.hub.ns));
    // A name asked before: a stale answer (RFC 8767, TTL 30), within the deadline.
    let d = dig_full(&w, &a, "www.example.test");
    assert_eq!(d.status, "NOERROR", "{}", d.text);
    assert!(
        d.answers.iter().any(|l| l.contains(" 30 IN A 10.78.0.77")),
        "no stale answer: {}",
        d.text
    );
    assert!(d.ms < 1500, "stale answer after {} ms", d.ms);
    // A new one: SERVFAIL within 1 s, then at once while the upstream is skipped.
    let d = dig_full(&w, &a, "example.org");
    assert_eq!(d.status, "SERVFAIL", "{}", d.text);
    assert!(d.ms < 1500, "SERVFAIL after {} ms", d.ms);
    let d = dig_full(&w, &a, "example.org");
    assert_eq!(d.status, "SERVFAIL", "{}", d.text);
    assert!(d.ms < 100, "the repeated miss took {} ms", d.ms);
    // Real clients fail, and fail fast (before: getent 8 s, getaddrinfo 4.4 s).
    let (out, took) = timed(&w, &a.host, "getent hosts nosuchhost");
    assert!(!out.status.success());
    assert!(
        took < Duration::from_secs(3),
        "getent hosts nosuchhost took {took:?}"
    );
    let (out, took) = timed(
        &w,
        &a.host,
        "python3 -c \"import socket\ntry:\n socket.getaddrinfo('example.org', 80)\nexcept socket.gaierror as e:\n print(e.errno)\"",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "-3",
        "EAI_AGAIN: try again later"
    );
    assert!(took < Duration::from_secs(3), "getaddrinfo took {took:?}");
    let (out, _) = timed(&w, &a.host, "host -W 3 example.org 100.100.100.100");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SERVFAIL"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // On demand with the remote resolver silent: SERVFAIL within 1.5 s (not NXDOMAIN: the name
    // may exist), then at once for a while.
    let d = dig_full(&w, &a, "fresh.ovl.internal");
    assert_eq!(d.status, "SERVFAIL", "{}", d.text);
    assert!(d.ms < 1500, "on-demand SERVFAIL after {} ms", d.ms);
    let d = dig_full(&w, &a, "fresh.ovl.internal");
    assert_eq!(d.status, "SERVFAIL", "{}", d.text);
    assert!(d.ms < 100, "the repeated on-demand miss took {} ms", d.ms);
    // Names already known keep answering.
    let d = dig_full(&w, &a, "db.ovl.internal");
    assert_eq!(
        d.answers.first().and_then(|l| l.split(' ').next_back()),
        Some(db_addr.as_str()),
        "{}",
        d.text
    );

    // The resolver comes back: fresh answers again once the pause is over.
    overlay_tests::world::sh(&format!("ip -n {} addr add {SILENT}/24 dev br0", w.hub.ns));
    assert!(
        wait_until(Duration::from_secs(40), || {
            dig_full(&w, &a, "www.example.test")
                .answers
                .iter()
                .any(|l| l.contains(" 300 IN A 10.78.0.77"))
        }),
        "the upstream was never asked again"
    );
}

#[test]
fn nm_on_demand_names_have_no_invented_port() {
    let (w, _relay, a) = world_with_resolver("nmport");
    // Before first use, `overlay resolve` already gives the DNS server's answer.
    let out = overlay(&w, &a.host, "resolve db");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("outside"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("db.ovl.internal: A 100.64.0."))
        .unwrap_or_else(|| panic!("no answer line: {text}"))
        .to_string();
    let addr = line.rsplit(' ').next().unwrap_or_default().to_string();
    assert!(text.contains("any port"), "{text}");
    assert!(!text.contains(":80"), "{text}");
    // The same address for a real client, through the system resolver.
    assert!(
        w.exec(&a.host, "getent hosts db")
            .stdout
            .starts_with(addr.as_bytes()),
        "getent disagrees with overlay resolve"
    );
    // No port in the listing, no SRV record with an invented one.
    let list = a.services(&w);
    let db = list
        .iter()
        .find(|s| s.name == "db")
        .unwrap_or_else(|| panic!("db not listed: {list:?}"));
    assert_eq!(db.port, None, "{db:?}");
    assert_eq!(db.where_, Where::Remote);
    let out = overlay(&w, &a.host, "services");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = text
        .lines()
        .find(|l| l.starts_with("db "))
        .unwrap_or_default();
    assert!(
        row.contains(&addr) && !row.contains(&format!("{addr}:")),
        "{text}"
    );
    let srv = dig_full(&w, &a, "SRV _db._tcp.ovl.internal");
    assert!(srv.answers.is_empty(), "{}", srv.text);
    // A name the remote environment does not know: NXDOMAIN, and resolve says so.
    let out = overlay(&w, &a.host, "resolve nosuch");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("nosuch.ovl.internal: NXDOMAIN"), "{text}");
    assert!(
        text.contains("remote environment has no such name"),
        "{text}"
    );
    // Outside the domain: forwarded, with the upstream's answer.
    let out = overlay(&w, &a.host, "resolve www.example.test");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("outside ovl.internal"), "{text}");
    assert!(text.contains("www.example.test: A 10.78.0.77"), "{text}");
    // On the overlay address only overlay names are answered: no open forwarder for other nodes.
    let over = w.exec_ok(
        &a.host,
        &format!("dig +time=2 +tries=1 @{} www.example.test", a.address),
    );
    assert!(over.contains("status: REFUSED"), "{over}");
    let over = w.exec_ok(
        &a.host,
        &format!("dig +short +time=2 +tries=1 @{} db.ovl.internal", a.address),
    );
    assert_eq!(over.trim(), addr);
    // Reverse lookups of overlay addresses are answered here, by real clients, never forwarded
    // (the upstream does not know them; it would say NXDOMAIN).
    let ptr = w.exec_ok(
        &a.host,
        &format!("dig +short +time=2 +tries=1 @100.100.100.100 -x {addr}"),
    );
    assert_eq!(ptr.trim(), "db.ovl.internal.");
    let out = w.exec(&a.host, &format!("host -W 2 {} 100.100.100.100", a.address));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("domain name pointer alpha.ovl.internal."),
        "{text}"
    );
    let out = w.exec(&a.host, &format!("getent hosts {addr}"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("db.ovl.internal"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let nx = dig_full(&w, &a, "-x 100.64.9.9");
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.text);
    assert!(nx.text.contains("SOA"), "{}", nx.text);
    // Asked on the overlay address too (other nodes' reverse lookups).
    let over = w.exec_ok(
        &a.host,
        &format!("dig +short +time=2 +tries=1 @{} -x {addr}", a.address),
    );
    assert_eq!(over.trim(), "db.ovl.internal.");
}

#[test]
fn nm_tcp_dns_cannot_be_held_by_idle_connections() {
    let (mut w, relay, a) = world_with_resolver("nmtcp");
    let token = relay.token(&w, "--uses 1");
    let hb = w.add_host("b", 3);
    let b = join_node(&w, &hb, &token, "--name beta");
    let hold = |w: &World, host: &overlay_tests::world::Host, server: &str, n: usize, log: &str| {
        // n connections, each sending one byte of the two-byte length, then nothing.
        let script = format!(
            "import socket, time\nsocks = []\nfor i in range({n}):\n    try:\n        s = socket.create_connection(('{server}', 53), timeout=2)\n        s.send(b'\\x00')\n        socks.append(s)\n    except OSError:\n        pass\nprint(len(socks), flush=True)\ntime.sleep(60)\n"
        );
        let path = host.dir.join(format!("{log}.py"));
        std::fs::write(&path, script).expect("script");
        w.spawn(host, log, &[], &["python3", path.to_str().expect("utf-8")]);
        assert!(
            wait_until(Duration::from_secs(10), || !w
                .log(host, log)
                .trim()
                .is_empty()),
            "the holder did not start"
        );
    };
    // A local client holds 100 connections to 100.100.100.100: more than the listener's 64.
    hold(&w, &a.host, "100.100.100.100", 100, "hold-local");
    // Other local clients still get TCP answers at once (the oldest idle connection makes way).
    for _ in 0..3 {
        let d = w.exec(
            &a.host,
            "dig +tcp +short +time=2 +tries=1 @100.100.100.100 db.ovl.internal",
        );
        assert!(
            String::from_utf8_lossy(&d.stdout)
                .trim()
                .starts_with("100.64."),
            "local TCP query failed: {}",
            String::from_utf8_lossy(&d.stdout)
        );
    }
    // The overlay address has its own budget: another node is not affected.
    let d = w.exec(
        &b.host,
        &format!(
            "dig +tcp +short +time=2 +tries=1 @{} db.ovl.internal",
            a.address
        ),
    );
    assert!(
        String::from_utf8_lossy(&d.stdout)
            .trim()
            .starts_with("100.64."),
        "overlay TCP query failed: {}",
        String::from_utf8_lossy(&d.stdout)
    );
    // One node holding many on the overlay address gets only its own few; a third party (this
    // node's local clients through the overlay address count as another client) still gets in.
    hold(&w, &b.host, &a.address, 50, "hold-overlay");
    let d = w.exec(
        &a.host,
        &format!(
            "dig +tcp +short +time=2 +tries=1 @{} db.ovl.internal",
            a.address
        ),
    );
    assert!(
        String::from_utf8_lossy(&d.stdout)
            .trim()
            .starts_with("100.64."),
        "TCP on the overlay address failed: {}",
        String::from_utf8_lossy(&d.stdout)
    );
    // Half a length prefix is not held for long: the holder's connections are closed.
    let closed = wait_until(Duration::from_secs(10), || {
        let out = w.exec(
            &b.host,
            &format!("ss -Htn state established dst {}:53 | wc -l", a.address),
        );
        String::from_utf8_lossy(&out.stdout).trim() == "0"
    });
    assert!(closed, "idle TCP connections were kept open");
}

#[test]
fn nm_another_vpn_on_the_overlay_range_is_named() {
    let mut w = World::new("nmvpn");
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 1");
    let ha = w.add_host("a", 2);
    // Another VPN's interface (a veth standing in for tailscale0) routing the overlay's range, in
    // its own table as Tailscale does.
    w.exec_ok(
        &ha,
        "ip link add tsfake type veth peer name tsfake-p && ip link set tsfake-p up && ip link set tsfake up && \
         ip route add 100.64.0.0/10 dev tsfake table 52",
    );
    let err = refusal(&overlay(&w, &ha, &format!("join {token} --name alpha")));
    assert!(
        err.contains("interface tsfake") && err.contains("100.64.0.0/10"),
        "{err}"
    );
    assert!(err.contains("overlay-relay serve --network"), "{err}");
    // Without it, the node comes up (the join was saved; `up` starts it).
    w.exec_ok(&ha, "ip link del tsfake");
    let out = overlay(&w, &ha, "up");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One that appears later is shown by `overlay status`.
    w.exec_ok(
        &ha,
        "ip link add tsfake type veth peer name tsfake-p && ip link set tsfake-p up && ip link set tsfake up && \
         ip route add 100.100.100.100/32 dev tsfake table 52",
    );
    let out = overlay(&w, &ha, "status");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("conflict:  interface tsfake already routes 100.100.100.100/32 (table 52)"),
        "{text}"
    );
    let node = Node {
        host: ha.clone(),
        address: String::new(),
        pid: 0,
    };
    let st = node.status(&w).and_then(|s| s.running).expect("running");
    assert_eq!(st.route_conflicts.len(), 1, "{st:?}");
}

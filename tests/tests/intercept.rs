//! Intercepts end to end: the relay's front for `orders` in the remote environment (the hub
//! namespace), the real `orders` behind it, and laptops that run their own `orders` with
//! `overlay run` and intercept its callers, with real clients in the remote namespace (curl,
//! Python's http.client, a gRPC client and server from python3-grpcio with generic handlers).

use overlay_core::intercept::Intercept;
use overlay_core::names::resolver::Where;
use overlay_core::traffic::capture::record::{Direction, Summary};
use overlay_tests::overlay::{join_node, overlay, start_relay, Node, Relay};
use overlay_tests::world::{bin, wait_until, Host, World};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The remote environment's address (the hub namespace's bridge).
const REMOTE: &str = "10.78.0.1";
/// Where the remote environment's callers of `orders` arrive.
const FRONT: &str = "10.78.0.1:18080";
/// Debian's Python, which has python3-grpcio (a developer's `python3` may be another one).
const PY: &str = "/usr/bin/python3";
/// Where gRPC callers of `greeter` arrive.
const GRPC_FRONT: &str = "10.78.0.1:19090";

const CATALOG: &str = r#"
[services.orders]
address = "10.78.0.1:8080"
front = "10.78.0.1:18080"

[services.billing]
address = "10.78.0.1:8081"
front = "10.78.0.1:18081"

[services.greeter]
address = "10.78.0.1:9090"
front = "10.78.0.1:19090"

[services.banner]
address = "10.78.0.1:7070"
front = "10.78.0.1:17070"
"#;

/// An HTTP/1.1 server (keep-alive) that answers every request with its name.
const WHO: &str = r#"
import http.server, sys
name, bind, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        body = (name + "\n").encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = answer
    do_POST = answer
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((bind, port), H).serve_forever()
"#;

/// A gRPC server (generic handler, no generated code): `demo.Greeter/Hello` answers its name.
const GRPC_SERVER: &str = r#"
import grpc, sys
from concurrent import futures
name, addr = sys.argv[1], sys.argv[2]
def hello(req, ctx):
    return name.encode()
h = grpc.method_handlers_generic_handler(
    "demo.Greeter", {"Hello": grpc.unary_unary_rpc_method_handler(hello)})
s = grpc.server(futures.ThreadPoolExecutor(4))
s.add_generic_rpc_handlers((h,))
s.add_insecure_port(addr)
s.start()
s.wait_for_termination()
"#;

/// A gRPC client: calls `demo.Greeter/Hello` at argv[1] with metadata `k=v` pairs from argv[3:],
/// `:authority` argv[2] (or `-`), prints the answer or `ERROR <code>`.
const GRPC_CLIENT: &str = r#"
import grpc, sys
target, authority = sys.argv[1], sys.argv[2]
opts = [] if authority == "-" else [("grpc.default_authority", authority)]
md = [tuple(a.split("=", 1)) for a in sys.argv[3:]]
with grpc.insecure_channel(target, options=opts) as ch:
    f = ch.unary_unary("/demo.Greeter/Hello")
    try:
        print(f(b"hi", metadata=md, timeout=5).decode())
    except grpc.RpcError as e:
        print("ERROR", e.code().name)
"#;

/// Calls on one gRPC channel (one HTTP/2 connection) with the given `x-dev` values (`-`:
/// none); prints one answer per line.
const GRPC_MIXED: &str = r#"
import grpc, sys
with grpc.insecure_channel(sys.argv[1]) as ch:
    f = ch.unary_unary("/demo.Greeter/Hello")
    for v in sys.argv[2:]:
        md = [] if v == "-" else [("x-dev", v)]
        print(f(b"hi", metadata=md, timeout=5).decode())
"#;

/// Requests on one keep-alive connection with the given `x-dev` values (`-`: none); prints one
/// answer per line.
const KEEPALIVE: &str = r#"
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
for v in sys.argv[3:]:
    h = {} if v == "-" else {"x-dev": v}
    c.request("GET", "/", headers=h)
    r = c.getresponse()
    print(r.read().decode().strip())
"#;

/// One kept-alive connection to the front, opened at the start and used step by step: waits
/// for the file `go-N` in argv[1] (its content: the `x-dev` value, `-` for none), sends a
/// request, writes `ANSWER LOCAL-PORT` to `ans-N`.
const POOLED: &str = r#"
import http.client, os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
c = http.client.HTTPConnection("10.78.0.1", 18080, timeout=10)
c.connect()
for i in range(n):
    go = os.path.join(d, "go-%d" % i)
    while not os.path.exists(go):
        time.sleep(0.02)
    v = open(go).read().strip()
    c.request("GET", "/", headers={} if v == "-" else {"x-dev": v})
    body = c.getresponse().read().decode().strip()
    tmp = os.path.join(d, "ans.tmp")
    with open(tmp, "w") as f:
        f.write("%s %d" % (body, c.sock.getsockname()[1]))
    os.rename(tmp, os.path.join(d, "ans-%d" % i))
"#;

/// A server that speaks first: a banner line on connect, then the client's line back.
const BANNER: &str = r#"
import socketserver, sys
class H(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b"banner\n")
        self.wfile.write(self.rfile.readline())
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

/// Connects, reads the first line without sending anything, sends a line and reads it back;
/// prints both and how long the first took.
const BANNER_CLIENT: &str = r#"
import socket, sys, time
t0 = time.monotonic()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
f = s.makefile("rwb")
first = f.readline().decode().strip()
took = time.monotonic() - t0
f.write(b"ping\n"); f.flush()
print(first, f.readline().decode().strip(), "%.3f" % took)
"#;

fn script(w: &World, name: &str, text: &str) -> PathBuf {
    let p = w.dir.join(name);
    std::fs::write(&p, text).expect("script");
    p
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A relay with the catalog's fronts and the Host router, the remote `orders` and `greeter`,
/// and laptops `alpha` and `beta`.
fn world(tag: &str) -> (World, Relay, Node, Node) {
    // Namespaces `ic-<tag>-...`: this file's own, told apart from other tests' leftovers.
    let mut w = World::with_prefix("ic-", tag);
    let catalog = w.hub.dir.join("catalog.toml");
    std::fs::write(&catalog, CATALOG).expect("catalog");
    let relay = start_relay(
        &w,
        &[
            "--catalog",
            catalog.to_str().expect("utf-8"),
            "--callback-listen",
            "10.78.0.1:8000",
            "--metrics",
            "10.78.0.1:9091",
        ],
    );
    let who = script(&w, "who.py", WHO);
    let grpc = script(&w, "grpc_server.py", GRPC_SERVER);
    script(&w, "grpc_client.py", GRPC_CLIENT);
    script(&w, "grpc_mixed.py", GRPC_MIXED);
    script(&w, "keepalive.py", KEEPALIVE);
    script(&w, "pooled.py", POOLED);
    script(&w, "banner_client.py", BANNER_CLIENT);
    let banner = script(&w, "banner.py", BANNER);
    let banner_s = banner.to_str().expect("utf-8").to_string();
    w.spawn(&w.hub, "banner", &[], &[PY, &banner_s, REMOTE, "7070"]);
    let who_s = who.to_str().expect("utf-8").to_string();
    w.spawn(
        &w.hub,
        "orders",
        &[],
        &[PY, &who_s, "remote", REMOTE, "8080"],
    );
    let grpc_s = grpc.to_str().expect("utf-8").to_string();
    w.spawn(
        &w.hub,
        "greeter",
        &[],
        &[PY, &grpc_s, "remote", "10.78.0.1:9090"],
    );
    w.wait_listening(&w.hub, 8080);
    w.wait_listening(&w.hub, 9090);
    w.wait_listening(&w.hub, 7070);
    let token = relay.token(&w, "--uses 2");
    let ha = w.add_host("a", 2);
    let hb = w.add_host("b", 3);
    let a = join_node(&w, &ha, &token, "--name alpha");
    let b = join_node(&w, &hb, &token, "--name beta");
    // The fronts listen once the relay read its catalog.
    w.wait_listening(&w.hub, 18080);
    (w, relay, a, b)
}

/// `overlay run NAME --port P -- python3 SCRIPT ARGS...` on `n`, waiting until it serves.
fn run(w: &World, n: &Node, name: &str, port: u16, script: &str, args: &str) -> u32 {
    let d = n.host.dir.display().to_string();
    // `overlay run` hands $PORT to its command's shell.
    let args = args.replace("$PORT", "'$PORT'");
    let cmd = format!(
        "exec {} run {name} --port {port} -- {PY} {}/{script} {args}",
        bin("overlay").display(),
        w.dir.display()
    );
    let pid = w.spawn(
        &n.host,
        &format!("run-{name}"),
        &[
            ("OVERLAY_STATE_DIR", &format!("{d}/state")),
            ("OVERLAY_RUN_DIR", &format!("{d}/run")),
            ("NO_COLOR", "1"),
        ],
        &["sh", "-c", &cmd],
    );
    let registered = wait_until(Duration::from_secs(30), || {
        n.services(w)
            .iter()
            .any(|s| s.name == name && s.where_ == Where::Local)
    });
    assert!(
        registered,
        "{name} did not start on {}: {}",
        n.host.ns,
        w.log(&n.host, &format!("run-{name}"))
    );
    pid
}

/// `curl` from the remote environment to the front, with extra curl arguments.
fn curl_front(w: &World, args: &str) -> String {
    curl_path(w, args, "/")
}

fn curl_path(w: &World, args: &str, path: &str) -> String {
    let out = w.exec(
        &w.hub,
        &format!("curl -sS --max-time 5 {args} http://{FRONT}{path}"),
    );
    text(&out).trim().to_string()
}

fn intercept(w: &World, n: &Node, args: &str) -> std::process::Output {
    overlay(w, &n.host, &format!("intercept {args}"))
}

fn intercept_ok(w: &World, n: &Node, args: &str) -> String {
    let out = intercept(w, n, args);
    assert!(
        out.status.success(),
        "overlay intercept {args}: {}",
        text(&out)
    );
    text(&out)
}

#[test]
fn fronts_route_by_header_per_request_and_fall_back_to_the_remote_service() {
    let (w, relay, a, b) = world("front");
    run(&w, &a, "orders", 8080, "who.py", "alpha 127.0.0.1 $PORT");
    run(&w, &b, "orders", 8080, "who.py", "beta 127.0.0.1 $PORT");
    // No intercept: the front forwards to the remote service.
    assert_eq!(curl_front(&w, ""), "remote");

    // Two laptops, two headers.
    let said = intercept_ok(&w, &a, "orders --header x-dev=alice");
    assert!(
        said.contains("requests with x-dev=alice")
            && said.contains("overlay intercept orders --stop"),
        "{said}"
    );
    intercept_ok(&w, &b, "orders --header X-Dev=bob");
    assert_eq!(curl_front(&w, "-H 'x-dev: alice'"), "alpha");
    assert_eq!(curl_front(&w, "-H 'x-dev: bob'"), "beta");
    assert_eq!(curl_front(&w, ""), "remote", "without a header: remote");
    assert_eq!(curl_front(&w, "-H 'x-dev: carol'"), "remote");
    // Per request on one keep-alive connection.
    let keep = w.exec_ok(
        &w.hub,
        &format!(
            "{PY} {}/keepalive.py 10.78.0.1 18080 alice - bob alice -",
            w.dir.display()
        ),
    );
    assert_eq!(
        keep.lines().collect::<Vec<_>>(),
        ["alpha", "remote", "beta", "alpha", "remote"]
    );
    // Per request with bodies (POST, content-length and chunked).
    assert_eq!(
        curl_front(&w, "-H 'x-dev: bob' --data-binary hello"),
        "beta"
    );
    assert_eq!(
        curl_front(
            &w,
            "-H 'x-dev: alice' -H 'Transfer-Encoding: chunked' --data-binary hello"
        ),
        "alpha"
    );
    // Ambiguous framing is refused, not guessed.
    let smuggle = w.exec(
        &w.hub,
        &format!(
            "printf 'POST / HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 4\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n' | timeout 5 socat - TCP:{FRONT}"
        ),
    );
    assert!(
        text(&smuggle).starts_with("HTTP/1.1 400"),
        "{}",
        text(&smuggle)
    );

    // Every laptop's intercepts with their owners.
    let list: Vec<Intercept> = b.json(&w, "intercept --list --json");
    let owners: Vec<(&str, String)> = list
        .iter()
        .map(|i| {
            let h = i.header.as_ref().map(|h| h.to_string()).unwrap_or_default();
            (i.node.as_str(), h)
        })
        .collect();
    assert_eq!(
        owners,
        [
            ("alpha", "x-dev=alice".into()),
            ("beta", "x-dev=bob".into())
        ]
    );
    let table = intercept_ok(&w, &a, "--list");
    assert!(
        table.contains("alpha") && table.contains("x-dev=bob"),
        "{table}"
    );

    // Without a header: every connection, one laptop at a time.
    intercept_ok(&w, &a, "orders");
    assert_eq!(curl_front(&w, ""), "alpha");
    assert_eq!(
        curl_front(&w, "-H 'x-dev: bob'"),
        "beta",
        "headers still win"
    );
    let refused = intercept(&w, &b, "orders");
    assert!(!refused.status.success());
    let msg = text(&refused);
    assert!(
        msg.contains("by node alpha") && msg.lines().count() == 1,
        "{msg}"
    );

    // --stop ends this laptop's only.
    intercept_ok(&w, &b, "orders --stop");
    assert_eq!(curl_front(&w, "-H 'x-dev: bob'"), "alpha");
    intercept_ok(&w, &a, "orders --stop");
    assert_eq!(curl_front(&w, ""), "remote");
    assert_eq!(curl_front(&w, "-H 'x-dev: alice'"), "remote");

    // Bad input: one sentence each.
    for (args, want) in [
        ("nosuch", "no front for a service named 'nosuch'"),
        ("billing", "runs no instance of billing"),
        ("orders --header 'bad name=1'", "not a header name"),
        ("orders --header x-dev", "not a header to match"),
    ] {
        let out = intercept(&w, &a, args);
        let msg = text(&out);
        assert!(!out.status.success() && msg.contains(want), "{args}: {msg}");
        assert_eq!(msg.trim().lines().count(), 1, "{args}: {msg}");
    }

    // The relay counts what its fronts did.
    let m = w.exec_ok(
        &w.hub,
        "curl -sS --max-time 5 http://10.78.0.1:9091/metrics",
    );
    for k in [
        "overlay_relay_front_requests_node_total{front=\"orders\"}",
        "overlay_relay_front_requests_remote_total{front=\"orders\"}",
        "overlay_relay_front_refused_total{front=\"orders\"} 1",
    ] {
        assert!(m.contains(k), "metrics lack {k}:\n{m}");
    }
    drop(relay);
}

#[test]
fn intercepted_requests_show_the_real_caller_in_the_laptops_traffic() {
    let (w, _relay, a, _b) = world("call");
    run(&w, &a, "orders", 8080, "who.py", "alpha 127.0.0.1 $PORT");
    intercept_ok(&w, &a, "orders --header x-dev=alice");
    assert_eq!(
        curl_path(
            &w,
            "-H 'x-dev: alice' -H 'X-Forwarded-For: 203.0.113.7'",
            "/who-calls"
        ),
        "alpha"
    );
    // The exchange is inbound to orders, from the remote caller's own address (the relay saw
    // 10.78.0.1 connect), named as coming through the front for the address its proxy gave.
    let page = || -> Vec<Summary> { a.json(&w, "traffic orders --json") };
    let found = wait_until(Duration::from_secs(10), || {
        page()
            .iter()
            .any(|r| r.path.as_deref() == Some("/who-calls"))
    });
    let records = page();
    assert!(found, "no record of the intercepted request: {records:?}");
    let r = records
        .iter()
        .find(|r| r.path.as_deref() == Some("/who-calls"))
        .expect("the record");
    assert_eq!(r.direction, Direction::In, "{r:?}");
    assert_eq!(r.service, "orders", "{r:?}");
    assert!(
        r.client.starts_with(&format!("{REMOTE}:")),
        "the real caller's address, not the relay's overlay address: {r:?}"
    );
    let name = r.client_name.as_deref().unwrap_or("");
    assert!(
        name.contains("front") && name.contains("203.0.113.7"),
        "{r:?}"
    );
    let caller = r.remote_caller.as_ref().expect("the real caller");
    assert_eq!(caller.address, r.client);
    assert_eq!(caller.forwarded_for.as_deref(), Some("203.0.113.7"));
}

#[test]
fn grpc_through_a_front_by_metadata_and_through_the_host_router_by_authority() {
    let (w, _relay, a, b) = world("grpc");
    for (n, name) in [(&a, "alpha"), (&b, "beta")] {
        let args = format!("{name} 127.0.0.1:$PORT");
        run(&w, n, "greeter", 9090, "grpc_server.py", &args);
    }
    let client = |target: &str, authority: &str, md: &str| {
        w.exec_ok(
            &w.hub,
            &format!(
                "{PY} {}/grpc_client.py {target} {authority} {md}",
                w.dir.display()
            ),
        )
        .trim()
        .to_string()
    };
    assert_eq!(client(GRPC_FRONT, "-", ""), "remote");
    intercept_ok(&w, &a, "greeter --header x-dev=alice");
    assert_eq!(client(GRPC_FRONT, "-", "x-dev=alice"), "alpha");
    assert_eq!(client(GRPC_FRONT, "-", "x-dev=bob"), "remote");
    // Two laptops at once, per stream: calls with either value and none, in one channel.
    intercept_ok(&w, &b, "greeter --header x-dev=bob");
    assert_eq!(client(GRPC_FRONT, "-", "x-dev=bob"), "beta");
    assert_eq!(client(GRPC_FRONT, "-", "x-dev=alice"), "alpha");
    assert_eq!(client(GRPC_FRONT, "-", ""), "remote");
    let mixed = w.exec_ok(
        &w.hub,
        &format!(
            "{PY} {}/grpc_mixed.py {GRPC_FRONT} alice - bob alice -",
            w.dir.display()
        ),
    );
    assert_eq!(
        mixed.lines().collect::<Vec<_>>(),
        ["alpha", "remote", "beta", "alpha", "remote"]
    );
    // The callback Host router by :authority (HTTP/2 prior knowledge), and a stream naming a
    // service nobody runs is refused on its own.
    assert_eq!(
        client("10.78.0.1:8000", "greeter.alpha.ovl.internal", ""),
        "alpha"
    );
    let refused = client("10.78.0.1:8000", "nosuch.alpha.ovl.internal", "");
    assert!(refused.starts_with("ERROR"), "{refused}");
    // HTTP/1 keep-alive requests with different Hosts are routed each on its own: the first
    // names nobody's service (404 from the router), the second reaches greeter, which speaks
    // HTTP/2 only, so curl gets no HTTP/1 answer (000) from it.
    let out = w.exec(
        &w.hub,
        "curl -sS --max-time 5 -o /dev/null -w '%{http_code}\\n' \
         -H 'Host: nosuch.alpha.ovl.internal' http://10.78.0.1:8000/ \
         --next -sS --max-time 5 -o /dev/null -w '%{http_code}\\n' \
         -H 'Host: greeter.alpha.ovl.internal' http://10.78.0.1:8000/",
    );
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        codes.lines().collect::<Vec<_>>(),
        ["404", "000"],
        "{}",
        text(&out)
    );
}

/// Requests in a loop from the remote environment, one connection each, until `stop` is set:
/// answers counted by body, failures kept.
#[derive(Default)]
struct Loop {
    seen: Mutex<BTreeMap<String, usize>>,
    failed: Mutex<Vec<String>>,
    stop: AtomicBool,
    done: AtomicUsize,
}

impl Loop {
    fn run(&self, w: &World, host: &Host) {
        while !self.stop.load(Ordering::Relaxed) {
            let out = w.exec(host, &format!("curl -sS --max-time 5 http://{FRONT}/"));
            let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !body.is_empty() {
                *self.seen.lock().expect("seen").entry(body).or_insert(0) += 1;
            } else {
                self.failed.lock().expect("failed").push(text(&out));
            }
            self.done.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count(&self, body: &str) -> usize {
        self.seen
            .lock()
            .expect("seen")
            .get(body)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `n` more requests answered with `body` (the switch took effect and the
    /// loop ran on a while).
    fn wait_for(&self, body: &str, n: usize) {
        let from = self.count(body);
        let ok = wait_until(Duration::from_secs(20), || self.count(body) >= from + n);
        let seen = self.seen.lock().expect("seen").clone();
        assert!(ok, "no {n} more answers from {body}: {seen:?}");
    }
}

#[test]
fn no_request_fails_while_an_intercept_starts_and_stops_and_a_killed_laptop_gives_it_back() {
    let (w, _relay, a, _b) = world("loop");
    run(&w, &a, "orders", 8080, "who.py", "alpha 127.0.0.1 $PORT");
    let lp = Loop::default();
    std::thread::scope(|s| {
        s.spawn(|| lp.run(&w, &w.hub));
        for _ in 0..3 {
            lp.wait_for("remote", 5);
            intercept_ok(&w, &a, "orders");
            lp.wait_for("alpha", 5);
            intercept_ok(&w, &a, "orders --stop");
        }
        lp.wait_for("remote", 5);
        lp.stop.store(true, Ordering::Relaxed);
    });
    let failed = lp.failed.lock().expect("failed").clone();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        lp.done.load(Ordering::Relaxed)
    );

    // A laptop that dies: its intercept ends and the callers go back to the remote service.
    intercept_ok(&w, &a, "orders");
    assert_eq!(curl_front(&w, ""), "alpha");
    let pid = a.daemon_pid(&w);
    let killed = Instant::now();
    w.exec_ok(&a.host, &format!("kill -9 {pid}"));
    let back = wait_until(Duration::from_secs(15), || {
        curl_front(&w, "--max-time 2") == "remote"
    });
    assert!(
        back,
        "the front still sends to the dead laptop after {:?}",
        killed.elapsed()
    );
    assert!(killed.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_kept_alive_connection_follows_intercepts_that_start_and_end_while_it_lives() {
    let (w, _relay, a, _b) = world("pool");
    run(&w, &a, "orders", 8080, "who.py", "alpha 127.0.0.1 $PORT");
    let dir = w.hub.dir.join("pooled");
    std::fs::create_dir_all(&dir).expect("dir");
    let d = dir.to_str().expect("utf-8").to_string();
    let pooled = w.dir.join("pooled.py");
    let pooled = pooled.to_str().expect("utf-8").to_string();
    w.spawn(&w.hub, "pooled", &[], &[PY, &pooled, &d, "5"]);
    let mut step = 0;
    let mut ask = |value: &str| -> (String, String) {
        let ans = dir.join(format!("ans-{step}"));
        std::fs::write(dir.join(format!("go-{step}")), value).expect("go");
        step += 1;
        let came = wait_until(Duration::from_secs(15), || ans.exists());
        assert!(came, "no answer: {}", w.log(&w.hub, "pooled"));
        let got = std::fs::read_to_string(&ans).expect("answer");
        let (body, port) = got.split_once(' ').expect("BODY PORT");
        (body.to_string(), port.to_string())
    };
    // Opened before any intercept existed.
    let (first, port) = ask("-");
    assert_eq!(first, "remote");
    intercept_ok(&w, &a, "orders --header x-dev=alice");
    assert_eq!(ask("alice"), ("alpha".to_string(), port.clone()));
    assert_eq!(ask("-"), ("remote".to_string(), port.clone()));
    intercept_ok(&w, &a, "orders");
    assert_eq!(ask("-"), ("alpha".to_string(), port.clone()));
    intercept_ok(&w, &a, "orders --stop");
    assert_eq!(
        ask("-"),
        ("remote".to_string(), port),
        "one connection throughout"
    );
}

#[test]
fn a_protocol_whose_server_speaks_first_passes_the_front_without_waiting() {
    let (w, _relay, _a, _b) = world("banner");
    w.wait_listening(&w.hub, 17070);
    let out = w.exec_ok(
        &w.hub,
        &format!("{PY} {}/banner_client.py 10.78.0.1 17070", w.dir.display()),
    );
    let parts: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(parts.get(..2), Some(&["banner", "ping"][..]), "{out}");
    let took: f64 = parts.get(2).and_then(|t| t.parse().ok()).expect("a time");
    // The front did not wait for the client to speak (it would wait 10 s, then close).
    assert!(took < 2.0, "the banner took {took} s: {out}");
}

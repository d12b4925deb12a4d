//! The overlay over TCP (issue 20): a laptop whose UDP to the relay is dropped reaches it
//! through a real nginx acting as the HTTP ingress, another stays on UDP, the first moves back
//! to UDP when it passes again with its connections intact, and a laptop whose only way out is
//! a real HTTP proxy (tinyproxy) joins through `HTTPS_PROXY`.

use overlay_core::api::daemon::LinkState;
use overlay_core::transport::stream::transport::{Mode, Transport};
use overlay_tests::overlay::{join_node, node_env, overlay, start_relay, Node, Relay};
use overlay_tests::world::{bin, wait_until, Host, World};
use std::time::{Duration, Instant};

/// Where the relay serves the stream (inside its namespace, behind nginx).
const RELAY_TCP: &str = "127.0.0.1:8300";
/// nginx, the ingress, on the hub's underlay address.
const INGRESS_PORT: u16 = 8080;
/// The relay's metrics, inside its namespace.
const METRICS: &str = "127.0.0.1:9310";

fn metric(w: &World, line_start: &str) -> Option<u64> {
    let m = w.exec_ok(&w.hub, &format!("curl -sf http://{METRICS}/metrics"));
    m.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

/// Starts nginx in the hub as the ingress in front of the relay's `--tcp-listen`, with the
/// upgrade headers and timeouts an ingress needs for WebSocket (as docs/deploy.md says).
fn start_ingress(w: &World) {
    let dir = w.hub.dir.join("nginx");
    std::fs::create_dir_all(dir.join("tmp")).expect("nginx dir");
    let conf = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nworker_processes 1;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
           fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
           server {{\n    listen {ip}:{INGRESS_PORT};\n\
             location /overlay {{\n      proxy_pass http://{RELAY_TCP};\n      proxy_http_version 1.1;\n\
               proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection \"upgrade\";\n\
               proxy_read_timeout 3600s;\n      proxy_send_timeout 3600s;\n      proxy_buffering off;\n    }}\n\
             location / {{ return 200 \"the ingress's other site\\n\"; }}\n  }}\n}}\n",
        d = dir.display(),
        ip = w.hub.ip
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    let conf_arg = path.to_string_lossy().into_owned();
    w.spawn(
        &w.hub,
        "nginx",
        &[],
        &["nginx", "-c", &conf_arg, "-g", "daemon off;"],
    );
    let url = format!("http://{}:{INGRESS_PORT}/", w.hub.ip);
    assert!(
        wait_until(Duration::from_secs(10), || {
            w.exec(&w.hub, &format!("curl -sf {url}")).status.success()
        }),
        "nginx did not start: {}",
        w.log(&w.hub, "nginx")
    );
}

/// A relay with the stream behind the ingress; tokens carry the ingress URL.
fn relay_behind_ingress(w: &World) -> (Relay, String) {
    let url = format!("http://{}:{INGRESS_PORT}/overlay", w.hub.ip);
    let relay = start_relay(
        w,
        &[
            "--tcp-listen",
            RELAY_TCP,
            "--public-url",
            &url,
            "--metrics",
            METRICS,
        ],
    );
    start_ingress(w);
    (relay, url)
}

/// Drops every UDP datagram from `host` to the relay's port (nftables, in that namespace only).
fn block_udp(w: &World, host: &Host, relay_ip: &str) {
    w.exec_ok(
        host,
        &format!(
            "nft add table inet tpblock && \
             nft add chain inet tpblock out '{{ type filter hook output priority 0; }}' && \
             nft add rule inet tpblock out ip daddr {relay_ip} udp dport 51820 drop"
        ),
    );
}

fn transport(w: &World, n: &Node) -> String {
    n.status(w)
        .and_then(|s| s.transport)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Starts `overlay run NAME --port 80` serving `dir` over HTTP on `n`.
fn serve_files(w: &World, n: &Node, name: &str, dir: &std::path::Path) {
    w.spawn(
        &n.host,
        name,
        &[
            ("OVERLAY_STATE_DIR", &format!("{}/state", n.host.dir.display())),
            ("OVERLAY_RUN_DIR", &format!("{}/run", n.host.dir.display())),
            ("NO_COLOR", "1"),
        ],
        &[
            "sh",
            "-c",
            &format!(
                "cd {} && exec {} run {name} --port 80 -- python3 -m http.server --bind 127.0.0.1 '$PORT'",
                dir.display(),
                bin("overlay").display()
            ),
        ],
    );
}

/// Downloads `url` on `n` (plain names through the system resolver) and checks it against
/// `want` (sha256); retried until the name resolves and the service is up.
fn download_intact(w: &World, n: &Node, url: &str, want: &std::path::Path) {
    let out = n.host.dir.join("downloaded");
    let ok = wait_until(Duration::from_secs(30), || {
        w.exec(
            &n.host,
            &format!("curl -sf --max-time 60 -o {} {url}", out.display()),
        )
        .status
        .success()
    });
    assert!(ok, "curl {url} failed on {}", n.host.ns);
    let sum = |p: &std::path::Path| w.exec_ok(&n.host, &format!("sha256sum < {}", p.display()));
    assert_eq!(
        sum(want),
        sum(&out),
        "the download differs from the file served"
    );
}

#[test]
fn tp_ingress_fallback_other_laptop_on_udp_and_back_to_udp() {
    let mut w = World::new("tpingress");
    let (relay, url) = relay_behind_ingress(&w);
    let token = relay.token(&w, "--uses 2");
    let ha = w.add_host("a", 2);
    let hb = w.add_host("b", 3);
    block_udp(&w, &ha, &w.hub.ip);

    // (a) UDP dropped: join goes over the ingress, and so does the tunnel.
    let a = join_node(&w, &ha, &token, "--name alpha");
    assert_eq!(transport(&w, &a), "tcp", "{:?}", a.status(&w));
    let st = a.status(&w).expect("status");
    assert_eq!(st.relay.url.as_deref(), Some(url.as_str()), "{st:?}");
    let text = overlay(&w, &a.host, "status");
    let shown = String::from_utf8_lossy(&text.stdout);
    assert!(shown.contains("transport: tcp, over"), "{shown}");
    // (b) the other laptop stays on UDP.
    let b = join_node(&w, &hb, &token, "--name beta");
    assert_eq!(transport(&w, &b), "udp");
    // Nginx really carried it: the upgrade is in its access log.
    let access = std::fs::read_to_string(w.hub.dir.join("nginx/access.log")).unwrap_or_default();
    assert!(access.contains("GET /overlay HTTP/1.1\" 101"), "{access}");

    // A 20 MB download by plain name, from beta's service to alpha over the stream.
    let files = hb.dir.join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    w.exec_ok(
        &hb,
        &format!("head -c 20000000 /dev/urandom > {}/big", files.display()),
    );
    serve_files(&w, &b, "files", &files);
    download_intact(&w, &a, "http://files/big", &files.join("big"));
    assert_eq!(transport(&w, &a), "tcp", "still on the stream");

    // The upgrade endpoint answers nothing else.
    let code = |path: &str, extra: &str| {
        w.exec_ok(
            &hb,
            &format!(
                "curl -s -o /dev/null -w '%{{http_code}}' {extra} http://{}:{INGRESS_PORT}{path}",
                w.hub.ip
            ),
        )
    };
    assert_eq!(code("/overlay", ""), "400", "a plain GET is not an upgrade");
    assert_eq!(code("/overlay/other", ""), "404");
    // Metrics count peers and bytes per transport.
    let by = |t: &str| {
        metric(
            &w,
            &format!("overlay_relay_peers_by_transport{{transport=\"{t}\"}}"),
        )
    };
    assert_eq!((by("udp"), by("tcp")), (Some(1), Some(1)));
    assert!(
        metric(&w, "overlay_relay_stream_bytes_total{direction=\"tx\"}").unwrap_or(0) > 20_000_000,
        "the download went over the stream"
    );

    // (c) UDP passes again: alpha moves back within 60 s, and an open TCP connection through
    // the overlay carries on across the move.
    w.spawn(
        &b.host,
        "echo",
        &[],
        &["socat", "TCP-LISTEN:9100,fork,reuseaddr", "EXEC:cat"],
    );
    let echo_log = ha.dir.join("echo-client.log");
    let client = format!(
        "import socket, sys, time\n\
         s = socket.create_connection(('{}', 9100), timeout=20)\n\
         f = s.makefile('rw')\n\
         i = 0\n\
         while True:\n\
         \x20   f.write(f'{{i}}\\n'); f.flush()\n\
         \x20   got = f.readline().strip()\n\
         \x20   if got != str(i): sys.exit(f'echo {{got!r}} for {{i}}')\n\
         \x20   open('{}', 'w').write(str(i))\n\
         \x20   i += 1\n\
         \x20   time.sleep(0.1)\n",
        b.address,
        echo_log.display()
    );
    let client_path = ha.dir.join("echo_client.py");
    std::fs::write(&client_path, client).expect("client script");
    let client_pid = w.spawn(
        &ha,
        "echo-client",
        &[],
        &["python3", client_path.to_str().expect("utf-8")],
    );
    let echoed = || {
        std::fs::read_to_string(&echo_log)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || echoed() > 5),
        "the echo connection does not run over the stream: {}",
        w.log(&ha, "echo-client")
    );
    w.exec_ok(&ha, "nft delete table inet tpblock");
    let unblocked = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || transport(&w, &a) == "udp"),
        "not back on UDP 60 s after it passed again: {:?}\n{}",
        a.status(&w),
        std::fs::read_to_string(ha.dir.join("state/daemon.log")).unwrap_or_default()
    );
    let moved_at = echoed();
    eprintln!(
        "back on udp {} ms after UDP was unblocked",
        unblocked.elapsed().as_millis()
    );
    assert!(
        wait_until(Duration::from_secs(10), || echoed() > moved_at + 20),
        "the open connection stopped after the move: {}",
        w.log(&ha, "echo-client")
    );
    let alive = w
        .exec(&ha, &format!("kill -0 {client_pid}"))
        .status
        .success();
    assert!(alive, "the echo client died: {}", w.log(&ha, "echo-client"));
    assert!(
        wait_until(Duration::from_secs(5), || by("udp") == Some(2)),
        "the relay still sees alpha on the stream"
    );
}

/// Allows `host` out only to `proxy_ip` on `port` (and through the overlay's own device).
fn only_proxy(w: &World, host: &Host, proxy_ip: &str, port: u16) {
    w.exec_ok(
        host,
        &format!(
            "nft add table inet tponly && \
             nft add chain inet tponly out '{{ type filter hook output priority 0; policy accept; }}' && \
             nft add rule inet tponly out oifname eth0 ip daddr {proxy_ip} tcp dport {port} accept && \
             nft add rule inet tponly out oifname eth0 drop"
        ),
    );
}

#[test]
fn tp_a_laptop_behind_an_http_proxy_joins_through_https_proxy() {
    let mut w = World::new("tpproxy");
    let (relay, _url) = relay_behind_ingress(&w);
    let token = relay.token(&w, "--uses 2");
    let hp = w.add_host("proxy", 9);
    let conf = hp.dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port 8888\nListen {}\nTimeout 600\nMaxClients 20\nAllow 10.78.0.0/24\n\
             LogLevel Connect\nPidFile \"{}/tinyproxy.pid\"\n",
            hp.ip,
            hp.dir.display()
        ),
    )
    .expect("tinyproxy.conf");
    let conf_arg = conf.to_string_lossy().into_owned();
    w.spawn(&hp, "tinyproxy", &[], &["tinyproxy", "-d", "-c", &conf_arg]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            w.exec(&hp, "ss -ltn | grep -q ':8888 '").status.success()
        }),
        "tinyproxy did not start: {}",
        w.log(&hp, "tinyproxy")
    );
    let hc = w.add_host("c", 4);
    only_proxy(&w, &hc, &hp.ip, 8888);
    // Nothing but the proxy: the relay itself is out of reach, by UDP and by TCP.
    assert!(!w
        .exec(
            &hc,
            &format!("curl -s --max-time 2 http://{}:{INGRESS_PORT}/", w.hub.ip)
        )
        .status
        .success());
    let proxy = format!("http://{}:8888", hp.ip);
    let out = w.exec(
        &hc,
        &format!(
            "HTTPS_PROXY={proxy} {} {} join {token} --name gamma",
            node_env(&hc),
            bin("overlay").display()
        ),
    );
    assert!(
        out.status.success(),
        "join through the proxy failed: {}{}\nproxy: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        w.log(&hp, "tinyproxy")
    );
    let c = Node {
        host: hc.clone(),
        address: String::new(),
        pid: 0,
    };
    assert_eq!(transport(&w, &c), "tcp", "{:?}", c.status(&w));
    let log = w.log(&hp, "tinyproxy");
    assert!(
        log.contains("CONNECT"),
        "the proxy did not carry the stream: {log}"
    );
    // And the overlay works through it: a service on another laptop, by plain name.
    let hd = w.add_host("d", 5);
    let d = join_node(&w, &hd, &token, "--name delta");
    let files = hd.dir.join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    w.exec_ok(
        &hd,
        &format!("head -c 2000000 /dev/urandom > {}/blob", files.display()),
    );
    serve_files(&w, &d, "blobs", &files);
    download_intact(&w, &c, "http://blobs/blob", &files.join("blob"));
}

#[test]
fn tp_tls_on_the_relay_itself_with_transport_tcp() {
    let mut w = World::new("tptls");
    let dir = w.hub.dir.clone();
    let (cert, key, ca) = (
        dir.join("relay.crt"),
        dir.join("relay.key"),
        dir.join("ca.crt"),
    );
    // A private CA and the relay's certificate from it (webpki refuses a CA as the server's).
    w.exec_ok(
        &w.hub,
        &format!(
            "cd {d} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -days 2 -subj /CN=tp-ca -keyout ca.key -out ca.crt 2>&1 && \
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -subj /CN=relay.tp.test -keyout relay.key -out relay.csr 2>&1 && \
             printf 'subjectAltName=DNS:relay.tp.test\\nbasicConstraints=CA:FALSE\\n' > ext && \
             openssl x509 -req -in relay.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
             -extfile ext -out relay.crt 2>&1",
            d = dir.display()
        ),
    );
    let listen = format!("{}:8443", w.hub.ip);
    let (c, k) = (cert.to_string_lossy(), key.to_string_lossy());
    let relay = start_relay(
        &w,
        &[
            "--tcp-listen",
            &listen,
            "--public-url",
            "https://relay.tp.test:8443/overlay",
            "--tls-cert",
            &c,
            "--tls-key",
            &k,
        ],
    );
    let token = relay.token(&w, "--uses 1");
    let h = w.add_host("a", 2);
    // The relay's name, in this namespace's own hosts file.
    std::fs::write(
        format!("/etc/netns/{}/hosts", h.ns),
        format!("127.0.0.1 localhost\n{} relay.tp.test\n", w.hub.ip),
    )
    .expect("hosts");
    // Without trusting the relay's certificate, the stream is refused.
    let out = w.exec(
        &h,
        &format!(
            "{} {} join {token} --transport tcp --no-start",
            node_env(&h),
            bin("overlay").display()
        ),
    );
    assert!(
        !out.status.success(),
        "joined over TLS with an untrusted certificate"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS") || err.contains("certificate"), "{err}");
    let token = relay.token(&w, "--uses 1");
    let out = w.exec(
        &h,
        &format!(
            "SSL_CERT_FILE={} {} {} join {token} --transport tcp",
            ca.display(),
            node_env(&h),
            bin("overlay").display()
        ),
    );
    assert!(
        out.status.success(),
        "join over TLS failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let n = Node {
        host: h.clone(),
        address: String::new(),
        pid: 0,
    };
    let st = n.status(&w).expect("status");
    assert_eq!(st.transport, Some(Transport::Tcp), "{st:?}");
    assert_eq!(st.transport_mode, Mode::Tcp, "{st:?}");
    assert_eq!(st.state, LinkState::Connected, "{st:?}");
}

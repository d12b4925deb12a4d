//! Part `gateway`: iperf3 laptop (a) -> remote host (b) through the relay's userspace stack
//! (the catalog name `upstream`), against stock wireguard-go a <-> hub with the hub's kernel
//! forwarding to b; the relay's RSS with 1,000 proxied TCP connections held open.

use super::dataplane::runs;
use crate::ctx::{ok, out, wait, Ctx};
use crate::net::{self, iperf_runs, Setup, WgEnd, WG_PORT};
use crate::ovl::Ovl;
use crate::report::{host_desc, now_utc, rss_kb, write_json};
use crate::stats::{fmt, ratio};
use serde::Serialize;

/// Holds every accepted connection open.
const HOLD_SERVER: &str = "import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 7000)); s.listen(4096)
held = []
while True:
    c, _ = s.accept(); held.append(c)
";

/// Opens N connections, a little data on each, prints "open N" and holds them for 30 s.
const HOLD_CLIENT: &str = "import socket, sys, time
ip, n = sys.argv[1], int(sys.argv[2])
socks = []
for i in range(n):
    s = socket.create_connection((ip, 7000), timeout=10); s.sendall(b'x' * 1024); socks.append(s)
print('open', len(socks), flush=True)
time.sleep(30)
";

#[derive(Serialize)]
struct Results {
    part: &'static str,
    time: String,
    host: String,
    throughput_mbps: serde_json::Value,
    ratio: Option<f64>,
    relay_rss_kb_1000_connections: Option<u64>,
    setups: Vec<Setup>,
}

pub fn run(ctx: &Ctx) {
    tracing::info!("part gateway: iperf3 laptop -> remote host through the relay's userspace stack vs wireguard-go + kernel forwarding; relay RSS with 1000 proxied connections");
    let mut w = ctx.world("gateway");
    let mut o = Ovl::new(ctx, &w, "gateway");
    let a = o.host(&mut w, "a", 2);
    let b = o.host(&mut w, "b", 3);
    let hub = w.hub.clone();
    let hole = "10.98.0.3";

    // (1) stock wireguard-go a <-> hub, the hub's kernel forwards to b.
    let mut wg = Setup::begin("gw_wggo", "wireguard-go + kernel forwarding");
    let keys = w.dir.join("wg");
    std::fs::create_dir_all(&keys).expect("key directory");
    let (akey, apub) = net::wg_key(&keys, "a");
    let (hkey, hpub) = net::wg_key(&keys, "h");
    let routed = ok(
        &w,
        &b,
        5,
        &format!(
            "ip addr add {hole}/32 dev lo && ip route add 10.99.0.0/24 via {}",
            hub.ip
        ),
    ) && ok(
        &w,
        &hub,
        5,
        &format!(
            "ip route add {hole}/32 via {} && sysctl -qw net.ipv4.ip_forward=1",
            b.ip
        ),
    );
    let ends = [
        WgEnd {
            host: &a,
            ifname: "ovbwga",
            key: &akey,
            addr: "10.99.0.1/24",
            peer_pub: &hpub,
            peer_endpoint: format!("{}:{WG_PORT}", hub.ip),
            peer_allowed: "10.99.0.2/32,10.98.0.0/24",
        },
        WgEnd {
            host: &hub,
            ifname: "ovbwgh",
            key: &hkey,
            addr: "10.99.0.2/24",
            peer_pub: &apub,
            peer_endpoint: format!("{}:{WG_PORT}", a.ip),
            peer_allowed: "10.99.0.1/32",
        },
    ];
    let mut pids = Vec::new();
    let started: Result<(), String> = if routed {
        ends.iter()
            .try_for_each(|e| net::wg_start(ctx, &w, "wireguard-go", e).map(|p| pids.push(p)))
    } else {
        Err("routes for the forwarding setup".into())
    };
    match started {
        Err(e) => wg.failed(ctx, &format!("wireguard-go did not start: {e}"), None),
        Ok(()) => {
            let _ = ok(&w, &a, 5, "ip route add 10.98.0.0/24 dev ovbwga");
            if wait(
                10,
                "a to reach the remote host through wireguard-go",
                || ok(&w, &a, 5, &format!("ping -n -c 1 -W 1 {hole}")),
            ) {
                iperf_runs(ctx, &w, &mut wg, &a, &b, hole, runs(ctx));
            } else {
                wg.failed(ctx, "no traffic through wireguard-go", None);
            }
        }
    }
    pids.into_iter().for_each(|p| w.stop(p));
    net::wg_sockets_cleanup();

    // (2) the overlay relay's gateway.
    let mut gw = Setup::begin("gw_overlay", "overlay relay gateway (smoltcp)");
    let mut relay_rss = None;
    if !ctx.have_binaries() {
        gw.na("binaries missing");
    } else {
        let catalog = w.dir.join("catalog.toml");
        std::fs::write(
            &catalog,
            format!("[services.upstream]\naddress = \"{}:5201\"\n", b.ip),
        )
        .expect("catalog");
        let cat = catalog.to_string_lossy().into_owned();
        let up = o
            .relay_start(&w, &["--catalog", &cat])
            .and_then(|_| o.token(&w, 1))
            .and_then(|()| o.join(&w, "a"));
        let rlog = ctx.log("gateway-relay.log");
        if let Err(e) = up {
            gw.failed(
                ctx,
                &format!("the relay or the node did not start: {e}"),
                Some(&rlog),
            );
        } else if !wait(10, "a to resolve upstream", || {
            ok(&w, &a, 5, "getent hosts upstream")
        }) {
            gw.failed(
                ctx,
                "the name upstream does not resolve on the node",
                Some(&rlog),
            );
        } else {
            let remote = out(&w, &a, 5, "getent hosts upstream")
                .and_then(|t| t.split_whitespace().next().map(str::to_string))
                .unwrap_or_default();
            iperf_runs(ctx, &w, &mut gw, &a, &b, &remote, runs(ctx));
            // 1000 concurrent proxied TCP connections, each with a little data, held open.
            let (hs_py, hc_py) = (w.dir.join("hold-server.py"), w.dir.join("hold-client.py"));
            std::fs::write(&hs_py, HOLD_SERVER).expect("hold server");
            std::fs::write(&hc_py, HOLD_CLIENT).expect("hold client");
            let hs = w.spawn_to(
                &b,
                &ctx.log("gateway-hold-server.log"),
                &[],
                &["python3", &hs_py.to_string_lossy(), &b.ip],
            );
            let listening = wait(10, "the hold server to listen", || {
                ok(&w, &b, 5, "ss -Hltn 'sport = :7000' | grep -q .")
            });
            let clog = ctx.log("gateway-hold-client.log");
            let hc = w.spawn_to(
                &a,
                &clog,
                &[],
                &[
                    "bash",
                    "-c",
                    &format!(
                        "ulimit -n 4096; exec python3 {} {remote} 1000",
                        hc_py.display()
                    ),
                ],
            );
            if listening
                && wait(60, "1000 connections through the relay", || {
                    std::fs::read_to_string(&clog).is_ok_and(|t| t.contains("open 1000"))
                })
            {
                // Settled: every connection's data has crossed before the reading.
                let relay = o.relay_pid.unwrap_or(0);
                wait(5, "the relay's RSS to settle", || {
                    let r1 = rss_kb(relay);
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    r1 == rss_kb(relay)
                });
                relay_rss = rss_kb(relay);
                tracing::info!(
                    "  relay RSS with 1000 proxied connections: {} kB",
                    fmt(relay_rss.map(|v| v as f64), 0)
                );
            } else {
                ctx.fail("gateway", "the 1000 connections did not open");
                ctx.tail(&clog);
            }
            w.stop(hc);
            w.stop(hs);
        }
        o.down_all(&w);
        if let Some(p) = o.relay_pid {
            w.stop(p);
        }
    }
    let r = ratio(gw.throughput_mbps, wg.throughput_mbps);
    let host = host_desc();
    println!("\ngateway: {host}\niperf3 TCP laptop -> remote host, 1 stream, {} s per run, median of {} run(s)", ctx.o.time, runs(ctx));
    for s in [&wg, &gw] {
        if s.ok() {
            println!("  {:<40} {:>8} Mbit/s", s.title, fmt(s.throughput_mbps, 0));
        } else {
            println!("  {:<40} {}", s.title, s.status);
        }
    }
    println!(
        "  throughput gateway / wireguard-go: {} (target >= 1.0)",
        fmt(r, 3)
    );
    println!(
        "  relay RSS with 1000 proxied TCP connections: {} kB (target < 200 MB)",
        relay_rss.map_or("n/a".into(), |v| v.to_string())
    );
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\n| setup | Mbit/s |\n| --- | ---: |\n| stock wireguard-go + kernel forwarding | {} |\n| relay gateway (smoltcp, unprivileged) | {} |\n\nRatio gateway / wireguard-go: {}; relay RSS with 1,000 proxied connections: {} kB.",
        fmt(wg.throughput_mbps, 0),
        fmt(gw.throughput_mbps, 0),
        fmt(r, 2),
        relay_rss.map_or("n/a".into(), |v| v.to_string())
    );
    write_json(
        &ctx.out,
        "gateway",
        &Results {
            part: "gateway",
            time: now_utc(),
            host,
            throughput_mbps: serde_json::json!({"wireguard_go_kernel_forwarding": wg.throughput_mbps, "overlay_gateway": gw.throughput_mbps}),
            ratio: r,
            relay_rss_kb_1000_connections: relay_rss,
            setups: vec![wg, gw],
        },
    );
}

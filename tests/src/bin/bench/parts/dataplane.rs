//! Part `dataplane`: iperf3 throughput and ping latency a -> b for raw veth, wireguard-go and
//! boringtun-cli point to point, and overlay node -> relay -> node (then its latency again with
//! the nodes' quick CPU wake-ups off); ratios against the baselines of the same run.

use crate::ctx::{ok, wait, Ctx};
use crate::net::{self, measure, ping_only, Setup, WgEnd, WG_PORT};
use crate::ovl::RELAY_PORT;
use crate::report::{host_desc, now_utc, write_json, Table};
use crate::stats::{diff, fmt, fmt_unit, ratio};
use overlay_tests::{Host, World};
use serde::Serialize;
use std::path::PathBuf;

/// The dataplane world: the hub (bridge, relay) and hosts a and b.
pub struct Dp {
    pub w: World,
    pub a: Host,
    pub b: Host,
}

pub fn world(ctx: &Ctx, part: &str) -> Dp {
    let mut w = ctx.world(part);
    let a = w.add_host("a", 2);
    let b = w.add_host("b", 3);
    Dp { w, a, b }
}

pub fn runs(ctx: &Ctx) -> u32 {
    ctx.o.runs.unwrap_or(3)
}

fn veth(ctx: &Ctx, dp: &Dp) -> Setup {
    let mut s = Setup::begin("veth", "raw veth (a -> bridge -> b)");
    let reach = wait(5, "a to reach b", || {
        ok(&dp.w, &dp.a, 5, &format!("ping -n -c 1 -W 1 {}", dp.b.ip))
    });
    if !reach {
        s.failed(ctx, &format!("a cannot reach {}", dp.b.ip), None);
        return s;
    }
    measure(ctx, &dp.w, &mut s, &dp.a, &dp.b, &dp.b.ip, runs(ctx));
    s
}

/// Two `imp` interfaces, a <-> b point to point (10.99.0.1 and .2), measured.
fn wg_pair(ctx: &Ctx, dp: &Dp, id: &str, imp: &str, title: &str) -> Setup {
    let mut s = Setup::begin(id, title);
    let keys = dp.w.dir.join(format!("keys-{id}"));
    std::fs::create_dir_all(&keys).expect("key directory");
    let (akey, apub) = net::wg_key(&keys, "a");
    let (bkey, bpub) = net::wg_key(&keys, "b");
    let ends = [
        WgEnd {
            host: &dp.a,
            ifname: "ovbwga",
            key: &akey,
            addr: "10.99.0.1/24",
            peer_pub: &bpub,
            peer_endpoint: format!("{}:{WG_PORT}", dp.b.ip),
            peer_allowed: "10.99.0.2/32",
        },
        WgEnd {
            host: &dp.b,
            ifname: "ovbwgb",
            key: &bkey,
            addr: "10.99.0.2/24",
            peer_pub: &apub,
            peer_endpoint: format!("{}:{WG_PORT}", dp.a.ip),
            peer_allowed: "10.99.0.1/32",
        },
    ];
    let mut pids = Vec::new();
    let mut err = None;
    for e in &ends {
        match net::wg_start(ctx, &dp.w, imp, e) {
            Ok(p) => pids.push(p),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    if let Some(e) = err {
        s.failed(ctx, &format!("{imp} did not start: {e}"), None);
    } else if !wait(10, "a WireGuard handshake between a and b", || {
        ok(&dp.w, &dp.a, 5, "ping -n -c 1 -W 1 10.99.0.2")
    }) {
        s.failed(ctx, &format!("no traffic through {imp}"), None);
    } else {
        measure(ctx, &dp.w, &mut s, &dp.a, &dp.b, "10.99.0.2", runs(ctx));
    }
    for p in pids {
        dp.w.stop(p);
    }
    // The interfaces go with their daemons; wait so the next pair can take the same names.
    wait(5, "ovbwga to disappear", || {
        !ok(&dp.w, &dp.a, 5, "ip link show ovbwga >/dev/null 2>&1")
    });
    net::wg_sockets_cleanup();
    s
}

const BORINGTUN_VERSION: &str = "0.7.1";

/// The boringtun-cli to measure: `$BORINGTUN_BIN`, one on the PATH, or one installed by cargo
/// into target/bench-tools (unless --no-build).
fn boringtun_bin(ctx: &Ctx) -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("BORINGTUN_BIN") {
        return Some(PathBuf::from(b));
    }
    let o = overlay_tests::world::sh_output("command -v boringtun-cli");
    if o.status.success() {
        return Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    }
    let tools = ctx.root.join("target").join("bench-tools");
    let b = tools.join("bin").join("boringtun-cli");
    if b.exists() {
        return Some(b);
    }
    if ctx.o.no_build {
        return None;
    }
    let log = ctx.log("boringtun-install.log");
    tracing::info!(
        "installing boringtun-cli {BORINGTUN_VERSION} into {} (cargo install; log: {})",
        ctx.rel(&tools),
        ctx.rel(&log)
    );
    let cargo = format!(
        "cargo install --locked --root {} --version {BORINGTUN_VERSION} boringtun-cli",
        tools.display()
    );
    // As the user who ran sudo, when there is one (their toolchain, and target/ stays theirs).
    let cmd = match std::env::var("SUDO_USER") {
        Ok(u) if u != "root" => format!(
            "runuser -u {u} -- bash -lc {}",
            overlay_tests::world::shell_quote(&cargo)
        ),
        _ => cargo,
    };
    let _ =
        overlay_tests::world::sh_output(&format!("timeout 1800 {cmd} > {} 2>&1", log.display()));
    b.exists().then_some(b)
}

/// Relay and two nodes configured by `peer add --wireguard-config`, a -> b measured (pings
/// only with `pings_only`). `pre_nodes` runs after the relay is up, before the nodes start.
#[allow(clippy::too_many_arguments)]
pub fn overlay_setup(
    ctx: &Ctx,
    dp: &Dp,
    id: &str,
    title: &str,
    node_flags: &[&str],
    pings_only: bool,
    relay_flags: &[&str],
    rust_log: Option<&str>,
    pre_nodes: impl FnOnce(),
) -> Setup {
    let mut s = Setup::begin(id, title);
    if !ctx.have_binaries() {
        s.na("binaries missing");
        return s;
    }
    let w = &dp.w;
    let rust_log = rust_log.unwrap_or(&ctx.rust_log);
    let d = w.dir.join(id);
    let relay_state = d.join("relay");
    let rlog = ctx.log(&format!("relay-{id}.log"));
    let listen = format!("{}:{RELAY_PORT}", w.hub.ip);
    let relay = ctx.relay.to_string_lossy().into_owned();
    let state = relay_state.to_string_lossy().into_owned();
    let mut cmd = vec![
        relay.as_str(),
        "--state",
        &state,
        "serve",
        "--listen",
        &listen,
        "--public-endpoint",
        &listen,
    ];
    cmd.extend_from_slice(relay_flags);
    let mut pids = vec![w.spawn_to(&w.hub, &rlog, &[("RUST_LOG", rust_log)], &cmd)];
    let sock = relay_state.join("admin.sock");
    if !wait(10, "the relay's admin socket", || {
        sock.exists() || !w.alive(pids[0])
    }) || !w.alive(pids[0])
    {
        s.failed(ctx, "the relay did not start", Some(&rlog));
        pids.into_iter().for_each(|p| w.stop(p));
        return s;
    }
    let mut addrs = Vec::new();
    for (n, host) in [("a", &dp.a), ("b", &dp.b)] {
        let o = crate::ctx::run(
            w,
            &w.hub,
            15,
            &format!(
                "{relay} --state {state} peer add bench-{n} --wireguard-config 2>>{}",
                ctx.log(&format!("peer-add-{id}-{n}.log")).display()
            ),
        );
        let conf = String::from_utf8_lossy(&o.stdout).into_owned();
        let addr = conf
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim().eq_ignore_ascii_case("address")).then(|| v.trim().to_string())
            })
            .and_then(|v| v.split([',', '/']).next().map(|a| a.trim().to_string()));
        let Some(addr) = addr.filter(|_| o.status.success()) else {
            s.failed(
                ctx,
                &format!("'overlay-relay peer add bench-{n}' failed"),
                None,
            );
            pids.into_iter().for_each(|p| w.stop(p));
            return s;
        };
        let path = host.dir.join(format!("{id}.conf"));
        std::fs::write(&path, &conf).expect("write the node config");
        let redacted: String = conf
            .lines()
            .map(|l| {
                if l.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("privatekey")
                {
                    "PrivateKey = (redacted)\n".to_string()
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let _ = std::fs::write(ctx.log(&format!("node-{id}-{n}.conf.txt")), redacted);
        addrs.push((host, path, addr));
    }
    pre_nodes();
    for (host, conf, _) in &addrs {
        let n = if host.ns == dp.a.ns { "a" } else { "b" };
        let dir = host.dir.join(id);
        let (st, run) = (dir.join("state"), dir.join("run"));
        for d in [&st, &run] {
            std::fs::create_dir_all(d).expect("node directories");
        }
        let overlay = ctx.overlay.to_string_lossy().into_owned();
        let conf = conf.to_string_lossy().into_owned();
        let mut cmd = vec![
            "sh",
            "-c",
            crate::ctx::SHIELD,
            "sh",
            overlay.as_str(),
            "daemon",
            "--config",
            &conf,
            "--interface",
            "ovl0",
        ];
        cmd.extend_from_slice(node_flags);
        let (st, run) = (st.to_string_lossy(), run.to_string_lossy());
        pids.push(w.spawn_to(
            host,
            &ctx.log(&format!("node-{id}-{n}.log")),
            &[
                ("RUST_LOG", rust_log),
                ("OVERLAY_STATE_DIR", &st),
                ("OVERLAY_RUN_DIR", &run),
            ],
            &cmd,
        ));
    }
    let b_ip = addrs[1].2.clone();
    tracing::info!(
        "  nodes: a {}, b {b_ip}; waiting for a to reach {b_ip} through the relay",
        addrs[0].2
    );
    if !wait(15, "a to reach b over the overlay", || {
        ok(w, &dp.a, 5, &format!("ping -n -c 1 -W 1 {b_ip}"))
    }) {
        let dead = if pids.iter().any(|p| !w.alive(*p)) {
            " (a process exited)"
        } else {
            ""
        };
        s.failed(
            ctx,
            &format!("no traffic between the nodes{dead}"),
            Some(&ctx.log(&format!("node-{id}-a.log"))),
        );
        ctx.tail(&ctx.log(&format!("node-{id}-b.log")));
        ctx.tail(&rlog);
    } else {
        // Until the node knows how near the relay is (what its default --cpu-latency auto
        // decides by; measured within a second of the tunnel coming up), at most 5 s.
        let run_dir = dp.a.dir.join(id).join("run");
        wait(5, "the node to measure its round trip to the relay", || {
            crate::ctx::out(
                w,
                &dp.a,
                5,
                &format!(
                    "OVERLAY_RUN_DIR={} {} status --json",
                    run_dir.display(),
                    ctx.overlay.display()
                ),
            )
            .is_some_and(|s| {
                s.contains("\"relay_rtt_us\": ") && !s.contains("\"relay_rtt_us\": null")
            })
        });
        if pings_only {
            ping_only(ctx, w, &mut s, &dp.a, &b_ip);
        } else {
            measure(ctx, w, &mut s, &dp.a, &dp.b, &b_ip, runs(ctx));
        }
    }
    for p in pids.into_iter().rev() {
        w.stop(p);
    }
    s
}

#[derive(Serialize)]
struct Params {
    iperf3_seconds: u32,
    runs: u32,
    pings: u32,
    ping_interval_ms: u32,
}

#[derive(Serialize)]
struct Ratios {
    throughput_overlay_over_wireguard_go: Option<f64>,
    throughput_overlay_over_boringtun: Option<f64>,
    throughput_wireguard_go_over_veth: Option<f64>,
    latency_added_overlay_over_veth_us: Option<f64>,
    latency_added_overlay_cpu_latency_off_over_veth_us: Option<f64>,
    latency_added_wireguard_go_over_veth_us: Option<f64>,
    latency_added_boringtun_over_veth_us: Option<f64>,
}

#[derive(Serialize)]
struct Results {
    part: &'static str,
    time: String,
    host: String,
    params: Params,
    setups: Vec<Setup>,
    ratios: Ratios,
}

/// The setups' table, plain and markdown.
pub fn setups_table(setups: &[Setup]) -> Table {
    let mut t = Table::new(&[
        "setup",
        "throughput (Mbit/s)",
        "ping median (µs)",
        "ping p99 (µs)",
    ]);
    for s in setups {
        if s.ok() {
            t.row(vec![
                s.title.clone(),
                fmt(s.throughput_mbps, 0),
                fmt(s.ping_median_us, 0),
                fmt(s.ping_p99_us, 0),
            ]);
        } else {
            t.row(vec![
                s.title.clone(),
                s.status.clone(),
                String::new(),
                String::new(),
            ]);
        }
    }
    t
}

pub fn run(ctx: &Ctx) {
    let runs = runs(ctx);
    tracing::info!(
        "part dataplane: {} s x {runs} iperf3 runs and {} pings per setup",
        ctx.o.time,
        ctx.o.pings
    );
    let dp = world(ctx, "dataplane");
    let mut setups = vec![veth(ctx, &dp)];
    setups.push(wg_pair(
        ctx,
        &dp,
        "wggo",
        "wireguard-go",
        "wireguard-go point to point",
    ));
    match boringtun_bin(ctx) {
        Some(b) => setups.push(wg_pair(
            ctx,
            &dp,
            "btun",
            &b.to_string_lossy(),
            "boringtun-cli point to point",
        )),
        None => {
            let mut s = Setup::begin("btun", "boringtun-cli point to point");
            s.na("boringtun-cli not installed: cargo install boringtun-cli, or BORINGTUN_BIN=path");
            setups.push(s);
        }
    }
    setups.push(overlay_setup(
        ctx,
        &dp,
        "overlay",
        "overlay node -> relay -> node",
        &[],
        false,
        &[],
        None,
        || {},
    ));
    // What the default's quick CPU wake-ups buy (node/src/cpu_latency.rs): latency only.
    setups.push(overlay_setup(
        ctx,
        &dp,
        "overlay_nowake",
        "overlay, --cpu-latency off (ping only)",
        &["--cpu-latency", "off"],
        true,
        &[],
        None,
        || {},
    ));
    let get = |id: &str| setups.iter().find(|s| s.id == id);
    let tput = |id: &str| get(id).and_then(|s| s.throughput_mbps);
    let p50 = |id: &str| get(id).and_then(|s| s.ping_median_us);
    let r = Ratios {
        throughput_overlay_over_wireguard_go: ratio(tput("overlay"), tput("wggo")),
        throughput_overlay_over_boringtun: ratio(tput("overlay"), tput("btun")),
        throughput_wireguard_go_over_veth: ratio(tput("wggo"), tput("veth")),
        latency_added_overlay_over_veth_us: diff(p50("overlay"), p50("veth")),
        latency_added_overlay_cpu_latency_off_over_veth_us: diff(
            p50("overlay_nowake"),
            p50("veth"),
        ),
        latency_added_wireguard_go_over_veth_us: diff(p50("wggo"), p50("veth")),
        latency_added_boringtun_over_veth_us: diff(p50("btun"), p50("veth")),
    };
    let (when, host) = (now_utc(), host_desc());
    let table = setups_table(&setups);
    let mut ratios = Table::new(&["ratio (same run)", "value"]);
    for (k, v) in [
        (
            "throughput overlay / wireguard-go",
            fmt(r.throughput_overlay_over_wireguard_go, 3),
        ),
        (
            "throughput overlay / boringtun-cli",
            fmt(r.throughput_overlay_over_boringtun, 3),
        ),
        (
            "throughput wireguard-go / raw veth",
            fmt(r.throughput_wireguard_go_over_veth, 3),
        ),
        (
            "latency added by overlay over raw veth (median)",
            fmt_unit(r.latency_added_overlay_over_veth_us, 0, "µs"),
        ),
        (
            "latency added by overlay with --cpu-latency off (median)",
            fmt_unit(
                r.latency_added_overlay_cpu_latency_off_over_veth_us,
                0,
                "µs",
            ),
        ),
        (
            "latency added by wireguard-go over raw veth (median)",
            fmt_unit(r.latency_added_wireguard_go_over_veth_us, 0, "µs"),
        ),
        (
            "latency added by boringtun-cli over raw veth (median)",
            fmt_unit(r.latency_added_boringtun_over_veth_us, 0, "µs"),
        ),
    ] {
        ratios.row(vec![k.to_string(), v]);
    }
    let what = format!(
        "iperf3 TCP, one stream, {} s per run (after 1 s warm-up), median of {runs} run(s); {} pings 5 ms apart.",
        ctx.o.time, ctx.o.pings
    );
    println!("\ndataplane: {host}\n{what}\n");
    print!("{}\n{}", table.plain(), ratios.plain());
    println!("\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}.\n{what}\n");
    print!("{}\n{}", table.markdown(), ratios.markdown());
    write_json(
        &ctx.out,
        "dataplane",
        &Results {
            part: "dataplane",
            time: when,
            host,
            params: Params {
                iperf3_seconds: ctx.o.time,
                runs,
                pings: ctx.o.pings,
                ping_interval_ms: 5,
            },
            setups,
            ratios: r,
        },
    );
}

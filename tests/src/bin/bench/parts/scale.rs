//! Part `scale`: overlay-loadgen registers `--peers` simulated WireGuard peers with one relay,
//! handshakes them and holds `--steady` seconds of keepalives: time until all have a session,
//! the relay's RSS and its CPU at steady state.

use crate::ctx::{run as run_in, wait, Ctx};
use crate::ovl::{Ovl, RELAY_PORT};
use crate::report::{host_desc, now_utc, rss_kb, write_json, Table};
use crate::stats::fmt;
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize)]
struct Results {
    part: &'static str,
    time: String,
    host: String,
    status: String,
    params: serde_json::Value,
    loadgen: Option<serde_json::Value>,
    relay_idle_rss_kb: Option<u64>,
    loadgen_wall_secs: Option<f64>,
    register_secs_about: Option<f64>,
    targets: serde_json::Value,
}

pub fn run(ctx: &Ctx) {
    let (peers, steady) = (ctx.o.peers, ctx.o.steady);
    tracing::info!("part scale: {peers} simulated peers (overlay-loadgen) against one relay, {steady} s of steady state");
    let mut w = ctx.world("scale");
    let mut o = Ovl::new(ctx, &w, "scale");
    let a = o.host(&mut w, "a", 2);
    let mut status = "ok".to_string();
    let (mut json, mut idle, mut wall) = (None, None, None);
    if !ctx.have_binaries() || !ctx.loadgen.exists() {
        status = "n/a (binaries missing)".into();
    } else {
        match o.relay_start(&w, &[]) {
            Err(e) => {
                ctx.fail("scale", &e);
                status = "failed".into();
            }
            Ok(pid) => {
                // The relay's RSS once its start-up allocations are done: two equal readings.
                wait(5, "the relay's RSS to settle", || {
                    let r = rss_kb(pid);
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    r.is_some() && r == rss_kb(pid)
                });
                idle = rss_kb(pid);
                tracing::info!("  relay pid {pid}, RSS {} kB idle; registering {peers} peers through its admin socket, then handshakes and {steady} s of steady state", fmt(idle.map(|v| v as f64), 0));
                let err = ctx.log("scale-loadgen.log");
                let t0 = Instant::now();
                let out = run_in(
                    &w,
                    &a,
                    u64::from(peers / 5 + 600 + steady),
                    &format!(
                        "{} --state {} --relay {}:{RELAY_PORT} --relay-pid {pid} --peers {peers} --steady {steady} 2>{}",
                        ctx.loadgen.display(),
                        o.relay_state.display(),
                        w.hub.ip,
                        err.display()
                    ),
                );
                wall = Some((t0.elapsed().as_secs_f64() * 10.0).round() / 10.0);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                crate::ctx::append(&err, &text);
                json = text
                    .lines()
                    .rev()
                    .find(|l| l.starts_with('{'))
                    .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
                if !out.status.success() {
                    ctx.fail("scale", "overlay-loadgen failed");
                    ctx.tail(&err);
                    status = "failed".into();
                } else if json.is_none() {
                    ctx.fail("scale", "overlay-loadgen printed no result");
                    status = "failed".into();
                } else if !w.alive(pid) {
                    ctx.fail("scale", "the relay exited during the run");
                    status = "failed".into();
                }
            }
        }
    }
    let f = |k: &str| json.as_ref().and_then(|j| j[k].as_f64());
    let secs = f("all_handshaken_secs");
    if json.is_some() && secs.is_none() {
        status = "not every peer had a session within 30 s".into();
    }
    // The loadgen registers, then handshakes, then holds the steady state: the rest of its
    // run time is registering (about).
    let reg = wall.map(|w| (w - secs.unwrap_or(30.0) - f64::from(steady)).round());
    let idle_mb = idle.map(|k| k as f64 / 1024.0);
    let (when, host) = (now_utc(), host_desc());
    let mut t = Table::new(&["figure", "value", "target"]);
    t.row(vec![
        "peers with a session".into(),
        format!(
            "{} / {}",
            fmt(f("handshaken"), 0),
            fmt(f("peers").or(Some(f64::from(peers))), 0)
        ),
        "all".into(),
    ]);
    t.row(vec![
        "all peers handshaken, from the first handshake (s)".into(),
        fmt(secs, 2),
        "< 5".into(),
    ]);
    t.row(vec![
        format!("relay RSS with {peers} peers (MB)"),
        fmt(f("relay_rss_mb"), 2),
        "< 100".into(),
    ]);
    t.row(vec![
        format!("relay CPU at steady keepalive over {steady} s (% of one core)"),
        fmt(f("relay_cpu_percent_steady"), 2),
        "< 5".into(),
    ]);
    t.row(vec![
        "relay RSS idle, before the peers (MB)".into(),
        fmt(idle_mb, 1),
        String::new(),
    ]);
    t.row(vec![
        "registering the peers through the admin socket, about (s)".into(),
        fmt(reg, 0),
        String::new(),
    ]);
    println!(
        "\nscale: {host} ({status})\noverlay-loadgen in a: {peers} peers registered through the relay's admin socket, handshakes 1 ms apart, keepalive 25 s, a ping every 5 s per peer\n\n{}",
        t.plain()
    );
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; {peers} simulated peers, {steady} s steady state.\n\n{}",
        t.markdown()
    );
    write_json(
        &ctx.out,
        "scale",
        &Results {
            part: "scale",
            time: when,
            host,
            status,
            params: serde_json::json!({"peers": peers, "steady_secs": steady}),
            loadgen: json,
            relay_idle_rss_kb: idle,
            loadgen_wall_secs: wall,
            register_secs_about: reg,
            targets: serde_json::json!({"all_handshaken_secs": 5, "relay_rss_mb": 100, "relay_cpu_percent_steady": 5}),
        },
    );
}

//! Part `flood` (issue 15): one host sends anonymous join datagrams at 10k, 50k and 100k a
//! second (and 0: idle, the baseline of the same run); meanwhile a node pings the relay's
//! overlay address, then a fresh node joins; the relay's CPU, RSS and log growth.

use crate::ctx::{run as run_in, wait, Ctx};
use crate::ovl::{Ovl, RELAY_OVL, RELAY_PORT};
use crate::report::{cpu_ticks, host_desc, now_utc, rss_kb, write_json, Table};
use crate::stats::fmt;
use serde::Serialize;
use std::time::{Duration, Instant};

const RATES: [u32; 4] = [0, 10_000, 50_000, 100_000];

#[derive(Serialize)]
struct Row {
    rate: u32,
    ping_loss_percent: Option<f64>,
    ping_rtt_avg_ms: Option<f64>,
    join_secs: Option<f64>,
    relay_cpu_percent: Option<f64>,
    relay_rss_mb: Option<f64>,
    relay_log_kb_per_min: Option<f64>,
}

#[derive(Serialize)]
struct Results {
    part: &'static str,
    time: String,
    host: String,
    status: String,
    rows: Vec<Row>,
    targets: serde_json::Value,
}

/// Loss (%) and average RTT (ms) from ping -q's summary.
fn ping_summary(text: &str) -> (Option<f64>, Option<f64>) {
    let loss = text
        .lines()
        .find(|l| l.contains("packet loss"))
        .and_then(|l| l.split(", ").find(|p| p.contains("packet loss")))
        .and_then(|p| p.split('%').next())
        .and_then(|v| v.trim().parse().ok());
    let avg = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok());
    (loss, avg)
}

pub fn run(ctx: &Ctx) {
    tracing::info!("part flood: anonymous join datagrams at {RATES:?} per second from one host");
    let mut status = "ok".to_string();
    let mut rows = Vec::new();
    if !ctx.flood.exists() {
        ctx.fail("flood", "overlay-flood is not built");
        return;
    }
    let mut w = ctx.world("flood");
    let mut o = Ovl::new(ctx, &w, "flood");
    let a = o.host(&mut w, "a", 2);
    let f = o.host(&mut w, "f", 3);
    let up = if ctx.have_binaries() {
        o.relay_start(&w, &[])
            .and_then(|_| o.token(&w, 20))
            .and_then(|()| o.join(&w, "a"))
    } else {
        Err("binaries missing".into())
    };
    match up {
        Err(e) => {
            status = "failed".into();
            ctx.fail(
                "flood",
                &format!("the relay or the first node did not start: {e}"),
            );
        }
        Ok(_) => {
            // Every host first: a new bridge port can change the bridge's MAC address, and the
            // pinging node then loses packets until its ARP entry is renewed.
            for oct in 10..=13u8 {
                o.host(&mut w, &format!("c{oct}"), oct);
            }
            // Measure from a node whose tunnel carries pings already.
            wait(30, "a first ping from the node to the relay", || {
                crate::ctx::ok(&w, &a, 5, &format!("ping -n -q -c 1 -W 1 {RELAY_OVL}"))
            });
            let relay = o.relay_pid.unwrap_or(0);
            let rlog = ctx.log("flood-relay.log");
            let relay_ep = format!("{}:{RELAY_PORT}", w.hub.ip);
            for (k, rate) in RATES.into_iter().enumerate() {
                let fpid = (rate > 0).then(|| {
                    let p = w.spawn_to(
                        &f,
                        &ctx.log(&format!("flood-gen-{rate}.log")),
                        &[],
                        &[
                            &ctx.flood.to_string_lossy(),
                            "anon",
                            "--relay",
                            &relay_ep,
                            "--rate",
                            &rate.to_string(),
                            "--secs",
                            "16",
                        ],
                    );
                    // The flood's first second: it is at full rate before the measurement.
                    std::thread::sleep(Duration::from_secs(1));
                    p
                });
                let c0 = cpu_ticks(relay);
                let l0 = std::fs::metadata(&rlog).map_or(0, |m| m.len());
                let t0 = Instant::now();
                let out = run_in(
                    &w,
                    &a,
                    30,
                    &format!("ping -q -n -c 200 -i 0.05 -W 1 {RELAY_OVL} 2>&1"),
                );
                let (loss, rtt) = ping_summary(&String::from_utf8_lossy(&out.stdout));
                let j0 = Instant::now();
                let join = o
                    .join(&w, &format!("c{}", 10 + k))
                    .ok()
                    .map(|_| (j0.elapsed().as_secs_f64() * 100.0).round() / 100.0);
                let secs = t0.elapsed().as_secs_f64();
                let c1 = cpu_ticks(relay);
                let l1 = std::fs::metadata(&rlog).map_or(0, |m| m.len());
                // Clock ticks are 1/100 s: ticks per second is % of one core.
                let cpu = c0.zip(c1).map(|(a, b)| ((b - a) as f64 / secs).round());
                let row = Row {
                    rate,
                    ping_loss_percent: loss,
                    ping_rtt_avg_ms: rtt,
                    join_secs: join,
                    relay_cpu_percent: cpu,
                    relay_rss_mb: rss_kb(relay).map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
                    relay_log_kb_per_min: Some(
                        ((l1.saturating_sub(l0)) as f64 / 1024.0 / secs * 60.0 * 100.0).round()
                            / 100.0,
                    ),
                };
                tracing::info!(
                    "  {rate}/s: loss {} %, rtt {} ms, join {} s, relay CPU {} %",
                    fmt(loss, 1),
                    fmt(rtt, 3),
                    fmt(join, 2),
                    fmt(cpu, 0)
                );
                rows.push(row);
                if let Some(p) = fpid {
                    wait(30, "the flood to end", || !w.alive(p));
                    w.stop(p);
                }
            }
        }
    }
    o.down_all(&w);
    let (when, host) = (now_utc(), host_desc());
    let mut t = Table::new(&[
        "anonymous joins/s",
        "ping loss (%)",
        "ping RTT avg (ms)",
        "a valid join (s)",
        "relay CPU (% of one core)",
        "relay RSS (MB)",
        "relay log (KB/min)",
    ]);
    for r in &rows {
        t.row(vec![
            if r.rate == 0 {
                "idle".into()
            } else {
                r.rate.to_string()
            },
            fmt(r.ping_loss_percent, 0),
            fmt(r.ping_rtt_avg_ms, 3),
            r.join_secs.map_or("failed".into(), |s| format!("{s:.2}")),
            fmt(r.relay_cpu_percent, 0),
            fmt(r.relay_rss_mb, 1),
            fmt(r.relay_log_kb_per_min, 2),
        ]);
    }
    println!("\nflood: {host} ({status})\n\n{}", t.plain());
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; 200 pings at 50 ms from a node to the relay's overlay address during each flood.\n\n{}",
        t.markdown()
    );
    write_json(
        &ctx.out,
        "flood",
        &Results {
            part: "flood",
            time: when,
            host,
            status,
            rows,
            targets: serde_json::json!({"ping_loss_percent_at_100k": 5, "join_secs": 10, "relay_log_kb_per_min": 10}),
        },
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn ping_summary_parses() {
        let t = "--- 100.64.0.1 ping statistics ---\n200 packets transmitted, 199 received, 0.5% packet loss, time 10000ms\nrtt min/avg/max/mdev = 0.5/1.170/3.0/0.2 ms\n";
        assert_eq!(super::ping_summary(t), (Some(0.5), Some(1.17)));
    }
}

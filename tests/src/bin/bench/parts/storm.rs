//! Part `storm`: ping latency node a -> relay -> node b (10 ms apart) while a third node, c,
//! registers and unregisters a service in cycles, beside the idle latency of the same run. A
//! registry change makes the relay persist it and send the registry to every node; the ratio
//! of the p99s tells how much that holds up forwarding. Target: storm p99 at most 3x idle.
//!
//! Idle and storm are measured interleaved on one stream of pings: five blocks, each an idle
//! window and then a storm window of a fifth of the cycles, the idle window as long as the
//! storm's cycles take. Every reply is counted in the window its ping was sent in (ping `-D`
//! stamps each reply; sent = stamp - round trip), the first [`GUARD`] of an idle window counts
//! for neither (the storm's last replies and notices are still on their way). A host whose
//! latency drifts (other work on it, a nested VM's host) thus weighs on both samples alike; on
//! this project's 2-core host, sequential idle and storm phases gave idle p99s of 0.16 to 4.8 ms
//! from run to run.
//!
//! The storm's cycles are sent to c's daemon on its local API socket by this process, the
//! requests `overlay register` and `overlay unregister` send: a registry change each, and no
//! process start. Two more phases, after the interleaved ones, show what the command-line tool
//! adds on a small host: the same cycles as `overlay` commands, and as many `overlay status`
//! commands, which start the same processes (each `ip netns exec` and `overlay` process takes
//! the two cores of a small host for a moment) without a registry change. CLI storm p99 over
//! that phase's p99 is what the relay's registry work adds beside the process starts.

use crate::ctx::{ms_since, ok, wait, Ctx};
use crate::net::{cross_cpu_echo_us, ping_times_us};
use crate::ovl::Ovl;
use crate::report::{host_desc, now_utc, write_json, Table};
use crate::stats::{fmt, met, ratio, Summary};
use overlay_core::api::daemon::{Register, Unregister};
use overlay_core::api::Request;
use overlay_sys::local_api::Endpoint;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Serialize)]
struct Phase {
    pings_sent: Option<u64>,
    replies: usize,
    rtt_us: Option<Summary>,
}

#[derive(Serialize)]
struct Results {
    part: &'static str,
    time: String,
    host: String,
    status: String,
    params: Params,
    idle: Option<Phase>,
    /// The cycles on c's local API socket (the target's figure).
    storm: Option<Phase>,
    /// The same cycles as `overlay` commands.
    storm_cli: Option<Phase>,
    /// As many `overlay status` commands.
    cli_only: Option<Phase>,
    /// Reference without the overlay: a UDP echo between two threads on CPUs 0 and 1 (µs).
    cross_cpu_echo_us: Option<Summary>,
    cycle_ms: Option<Summary>,
    cli_cycle_ms: Option<Summary>,
    cycles_failed: u32,
    p99_storm_over_idle: Option<f64>,
    median_storm_over_idle: Option<f64>,
    p99_storm_cli_over_idle: Option<f64>,
    p99_storm_cli_over_cli_only: Option<f64>,
    target_p99_ratio: f64,
}

#[derive(Serialize)]
struct Params {
    cycles: u32,
    /// Idle and storm windows alternate this many times.
    blocks: u32,
    ping_interval_ms: u32,
    /// Replies sent this soon after a storm window count for neither phase.
    guard_ms: u64,
    churning_node: &'static str,
}

/// "N packets transmitted" of ping's summary.
fn transmitted(text: &str) -> Option<u64> {
    let l = text.lines().find(|l| l.contains("packets transmitted"))?;
    l.split_whitespace().next()?.parse().ok()
}

/// Seconds between pings: 10 ms, the shortest at which iputils' ping sleeps between sends
/// instead of spinning on a core (see `crate::net::ping_every`).
const PING_EVERY: Duration = Duration::from_millis(10);

/// Shortest time between the starts of two API cycles: long enough that the storm's 150 cycles
/// last 6 s, about 600 pings.
const API_CYCLE: Duration = Duration::from_millis(40);

/// Round trips of the cross-CPU echo reference.
const ECHOES: u32 = 500;

/// Idle and storm windows alternate this many times (the cycles are spread over them).
const BLOCKS: u32 = 5;

/// The start of an idle window that counts for neither phase: the last cycle's replies,
/// notices and pulls are still on their way.
const GUARD: Duration = Duration::from_millis(50);

/// Seconds since the epoch, the clock of ping's `-D` stamps.
fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A ping reply of `ping -D`: sequence number, send time (epoch seconds) and round trip (µs).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reply {
    seq: u64,
    sent: f64,
    rtt_us: f64,
}

/// The replies of a `ping -D -n` transcript; lines without a stamp, a sequence number and a
/// time are skipped.
fn stamped_replies(text: &str) -> Vec<Reply> {
    text.lines()
        .filter_map(|l| {
            let stamp: f64 = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
            let field = |key: &str| l.split_whitespace().find_map(|w| w.strip_prefix(key));
            let seq = field("icmp_seq=")?.parse().ok()?;
            let rtt_us = field("time=")?.parse::<f64>().ok()? * 1000.0;
            Some(Reply {
                seq,
                sent: stamp - rtt_us / 1e6,
                rtt_us,
            })
        })
        .collect()
}

/// Which phase a time window measures.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Idle,
    Storm,
}

/// Splits `replies` by the window their ping was sent in: (idle, storm) round trips in µs, and
/// how many sequence numbers without a reply fell in each (their send time estimated from the
/// nearest reply before them and the ping interval).
fn split(
    replies: &[Reply],
    windows: &[(Kind, f64, f64)],
    interval: f64,
) -> ([Vec<f64>; 2], [u64; 2]) {
    let kind_at = |t: f64| {
        windows.iter().find_map(|&(k, a, b)| {
            let a = if k == Kind::Idle {
                a + GUARD.as_secs_f64()
            } else {
                a
            };
            (t >= a && t < b).then_some(k)
        })
    };
    let slot = |k: Kind| usize::from(k == Kind::Storm);
    let (mut rtts, mut lost) = ([Vec::new(), Vec::new()], [0u64; 2]);
    let mut prev: Option<&Reply> = None;
    for r in replies {
        if let Some(k) = kind_at(r.sent) {
            rtts[slot(k)].push(r.rtt_us);
        }
        if let Some(p) = prev {
            for missing in p.seq.saturating_add(1)..r.seq {
                let t = p.sent + (missing - p.seq) as f64 * interval;
                if let Some(k) = kind_at(t) {
                    lost[slot(k)] += 1;
                }
            }
        }
        prev = Some(r);
    }
    (rtts, lost)
}

/// One request to a node daemon's local API socket, as `overlay` sends it (the one local API
/// transport, `overlay_sys::local_api`).
fn api<R: Request>(
    rt: &tokio::runtime::Runtime,
    sock: &Path,
    request: R,
) -> Result<R::Reply, String> {
    let daemon = Endpoint {
        path: sock,
        server: "node c's daemon",
        serves: "root and the user who joined",
        start: "see the part's log",
    };
    rt.block_on(daemon.call(request)).map_err(|e| e.to_string())
}

fn windowed(rtts: &[f64], lost: u64) -> Phase {
    Phase {
        pings_sent: Some(rtts.len() as u64 + lost),
        replies: rtts.len(),
        rtt_us: Summary::of(rtts),
    }
}

fn phase(text: &str) -> Phase {
    let t = ping_times_us(text);
    Phase {
        pings_sent: transmitted(text),
        replies: t.len(),
        rtt_us: Summary::of(&t),
    }
}

pub fn run(ctx: &Ctx) {
    let cycles = ctx.o.cycles;
    tracing::info!(
        "part storm: ping a -> relay -> b, idle and during {cycles} register/unregister cycles on c, interleaved in {BLOCKS} blocks"
    );
    let mut w = ctx.world("storm");
    let mut o = Ovl::new(ctx, &w, "storm");
    for (n, oct) in [("a", 2), ("b", 3), ("c", 4)] {
        o.host(&mut w, n, oct);
    }
    let mut status = "ok".to_string();
    let (mut idle, mut storm, mut cycle_ms, mut failed) = (None, None, Vec::new(), 0u32);
    let (mut cli_only, mut storm_cli, mut cli_cycle_ms) = (None, None, Vec::new());
    let mut echo = None;
    let ready = if !ctx.have_binaries() {
        status = "n/a (binaries missing)".into();
        None
    } else {
        let r = o
            .relay_start(&w, &[])
            .and_then(|_| o.token(&w, 3))
            .and_then(|()| o.join(&w, "a"))
            .and_then(|_| o.join(&w, "b"))
            .and_then(|b| o.join(&w, "c").map(|_| b));
        match r {
            Ok(b) => Some(b),
            Err(e) => {
                ctx.fail("storm", &e);
                status = format!("failed ({e})");
                None
            }
        }
    };
    if let Some(b) = ready {
        let a = o.h("a").clone();
        if !wait(15, "a to reach b through the relay", || {
            ok(&w, &a, 5, &format!("ping -n -c 1 -W 1 {b}"))
        }) {
            ctx.fail("storm", "a cannot reach b through the relay");
            status = "failed (no traffic between the nodes)".into();
        } else {
            // What the host itself adds to a wake-up on the other CPU: every hop of the path
            // pays it, idle or not.
            echo = cross_cpu_echo_us(ECHOES, PING_EVERY).and_then(|v| Summary::of(&v));
            let every = format!("{:.3}", PING_EVERY.as_secs_f64());
            // The storm proper, interleaved with idle windows on one stream of stamped pings.
            let sock = o.h("c").dir.join("run").join("overlay.sock");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the API calls");
            let mut cycle = |i: u32| {
                let t0 = Instant::now();
                let name = format!("storm{i}");
                let reg = api(
                    &rt,
                    &sock,
                    Register {
                        name: name.clone(),
                        tag: None,
                        port: 80,
                        target: None,
                        hold: false,
                    },
                );
                let unreg = api(&rt, &sock, Unregister { name, tag: None });
                if let Err(e) = reg.as_ref().and(unreg.as_ref()) {
                    tracing::warn!("storm cycle {i}: {e}");
                }
                let good = reg.is_ok() && unreg.is_ok();
                if good {
                    cycle_ms.push(ms_since(t0));
                }
                // Paced, so that the storm lasts long enough for a p99.
                std::thread::sleep(API_CYCLE.saturating_sub(t0.elapsed()));
                good
            };
            let slog = ctx.log("storm-ping-interleaved.log");
            let pid = w.spawn_to(
                &a,
                &slog,
                &[],
                &["ping", "-n", "-D", "-i", &every, "-W", "1", &b],
            );
            let mut windows = Vec::new();
            let mut f = 0;
            let mut done = 0;
            for k in 0..BLOCKS {
                let n = cycles / BLOCKS + u32::from(k < cycles % BLOCKS);
                let t = epoch_now();
                std::thread::sleep(API_CYCLE * n);
                windows.push((Kind::Idle, t, epoch_now()));
                let t = epoch_now();
                for _ in 0..n {
                    done += 1;
                    if !cycle(done) {
                        f += 1;
                    }
                }
                windows.push((Kind::Storm, t, epoch_now() + GUARD.as_secs_f64()));
                tracing::info!("  storm: {done}/{cycles} cycles");
            }
            w.stop_with(pid, "INT", Duration::from_secs(5));
            let text = std::fs::read_to_string(&slog).unwrap_or_default();
            let ([idle_rtts, storm_rtts], [idle_lost, storm_lost]) =
                split(&stamped_replies(&text), &windows, PING_EVERY.as_secs_f64());
            idle = Some(windowed(&idle_rtts, idle_lost));
            storm = Some(windowed(&storm_rtts, storm_lost));
            // The same pings, running until the cycles are done; SIGINT makes ping print
            // (and flush) everything it has. First the reference (status calls), then the
            // storm as commands.
            let pinging = |name: &str, cycle: &mut dyn FnMut(u32) -> bool| -> (Phase, u32) {
                let slog = ctx.log(&format!("storm-ping-{name}.log"));
                let pid = w.spawn_to(&a, &slog, &[], &["ping", "-n", "-i", &every, "-W", "1", &b]);
                let mut failed = 0;
                for i in 1..=cycles {
                    if !cycle(i) {
                        failed += 1;
                    }
                    if i % 50 == 0 {
                        tracing::info!("  {name}: {i}/{cycles} cycles");
                    }
                }
                w.stop_with(pid, "INT", Duration::from_secs(5));
                (
                    phase(&std::fs::read_to_string(&slog).unwrap_or_default()),
                    failed,
                )
            };
            let (reference, _) = pinging("cli-only", &mut |_| {
                let x = o.ovl(&w, "c", "status");
                let y = o.ovl(&w, "c", "status");
                x.status.success() && y.status.success()
            });
            cli_only = Some(reference);
            let (during, f_cli) = pinging("storm-cli", &mut |i| {
                let t0 = Instant::now();
                let reg = o.ovl(&w, "c", &format!("register storm{i} --port 80"));
                let unreg = o.ovl(&w, "c", &format!("unregister storm{i}"));
                let good = reg.status.success() && unreg.status.success();
                if good {
                    cli_cycle_ms.push(ms_since(t0));
                }
                good
            });
            storm_cli = Some(during);
            failed = f + f_cli;
            if failed > 0 {
                ctx.fail(
                    "storm",
                    &format!(
                        "{failed} of {} register/unregister cycles failed",
                        2 * cycles
                    ),
                );
                ctx.tail(&o.cli_log);
            }
        }
    }
    o.down_all(&w);
    let p = |ph: &Option<Phase>, f: fn(&Summary) -> f64| {
        ph.as_ref().and_then(|x| x.rtt_us.as_ref()).map(f)
    };
    let p99_ratio = ratio(p(&storm, |s| s.p99), p(&idle, |s| s.p99));
    let med_ratio = ratio(p(&storm, |s| s.median), p(&idle, |s| s.median));
    let cli_idle_ratio = ratio(p(&storm_cli, |s| s.p99), p(&idle, |s| s.p99));
    let cli_ratio = ratio(p(&storm_cli, |s| s.p99), p(&cli_only, |s| s.p99));
    let (when, host) = (now_utc(), host_desc());
    let mut t = Table::new(&[
        "ping a -> relay -> b",
        "replies / sent",
        "median (µs)",
        "p99 (µs)",
        "max (µs)",
    ]);
    for (name, ph) in [
        (
            format!("idle (the windows between the storm's {BLOCKS} parts)"),
            &idle,
        ),
        (
            format!("during {cycles} register/unregister cycles on c's API socket"),
            &storm,
        ),
        (
            format!("during {cycles} x 2 `overlay status` commands on c (reference)"),
            &cli_only,
        ),
        (
            format!("during {cycles} register/unregister cycles as `overlay` commands on c"),
            &storm_cli,
        ),
    ] {
        match ph {
            Some(x) => t.row(vec![
                name,
                format!(
                    "{} / {}",
                    x.replies,
                    x.pings_sent.map_or("?".into(), |n| n.to_string())
                ),
                fmt(x.rtt_us.map(|s| s.median), 0),
                fmt(x.rtt_us.map(|s| s.p99), 0),
                fmt(x.rtt_us.map(|s| s.max), 0),
            ]),
            None => t.row(vec![
                name,
                status.clone(),
                String::new(),
                String::new(),
                String::new(),
            ]),
        }
    }
    t.row(vec![
        "reference, no overlay: UDP echo between threads on CPUs 0 and 1".to_string(),
        echo.map_or("-".into(), |e| format!("{} / {ECHOES}", e.n)),
        fmt(echo.map(|s| s.median), 0),
        fmt(echo.map(|s| s.p99), 0),
        fmt(echo.map(|s| s.max), 0),
    ]);
    let cyc = Summary::of(&cycle_ms);
    let cli_cyc = Summary::of(&cli_cycle_ms);
    let lines = format!(
        "p99 during the storm / idle p99: {} (target <= 3: {}); medians: {}\n\
         one register + unregister cycle on the API socket: median {} ms, max {} ms\n\
         as `overlay` commands: p99 / idle p99 {}; / p99 during as many status commands {} (what registry changes add beside the process starts); cycle median {} ms, max {} ms\n\
         {failed} cycles failed",
        fmt(p99_ratio, 2),
        met(p99_ratio, |v| v <= 3.0),
        fmt(med_ratio, 2),
        fmt(cyc.map(|s| s.median), 1),
        fmt(cyc.map(|s| s.max), 1),
        fmt(cli_idle_ratio, 2),
        fmt(cli_ratio, 2),
        fmt(cli_cyc.map(|s| s.median), 0),
        fmt(cli_cyc.map(|s| s.max), 0),
    );
    println!("\nstorm: {host} ({status})\n\n{}\n{lines}", t.plain());
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; pings 10 ms apart, {cycles} cycles interleaved with idle windows in {BLOCKS} blocks.\n\n{}\n{lines}",
        t.markdown()
    );
    write_json(
        &ctx.out,
        "storm",
        &Results {
            part: "storm",
            time: when,
            host,
            status,
            params: Params {
                cycles,
                blocks: BLOCKS,
                ping_interval_ms: 10,
                guard_ms: GUARD.as_millis() as u64,
                churning_node: "c",
            },
            idle,
            storm,
            storm_cli,
            cli_only,
            cross_cpu_echo_us: echo,
            cycle_ms: cyc,
            cli_cycle_ms: cli_cyc,
            cycles_failed: failed,
            p99_storm_over_idle: p99_ratio,
            median_storm_over_idle: med_ratio,
            p99_storm_cli_over_idle: cli_idle_ratio,
            p99_storm_cli_over_cli_only: cli_ratio,
            target_p99_ratio: 3.0,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_replies_give_send_times() {
        let text = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
            [1765000000.500000] 64 bytes from 10.0.0.2: icmp_seq=1 ttl=63 time=0.250 ms\n\
            [1765000000.510000] 64 bytes from 10.0.0.2: icmp_seq=2 ttl=63 time=2.00 ms\n\
            --- 10.0.0.2 ping statistics ---\n";
        let r = stamped_replies(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].seq, 1);
        assert!((r[0].rtt_us - 250.0).abs() < 1e-6);
        assert!((r[0].sent - 1_765_000_000.499_75).abs() < 1e-6);
        assert!((r[1].sent - 1_765_000_000.508).abs() < 1e-6);
    }

    #[test]
    fn replies_and_losses_count_in_their_window() {
        let reply = |seq, sent, rtt_us| Reply { seq, sent, rtt_us };
        let windows = [
            (Kind::Idle, 0.0, 1.0),
            (Kind::Storm, 1.0, 2.0),
            (Kind::Idle, 2.0, 3.0),
        ];
        let replies = [
            reply(1, 0.01, 100.0), // inside the idle window's guard: neither
            reply(2, 0.5, 110.0),
            reply(3, 1.5, 900.0),
            // seq 4 and 5 lost, sent about 1.6 and 1.7 (storm)
            reply(6, 1.8, 800.0),
            reply(7, 2.5, 120.0),
            reply(8, 9.0, 5.0), // after every window: neither
        ];
        let ([idle, storm], lost) = split(&replies, &windows, 0.1);
        assert_eq!(idle, vec![110.0, 120.0]);
        assert_eq!(storm, vec![900.0, 800.0]);
        assert_eq!(lost, [0, 2]);
    }
}

//! Part `storm`: ping latency node a -> relay -> node b (10 ms apart) while a third node, c,
//! registers and unregisters a service in cycles, beside the idle latency of the same run. A
//! registry change makes the relay send the registry to every node; the ratio of the p99s tells
//! how much that holds up forwarding. Target: storm p99 at most 3x idle.
//!
//! The storm's cycles are sent to c's daemon on its local API socket by this process, the
//! requests `overlay register` and `overlay unregister` send: a registry change each, and no
//! process start. Two more phases show what the command-line tool adds on a small host: the
//! same cycles as `overlay` commands, and as many `overlay status` commands, which start the same
//! processes (each `ip netns exec` and `overlay` process takes the two cores of a small host for
//! a moment) without a registry change. CLI storm p99 over that phase's p99 is what the relay's
//! registry work adds beside the process starts.

use crate::ctx::{ms_since, ok, wait, Ctx};
use crate::net::{ping_every, ping_times_us};
use crate::ovl::Ovl;
use crate::report::{host_desc, now_utc, write_json, Table};
use crate::stats::{fmt, met, ratio, Summary};
use overlay_core::api::daemon::{Register, Unregister};
use overlay_core::api::Request;
use overlay_sys::local_api::Endpoint;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

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
    idle_pings: u32,
    ping_interval_ms: u32,
    churning_node: &'static str,
}

/// "N packets transmitted" of ping's summary.
fn transmitted(text: &str) -> Option<u64> {
    let l = text.lines().find(|l| l.contains("packets transmitted"))?;
    l.split_whitespace().next()?.parse().ok()
}

/// Seconds between pings: 10 ms, the shortest at which iputils' ping sleeps between sends
/// instead of spinning on a core (see [`ping_every`]).
const PING_EVERY: Duration = Duration::from_millis(10);

/// Shortest time between the starts of two API cycles: long enough that the storm's 150 cycles
/// last 6 s, about 600 pings.
const API_CYCLE: Duration = Duration::from_millis(40);

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
    let idle_pings = ctx.o.pings.max(1000);
    tracing::info!(
        "part storm: ping a -> relay -> b, idle ({idle_pings} pings) and during {cycles} register/unregister cycles on c"
    );
    let mut w = ctx.world("storm");
    let mut o = Ovl::new(ctx, &w, "storm");
    for (n, oct) in [("a", 2), ("b", 3), ("c", 4)] {
        o.host(&mut w, n, oct);
    }
    let mut status = "ok".to_string();
    let (mut idle, mut storm, mut cycle_ms, mut failed) = (None, None, Vec::new(), 0u32);
    let (mut cli_only, mut storm_cli, mut cli_cycle_ms) = (None, None, Vec::new());
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
            let log = ctx.log("storm-ping-idle.log");
            let _ = ping_every(&w, &a, &b, idle_pings, PING_EVERY, &log);
            idle = Some(phase(&std::fs::read_to_string(&log).unwrap_or_default()));
            // The same pings, running until the cycles are done; SIGINT makes ping print
            // (and flush) everything it has. First the reference (status calls), then the storm.
            let every = format!("{:.3}", PING_EVERY.as_secs_f64());
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
            // The storm proper: registry changes without process starts.
            let sock = o.h("c").dir.join("run").join("overlay.sock");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the API calls");
            let (during, f) = pinging("storm", &mut |i| {
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
                // Paced like the commands' cycles, so that the storm lasts long enough for a p99.
                std::thread::sleep(API_CYCLE.saturating_sub(t0.elapsed()));
                good
            });
            storm = Some(during);
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
        ("idle".to_string(), &idle),
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
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; pings 10 ms apart, {cycles} cycles.\n\n{}\n{lines}",
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
                idle_pings,
                ping_interval_ms: 10,
                churning_node: "c",
            },
            idle,
            storm,
            storm_cli,
            cli_only,
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

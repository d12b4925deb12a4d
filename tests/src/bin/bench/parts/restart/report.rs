//! The restart part's tables and JSON.

use super::{State, DEV_UID, DRAIN_S};
use crate::ctx::Ctx;
use crate::report::{host_desc, now_utc, write_json, Table};
use crate::stats::{diff, fmt, median, Summary};

pub(super) fn report(ctx: &Ctx, st: &State, status: &str) {
    let (when, host) = (now_utc(), host_desc());
    let lat = |round: &str, who: &str| st.lat.iter().find(|l| l.round == round && l.address == who);
    let mut lt = Table::new(&[
        "per-request latency (µs)",
        "direct median",
        "direct p99",
        "overlay address median",
        "overlay address p99",
        "added median",
        "added p99",
    ]);
    let mut lat_json = serde_json::Map::new();
    for (round, title) in [
        ("fresh", "a new connection per request"),
        ("keepalive", "one kept-alive connection"),
    ] {
        let (d, v) = (lat(round, "direct"), lat(round, "via"));
        let dm = d.map(|l| l.median_us);
        let dp = d.map(|l| l.p99_us);
        let vm = v.map(|l| l.median_us);
        let vp = v.map(|l| l.p99_us);
        lt.row(vec![
            title.into(),
            fmt(dm, 1),
            fmt(dp, 1),
            fmt(vm, 1),
            fmt(vp, 1),
            fmt(diff(vm, dm), 0),
            fmt(diff(vp, dp), 0),
        ]);
        lat_json.insert(
            round.into(),
            serde_json::json!({"direct": {"median": dm, "p99": dp}, "overlay": {"median": vm, "p99": vp}, "added": {"median": diff(vm, dm), "p99": diff(vp, dp)}}),
        );
    }
    let mut rt = Table::new(&[
        "`command`",
        "own start, median (ms)",
        "`overlay restart` until the new process answers, median (ms)",
        "overhead (ms)",
        "restart min–max (ms)",
        "printed \"restarted in\", median (ms)",
    ]);
    let mut rs_json = Vec::new();
    let titles = [
        ("echo", "exec python3 server.py"),
        ("echo-sh", "python3 server.py (sh stays its parent)"),
        (
            "worker",
            "exec python3 worker.py (a worker: no port; until it printed its first line)",
        ),
    ];
    for s in st.svcs.iter().chain(std::iter::once(&st.worker)) {
        let title = titles
            .iter()
            .find(|(n, _)| *n == s.service)
            .map_or(s.service.as_str(), |(_, t)| t);
        let own = median(&s.own_start_ms);
        let r = Summary::of(&s.restart_until_serving_ms);
        let over = diff(r.map(|r| r.median), own);
        rt.row(vec![
            title.into(),
            fmt(own, 1),
            fmt(r.map(|r| r.median), 1),
            fmt(over, 1),
            format!("{}–{}", fmt(r.map(|r| r.min), 0), fmt(r.map(|r| r.max), 0)),
            fmt(median(&s.printed_ms), 0),
        ]);
        rs_json.push(serde_json::json!({
            "service": s.service, "command": s.command,
            "own_start_ms": {"median": own, "runs": s.own_start_ms},
            "restart_until_serving_ms": {"median": r.map(|r| r.median), "runs": s.restart_until_serving_ms},
            "printed_ms": {"median": median(&s.printed_ms), "runs": s.printed_ms},
            "overhead_ms": over,
        }));
    }
    let mut dt = Table::new(&[
        &format!("drain (`drain = \"{DRAIN_S}s\"`, one open connection)"),
        "`overlay restart` (ms)",
        "expected (ms)",
        "ratio",
        "drained / closed",
    ]);
    for d in &st.drains {
        let expect = (d.client_closes_after_s.min(DRAIN_S) * 1000.0).round();
        dt.row(vec![
            if d.client_closes_after_s >= 30.0 {
                "the client never closes it (the drain timeout does)".into()
            } else {
                format!("the client closes it after {} s", d.client_closes_after_s)
            },
            format!("{:.0}", d.restart_ms),
            format!("{expect:.0}"),
            format!("{:.2}", d.restart_ms / expect),
            format!(
                "{} / {}",
                d.drained.map_or("n/a".into(), |v| v.to_string()),
                d.closed.map_or("n/a".into(), |v| v.to_string())
            ),
        ]);
    }
    let first = format!(
        "A worker's first start: told as a worker after {} ms.",
        fmt(st.worker_first, 0)
    );
    println!(
        "\nrestart: {host} ({status})\noverlay dev (as uid {DEV_UID}) runs a python3 http.server answering \"pid N\"; the client runs on the same node\n\n{}\n{} restarts per service:\n{}\n{first}\n\n{}",
        lt.plain(),
        ctx.o.restarts,
        rt.plain(),
        dt.plain()
    );
    if !st.left.is_empty() {
        println!(
            "processes of uid {DEV_UID} left after overlay dev stopped: {}",
            st.left
        );
    }
    println!("targets: added latency under 100 µs (median); restart overhead under 50 ms; a worker known within about 1 s; a drain ends when the last old connection closes (ratio near 1)");
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; {} requests per address and connection mode, {} restarts per service.\n\n{}\n{}\n{first}\n\n{}",
        ctx.o.requests,
        ctx.o.restarts,
        lt.markdown(),
        rt.markdown(),
        dt.markdown()
    );
    write_json(
        &ctx.out,
        "restart",
        &serde_json::json!({
            "part": "restart", "time": when, "host": host, "status": status,
            "params": {"requests": ctx.o.requests, "warmup": 50, "restarts": ctx.o.restarts, "dev_uid": DEV_UID},
            "latency_us": lat_json,
            "restarts": rs_json,
            "worker_first_start_told_ms": st.worker_first,
            "drain": {"drain_secs": DRAIN_S, "runs": st.drains},
            "leftover_dev_processes": st.left,
            "targets": {"added_latency_median_us": 100, "restart_overhead_ms": 50},
        }),
    );
}

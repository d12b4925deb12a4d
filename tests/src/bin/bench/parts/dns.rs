//! Part `dns`: dnsperf against a node's DNS server (100.100.100.100) and against dnsmasq
//! serving the same names from a hosts file in the same namespace (unpaced, then paced, the
//! servers alternating so background load hits both alike); the node daemon's RSS; and the
//! answers while every upstream is dead.

use crate::ctx::{out, run as run_in, wait, Ctx};
use crate::ovl::{dig_answers, Ovl, NODE_DNS};
use crate::report::{host_desc, now_utc, rss_kb, write_json, Table};
use crate::stats::{fmt, fmt_unit, mean, met, met_json, ratio, Summary};
use overlay_tests::World;
use serde::Serialize;
use std::time::{Duration, Instant};

/// dnsmasq's address, on a's loopback next to the node's 100.100.100.100 on its TUN.
const DNSMASQ_IP: &str = "10.88.0.53";

#[derive(Serialize, Clone)]
struct Lat {
    p50: Option<f64>,
    p99: Option<f64>,
    avg: Option<f64>,
    max: Option<f64>,
}

#[derive(Serialize, Clone)]
struct PerfRun {
    id: &'static str,
    title: String,
    qps: Option<f64>,
    sent: Option<u64>,
    completed: Option<u64>,
    noerror: Option<u64>,
    latency_us: Lat,
}

#[derive(Serialize, Default)]
struct Dead {
    first: Option<f64>,
    repeat: Option<f64>,
    getent_nosuchhost: Option<f64>,
}

#[derive(Serialize)]
struct Rss {
    local_services: u32,
    idle: Option<u64>,
    after_load: Option<u64>,
}

#[derive(Serialize)]
struct Results {
    part: &'static str,
    time: String,
    host: String,
    status: String,
    params: serde_json::Value,
    runs: Vec<PerfRun>,
    latency_method: &'static str,
    ratios: serde_json::Value,
    targets_met: serde_json::Value,
    dead_upstream_ms: Dead,
    daemon_rss_kb: Rss,
    register_all_ms: Option<f64>,
}

/// The I-th node's short name: a..z, then n26, n27, ...
fn node_name(i: u32) -> String {
    if i < 26 {
        ((b'a' + i as u8) as char).to_string()
    } else {
        format!("n{i}")
    }
}

/// The figures of a dnsperf -v output: summary lines, and per-response times ("> ..." lines,
/// the last field in seconds).
fn parse_dnsperf(id: &'static str, title: String, text: &str) -> PerfRun {
    let field = |key: &str, idx: usize| -> Option<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .and_then(|l| l.split_whitespace().nth(idx).map(str::to_string))
    };
    let noerror = text
        .lines()
        .find(|l| l.trim_start().starts_with("Response codes:"))
        .and_then(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.iter()
                .position(|x| x.trim_end_matches(',') == "NOERROR")
                .and_then(|i| w.get(i + 1))
                .and_then(|v| v.trim_end_matches(',').parse().ok())
        });
    let lat: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| (s * 1e6).round())
        .collect();
    let s = Summary::of(&lat);
    PerfRun {
        id,
        title,
        qps: field("Queries per second:", 3)
            .and_then(|v| v.parse::<f64>().ok())
            .map(f64::round),
        sent: field("Queries sent:", 2).and_then(|v| v.parse().ok()),
        completed: field("Queries completed:", 2).and_then(|v| v.parse().ok()),
        noerror,
        latency_us: Lat {
            p50: s.map(|s| s.median.floor()),
            p99: s.map(|s| s.p99.floor()),
            avg: mean(&lat).map(f64::round),
            max: s.map(|s| s.max.floor()),
        },
    }
}

struct State {
    status: String,
    runs: Vec<PerfRun>,
    dead: Dead,
    rss_idle: Option<u64>,
    rss_load: Option<u64>,
    reg_ms: Option<f64>,
}

#[allow(clippy::too_many_arguments)]
fn dnsperf(
    ctx: &Ctx,
    w: &World,
    o: &Ovl,
    st: &mut State,
    id: &'static str,
    title: String,
    server: &str,
    rate: Option<u32>,
    queries: &str,
) {
    let mut args = format!("-s {server} -d {queries} -l {} -v", ctx.o.time);
    if let Some(r) = rate {
        args.push_str(&format!(" -Q {r}"));
    }
    let log = ctx.log("dnsperf.log");
    crate::ctx::append(&log, &format!("-- {id}: dnsperf {args}\n"));
    let res = run_in(
        w,
        o.h("a"),
        u64::from(ctx.o.time) + 30,
        &format!("dnsperf {args} 2>>{}", log.display()),
    );
    let text = String::from_utf8_lossy(&res.stdout).into_owned();
    let summary: String = text
        .lines()
        .filter(|l| !l.starts_with("> "))
        .map(|l| format!("{l}\n"))
        .collect();
    crate::ctx::append(&log, &summary);
    if !res.status.success() {
        ctx.fail("dns", &format!("dnsperf against {server} failed"));
        ctx.tail(&log);
        return;
    }
    let r = parse_dnsperf(id, title, &text);
    tracing::info!(
        "  {}: {} queries/s, p50 {} µs, p99 {} µs ({}/{} NOERROR)",
        r.title,
        fmt(r.qps, 0),
        fmt(r.latency_us.p50, 0),
        fmt(r.latency_us.p99, 0),
        r.noerror.unwrap_or(0),
        r.completed.unwrap_or(0)
    );
    st.runs.push(r);
}

/// dig's "Query time" (ms) for `name` at the node's DNS in a.
fn dig_ms(w: &World, o: &Ovl, name: &str) -> Option<(f64, String)> {
    let text = out(
        w,
        o.h("a"),
        10,
        &format!("dig +tries=1 +time=5 +nocookie @{NODE_DNS} {name}"),
    )?;
    let status = text
        .lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .unwrap_or_default();
    let t = text
        .lines()
        .find_map(|l| l.split("Query time: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())?;
    Some((t, status))
}

/// "N ms (STATUS)" of a dig answer, or "no answer".
fn show(r: &Option<(f64, String)>) -> String {
    r.as_ref()
        .map_or("no answer".into(), |(ms, st)| format!("{ms} ms ({st})"))
}

fn dead_upstream(w: &World, o: &Ovl, st: &mut State) {
    // A name never asked: waits the forwarding deadline, then SERVFAIL.
    let first = dig_ms(w, o, &format!("first-{}.example.", rand::random::<u16>()));
    tracing::info!("  dead upstream, first forwarded query: {}", show(&first));
    st.dead.first = first.map(|x| x.0);
    // The same again while the upstream is skipped.
    let _ = dig_ms(w, o, "first-again.example.");
    let again = dig_ms(w, o, "first-again.example.");
    tracing::info!("  dead upstream, repeated query: {}", show(&again));
    st.dead.repeat = again.map(|x| x.0);
    // glibc: nosuchhost.ovl.internal, then nosuchhost at both nameservers (ours, then the dead
    // one with the one-second timeout overlay sets).
    let t0 = Instant::now();
    let r = run_in(w, o.h("a"), 20, "getent hosts nosuchhost");
    st.dead.getent_nosuchhost = Some(crate::ctx::ms_since(t0).round());
    tracing::info!(
        "  dead upstream, getent hosts nosuchhost: {} ms {}",
        fmt(st.dead.getent_nosuchhost, 0),
        String::from_utf8_lossy(&r.stdout).trim()
    );
}

fn measure(ctx: &Ctx, w: &World, o: &mut Ovl, st: &mut State) -> Result<(), String> {
    let services = ctx.o.services;
    let nodes = services.div_ceil(50);
    o.relay_start(w, &[])?;
    o.token(w, nodes)?;
    // Node a's only upstream is an address nobody answers on (no outside network needed).
    let dead = format!("{}.250", overlay_tests::world::UNDERLAY);
    std::fs::write(
        format!("/etc/netns/{}/resolv.conf", o.h("a").ns),
        format!("nameserver {dead}\n"),
    )
    .map_err(|e| format!("resolv.conf of a: {e}"))?;
    for i in 0..nodes {
        o.join(w, &node_name(i))?;
    }
    tracing::info!("  {nodes} node(s) joined; registering {services} services (50 per node)");
    let (mut hosts, mut queries) = (String::new(), String::new());
    let t0 = Instant::now();
    for i in 1..=services {
        let n = node_name((i - 1) / 50);
        let text = o
            .ovl_out(w, &n, &format!("register svc{i} --port 80 --json"))
            .ok_or_else(|| format!("overlay register svc{i} failed on node {n}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("register --json: {e}"))?;
        let addr = v["address"].as_str().unwrap_or_default();
        hosts.push_str(&format!("{addr} svc{i}.ovl.internal\n"));
        queries.push_str(&format!("svc{i}.ovl.internal A\n"));
    }
    st.reg_ms = Some(crate::ctx::ms_since(t0).round());
    let dir = o.h("a").dir.clone();
    let (hosts_f, queries_f) = (dir.join("hosts"), dir.join("queries"));
    std::fs::write(&hosts_f, &hosts).expect("hosts file");
    std::fs::write(&queries_f, &queries).expect("queries file");
    let _ = std::fs::write(ctx.log("dns-hosts.txt"), &hosts);
    let check = format!(
        "while read -r addr name; do [ \"$(dig +short +tries=1 +time=1 @{NODE_DNS} $name)\" = \"$addr\" ] || exit 1; done < {}",
        hosts_f.display()
    );
    if !wait(30, "every name to resolve at the node's DNS", || {
        crate::ctx::ok(w, o.h("a"), 60, &check)
    }) {
        return Err(format!(
            "the registered names did not all resolve at {NODE_DNS} within 30 s"
        ));
    }
    let pid = o.pid(w, "a");
    // Measured idle: two seconds without queries after the registrations settled.
    std::thread::sleep(Duration::from_secs(2));
    st.rss_idle = pid.and_then(rss_kb);
    tracing::info!(
        "  node a daemon (pid {}): RSS {} kB idle",
        pid.map_or("?".into(), |p| p.to_string()),
        st.rss_idle.map_or("?".into(), |v| v.to_string())
    );
    let a = o.h("a").clone();
    if !crate::ctx::ok(w, &a, 5, &format!("ip addr add {DNSMASQ_IP}/32 dev lo")) {
        return Err("cannot add dnsmasq's address".into());
    }
    let hosts_arg = format!("--addn-hosts={}", hosts_f.display());
    let listen = format!("--listen-address={DNSMASQ_IP}");
    let dpid = w.spawn_to(
        &a,
        &ctx.log("dnsmasq.log"),
        &[],
        &[
            "dnsmasq",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            &hosts_arg,
            &listen,
            "--bind-interfaces",
            "--port",
            "53",
            "--pid-file=",
            "--log-facility=-",
        ],
    );
    let (first_addr, first_name) = hosts
        .lines()
        .next()
        .and_then(|l| l.split_once(' '))
        .map(|(a, n)| (a.to_string(), n.to_string()))
        .unwrap_or_default();
    if !wait(10, "dnsmasq to answer", || {
        dig_answers(w, &a, DNSMASQ_IP, &first_name, &first_addr)
    }) {
        ctx.tail(&ctx.log("dnsmasq.log"));
        w.stop(dpid);
        return Err("dnsmasq did not start".into());
    }
    let q = queries_f.to_string_lossy().into_owned();
    let rate = ctx.o.rate;
    dnsperf(
        ctx,
        w,
        o,
        st,
        "overlay",
        "overlay node DNS, unpaced".into(),
        NODE_DNS,
        None,
        &q,
    );
    dnsperf(
        ctx,
        w,
        o,
        st,
        "dnsmasq",
        "dnsmasq (hosts file), unpaced".into(),
        DNSMASQ_IP,
        None,
        &q,
    );
    dnsperf(
        ctx,
        w,
        o,
        st,
        "overlay-paced",
        format!("overlay node DNS, {rate} queries/s"),
        NODE_DNS,
        Some(rate),
        &q,
    );
    dnsperf(
        ctx,
        w,
        o,
        st,
        "dnsmasq-paced",
        format!("dnsmasq (hosts file), {rate} queries/s"),
        DNSMASQ_IP,
        Some(rate),
        &q,
    );
    st.rss_load = pid.and_then(rss_kb);
    if pid.is_some() && st.rss_load.is_none() {
        ctx.fail("dns", "the node daemon of a is gone after the dnsperf runs");
    }
    w.stop(dpid);
    dead_upstream(w, o, st);
    Ok(())
}

pub fn run(ctx: &Ctx) {
    let services = ctx.o.services;
    let nodes = services.div_ceil(50);
    tracing::info!(
        "part dns: {services} services on {nodes} node(s); dnsperf {} s per run against the node's DNS and dnsmasq",
        ctx.o.time
    );
    let mut w = ctx.world("dns");
    let mut o = Ovl::new(ctx, &w, "dns");
    for i in 0..nodes {
        o.host(&mut w, &node_name(i), (2 + i) as u8);
    }
    let mut st = State {
        status: "ok".into(),
        runs: Vec::new(),
        dead: Dead::default(),
        rss_idle: None,
        rss_load: None,
        reg_ms: None,
    };
    if !ctx.have_binaries() {
        st.status = "n/a (binaries missing)".into();
    } else if let Err(e) = measure(ctx, &w, &mut o, &mut st) {
        ctx.fail("dns", &e);
        st.status = "failed".into();
    }
    o.down_all(&w);
    report(ctx, &st);
}

fn report(ctx: &Ctx, st: &State) {
    let (when, host) = (now_utc(), host_desc());
    let rate = ctx.o.rate;
    let services = ctx.o.services;
    let get = |id: &str| st.runs.iter().find(|r| r.id == id);
    let qps = |id: &str| get(id).and_then(|r| r.qps);
    let p99 = |id: &str| get(id).and_then(|r| r.latency_us.p99);
    let q_ratio = ratio(qps("overlay"), qps("dnsmasq"));
    let p99_ratio = ratio(p99("overlay"), p99("dnsmasq"));
    let pq_ratio = ratio(p99("overlay-paced"), p99("dnsmasq-paced"));
    let local = services.min(50);
    let mut t = Table::new(&[
        "server, load",
        "queries/s",
        "p50 (µs)",
        "p99 (µs)",
        "max (µs)",
        "NOERROR / completed",
    ]);
    for r in &st.runs {
        t.row(vec![
            r.title.clone(),
            fmt(r.qps, 0),
            fmt(r.latency_us.p50, 0),
            fmt(r.latency_us.p99, 0),
            fmt(r.latency_us.max, 0),
            format!("{} / {}", r.noerror.unwrap_or(0), r.completed.unwrap_or(0)),
        ]);
    }
    if st.runs.is_empty() {
        t.row(vec![
            "overlay node DNS".into(),
            st.status.clone(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
        ]);
    }
    let kb = |v: Option<u64>| fmt_unit(v.map(|x| x as f64), 0, "kB");
    let ms = |v: Option<f64>| fmt_unit(v, 0, "ms");
    let d = &st.dead;
    let mut f = Table::new(&["ratio or figure (same run)", "value"]);
    for (k, v) in [
        (
            "queries/s overlay / dnsmasq (unpaced)".to_string(),
            fmt(q_ratio, 3),
        ),
        ("p99 overlay / dnsmasq (unpaced)".into(), fmt(p99_ratio, 3)),
        (
            format!("p99 overlay / dnsmasq (at {rate} queries/s)"),
            fmt(pq_ratio, 3),
        ),
        (
            format!("overlay p99 < 1 ms: unpaced; at {rate} queries/s"),
            format!(
                "{}; {}",
                met(p99("overlay"), |v| v < 1000.0),
                met(p99("overlay-paced"), |v| v < 1000.0)
            ),
        ),
        (
            format!("node daemon RSS, {local} services registered, idle"),
            kb(st.rss_idle),
        ),
        (
            "node daemon RSS after the dnsperf runs".into(),
            kb(st.rss_load),
        ),
        (
            format!("registering {services} services one by one with overlay register"),
            ms(st.reg_ms),
        ),
        (
            "every upstream dead: first forwarded query (target < 1.5 s)".into(),
            format!("{} ({})", ms(d.first), met(d.first, |v| v < 1500.0)),
        ),
        (
            "every upstream dead: the same query again (target < 10 ms)".into(),
            format!("{} ({})", ms(d.repeat), met(d.repeat, |v| v < 10.0)),
        ),
        (
            "every upstream dead: `getent hosts nosuchhost` (target < 3 s)".into(),
            format!(
                "{} ({})",
                ms(d.getent_nosuchhost),
                met(d.getent_nosuchhost, |v| v < 3000.0)
            ),
        ),
    ] {
        f.row(vec![k, v]);
    }
    println!(
        "\ndns: {host} ({})\n{services} services ({} nodes), A queries for their names from a, dnsperf {} s per run\n\n{}\n{}",
        st.status,
        services.div_ceil(50),
        ctx.o.time,
        t.plain(),
        f.plain()
    );
    println!("latencies: every response's time from dnsperf -v (µs resolution), nearest-rank percentiles");
    println!(
        "targets: >= 50000 queries/s and >= dnsmasq; p99 < 1 ms; RSS < 30 MB\n  met (informational, never the exit status): {} queries/s >= dnsmasq; {} p99 < 1 ms unpaced; {} p99 < 1 ms at {rate}/s",
        met(q_ratio, |v| v >= 1.0),
        met(p99("overlay"), |v| v < 1000.0),
        met(p99("overlay-paced"), |v| v < 1000.0)
    );
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; {services} services, dnsperf {} s per run, client and both servers in one namespace.\n\nLatencies: the time of every response, from dnsperf -v; nearest-rank percentiles.\n\n{}\n{}",
        ctx.o.time,
        t.markdown(),
        f.markdown()
    );
    write_json(
        &ctx.out,
        "dns",
        &Results {
            part: "dns",
            time: when,
            host,
            status: st.status.clone(),
            params: serde_json::json!({"services": services, "seconds": ctx.o.time, "paced_qps": rate, "server": NODE_DNS, "dnsmasq": DNSMASQ_IP}),
            runs: st.runs.clone(),
            latency_method: "dnsperf -v per-response times, nearest-rank percentiles",
            ratios: serde_json::json!({"qps_overlay_over_dnsmasq": q_ratio, "p99_overlay_over_dnsmasq": p99_ratio, "p99_paced_overlay_over_dnsmasq": pq_ratio}),
            targets_met: serde_json::json!({
                "qps_at_least_dnsmasq": met_json(q_ratio, |v| v >= 1.0),
                "p99_under_1ms_unpaced": met_json(p99("overlay"), |v| v < 1000.0),
                "p99_under_1ms_paced": met_json(p99("overlay-paced"), |v| v < 1000.0),
            }),
            dead_upstream_ms: Dead {
                first: d.first,
                repeat: d.repeat,
                getent_nosuchhost: d.getent_nosuchhost,
            },
            daemon_rss_kb: Rss {
                local_services: local,
                idle: st.rss_idle,
                after_load: st.rss_load,
            },
            register_all_ms: st.reg_ms,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsperf_output_parses() {
        let text = "> NOERROR svc1.ovl.internal A 0.000120\n> NOERROR svc2.ovl.internal A 0.000200\n\
  Queries sent:         1000\n  Queries completed:    998 (99.80%)\n  Queries lost:         2 (0.20%)\n\n\
  Response codes:       NOERROR 998 (100.00%)\n  Average packet size:  request 37, response 53\n  Run time (s):         1.000\n\
  Queries per second:   997.9\n";
        let r = parse_dnsperf("x", "t".into(), text);
        assert_eq!(
            (r.sent, r.completed, r.noerror),
            (Some(1000), Some(998), Some(998))
        );
        assert_eq!(r.qps, Some(998.0));
        assert_eq!(r.latency_us.p50, Some(160.0));
        assert_eq!(r.latency_us.max, Some(200.0));
    }

    #[test]
    fn node_names() {
        assert_eq!(node_name(0), "a");
        assert_eq!(node_name(25), "z");
        assert_eq!(node_name(26), "n26");
    }
}

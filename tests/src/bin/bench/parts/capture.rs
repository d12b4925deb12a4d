//! Part `capture`: what the traffic capture costs. One node, with nginx on 127.0.0.1 serving a
//! 16 KiB file over HTTP/1.1 and over h2c (prior knowledge), registered as services; h2load on
//! the same host calls them through their listeners, which tee every byte into the capture
//! while it records. Each round runs h2load with the capture recording and with it paused
//! (`overlay traffic --pause`/`--resume`: a listener decides per connection, so every h2load
//! connection of a run sees one state), which first alternating by round; the medians' ratio is
//! the cost. The same daemon, nginx and namespace serve both, so the figure is the capture's,
//! not a difference between two nodes (until 2026-12-07 two nodes were compared, and one of
//! them was faster at HTTP/2 whatever its capture did). HTTP/1.1 runs twice: on 8 kept-alive
//! connections, and with a connection per request (what the capture spends per connection).
//! Targets: at most 3% on HTTP/1.1 and 5% on HTTP/2 throughput.
//!
//! Throughput on a shared 2-core host moves by 20-40% from run to run, so each run also
//! measures CPU time per request: user+system time (`/proc/PID/stat`, all threads) of the
//! node's daemon, its nginx (master and worker) and h2load (bash's `times` for its child),
//! before and after the run, divided by the requests. h2load saturates both cores, so
//! throughput is cores / CPU per request and `cpu_cost_percent` (on / off - 1 of the medians)
//! is the same cost, measured steadily. The host's busy time (`/proc/stat`: everything but
//! idle, iowait and steal, softirq included; the one reading the intercept part uses) per
//! request is kept as a cross-check.

use crate::ctx::{out, Ctx};
use crate::ovl::Ovl;
use crate::report::{
    children, clk_tck, cpu_ticks, h2load_req_per_sec, host_busy_ticks, host_desc, now_utc,
    write_json, Table,
};
use crate::stats::{fmt, median};
use overlay_core::api::daemon::Recording;
use overlay_core::traffic::capture::Ring;
use overlay_tests::world::World;
use serde::Serialize;

/// Requests per h2load run: a few seconds each on a quiet host, so that CPU times (counted in
/// 10 ms ticks) are read to well under 1%.
const REQUESTS: u32 = 100_000;
/// Rounds per protocol (each runs h2load recording and paused).
const ROUNDS: usize = 5;
/// Requests per run when each comes on a connection of its own (h2load connects again after
/// each `Connection: close`): what costs the capture per connection (its start, naming a local
/// caller's process) weighs here.
const REQUESTS_CONN: u32 = 20_000;

#[derive(Serialize)]
struct Proto {
    name: &'static str,
    requests_per_run: u32,
    on_req_s: Vec<f64>,
    off_req_s: Vec<f64>,
    median_on: Option<f64>,
    median_off: Option<f64>,
    cost_percent: Option<f64>,
    target_percent: f64,
    /// CPU µs per request of the daemon, nginx and h2load, per run.
    on_cpu_us: Vec<f64>,
    off_cpu_us: Vec<f64>,
    median_cpu_us_on: Option<f64>,
    median_cpu_us_off: Option<f64>,
    /// on / off - 1 of the medians of CPU per request, in percent.
    cpu_cost_percent: Option<f64>,
    /// Of those, the daemon's µs per request, per run.
    on_daemon_cpu_us: Vec<f64>,
    off_daemon_cpu_us: Vec<f64>,
    /// The host's busy µs (both cores) per request, per run.
    on_host_cpu_us: Vec<f64>,
    off_host_cpu_us: Vec<f64>,
    host_cpu_cost_percent: Option<f64>,
}

/// What one h2load run measured.
#[derive(Default)]
struct Runs {
    req_s: Vec<f64>,
    cpu_us: Vec<f64>,
    daemon_cpu_us: Vec<f64>,
    host_cpu_us: Vec<f64>,
}

#[derive(Serialize)]
struct Results {
    part: &'static str,
    time: String,
    host: String,
    status: String,
    requests_per_run: u32,
    rounds: usize,
    protocols: Vec<Proto>,
    in_process: InProcess,
}

/// The capture's own work per exchange, in the bench's process (see [`in_process`]).
#[derive(Serialize)]
struct InProcess {
    /// Microseconds per HTTP/1.1 exchange, one per round.
    us_per_exchange: Vec<f64>,
    median_us: Option<f64>,
    /// The median as a share of the capture-off setup's CPU per HTTP/1.1 request in this run.
    percent_of_off_cpu: Option<f64>,
    /// The same exchange on a connection of its own (a capture made, closed and dropped per
    /// exchange), one per round.
    us_per_connection: Vec<f64>,
    median_us_per_connection: Option<f64>,
}

const NGINX: &str = "daemon off; worker_processes 1; pid DIR/nginx.pid; error_log DIR/nginx.err;
events { worker_connections 256; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:18080; root DIR/www; }
  server { listen 127.0.0.1:18081 http2; root DIR/www; } }
";

/// The node's name.
const NODE: &str = "cap";

/// Exchanges per round of the in-process measurement, rounds, and the ring (the daemon's
/// default `--capture-buffer`).
const IN_PROCESS_EXCHANGES: usize = 100_000;
const IN_PROCESS_ROUNDS: usize = 5;
const IN_PROCESS_RING: usize = 64 << 20;

/// The capture's work per HTTP/1.1 exchange without the rest of the system: an exchange shaped
/// as the bench's (h2load's request, nginx's head and 16 KiB body, each arriving in one chunk,
/// the response shared as the listener's splice shares its reads) fed to connection
/// captures over 8 connections, records into a ring of the daemon's default
/// size, filled first so that every record evicts one. The daemon's CPU difference between
/// recording and paused moves by a microsecond between runs on a shared host; this moves less. It leaves out what the capture
/// costs the others (the cache its records take from nginx, h2load and the kernel).
/// `per_connection`: each exchange on a capture of its own, made (with its names, as the
/// listener makes them), closed and dropped, as with a connection per request.
fn in_process(
    rounds: usize,
    exchanges: usize,
    ring_bytes: usize,
    per_connection: bool,
) -> (Vec<f64>, Ring) {
    use overlay_core::traffic::capture::conn::ConnMeta;
    use overlay_core::traffic::capture::{ConnectionCapture, Direction, FlowEnd};
    use overlay_core::traffic::http1::{Limits, Side};
    let request = b"GET /file HTTP/1.1\r\nHost: 100.64.4.66:8080\r\nUser-Agent: h2load nghttp2/1.52.0\r\n\r\n";
    let mut response =
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 13:36:39 GMT\r\n\
        Content-Type: application/octet-stream\r\nContent-Length: 16384\r\n\
        Last-Modified: Sun, 06 Dec 2026 13:30:00 GMT\r\nConnection: keep-alive\r\n\
        ETag: \"6752f1a8-4000\"\r\nAccept-Ranges: bytes\r\n\r\n"
            .to_vec();
    response.extend(std::iter::repeat_n(b'x', 16 * 1024));
    let response = bytes::Bytes::from(response);
    let meta = || ConnMeta {
        service: "h1".into(),
        direction: Direction::In,
        client: "127.0.0.1:40000".into(),
        client_name: None,
        server: "100.64.4.66:8080".into(),
        server_name: Some("h1".into()),
    };
    let mut conns: Vec<ConnectionCapture> = (0..8)
        .map(|_| ConnectionCapture::new(meta(), Limits::default(), 0))
        .collect();
    let mut ring = Ring::new(ring_bytes);
    let mut exchange = |i: usize, ring: &mut Ring| {
        let mut fresh;
        let c = if per_connection {
            let client = format!("127.0.0.1:{}", 40000 + i % 20000);
            fresh = ConnectionCapture::new(
                ConnMeta {
                    client: client.into(),
                    ..meta()
                },
                Limits::default(),
                0,
            );
            &mut fresh
        } else {
            let Some(c) = conns.get_mut(i % 8) else {
                return;
            };
            c
        };
        c.data(Side::Client, request, 1);
        c.data_in(Side::Server, &response, Some(&response), 2);
        if per_connection {
            c.close(FlowEnd::Closed, 3);
        }
        while let Some(r) = c.poll() {
            ring.push(r);
        }
    };
    let fill = ring_bytes / response.len() + 1000;
    for i in 0..fill {
        exchange(i, &mut ring);
    }
    let us = (0..rounds)
        .map(|_| {
            let t = std::time::Instant::now();
            for i in 0..exchanges {
                exchange(i, &mut ring);
            }
            t.elapsed().as_secs_f64() * 1e6 / exchanges as f64
        })
        .collect();
    (us, ring)
}

/// User+system seconds of process `pid` (all its threads).
fn proc_cpu(pid: u32, tck: f64) -> Option<f64> {
    cpu_ticks(pid).map(|t| t as f64 / tck)
}

/// Busy seconds of the whole host (all cores).
fn host_busy(tck: f64) -> Option<f64> {
    host_busy_ticks().map(|t| t as f64 / tck)
}

/// nginx's master (from its pid file) and its workers (its children).
fn nginx_pids(dir: &std::path::Path) -> Vec<u32> {
    let Some(master) = std::fs::read_to_string(dir.join("nginx.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return Vec::new();
    };
    let mut pids = vec![master];
    pids.extend(children(master));
    pids
}

/// The children's user+system seconds that bash's `times` printed last.
fn child_cpu(text: &str) -> Option<f64> {
    let l = text
        .lines()
        .rev()
        .find(|l| l.contains("m") && l.ends_with('s'))?;
    let secs = |t: &str| -> Option<f64> {
        let (m, s) = t.strip_suffix('s')?.split_once('m')?;
        Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    };
    let mut it = l.split_whitespace();
    Some(secs(it.next()?)? + secs(it.next()?)?)
}

pub fn run(ctx: &Ctx) {
    tracing::info!("part capture: h2load through listeners, capture recording vs paused");
    let mut w: World = ctx.world("capture");
    let mut o = Ovl::new(ctx, &w, "capture");
    o.host(&mut w, NODE, 2);
    let mut status = "ok".to_string();
    let mut addrs = Vec::new();
    let joined = ctx.have_binaries()
        && o.relay_start(&w, &[])
            .and_then(|_| o.token(&w, 1))
            .and_then(|()| o.join(&w, NODE))
            .map_err(|e| {
                ctx.fail("capture", &e);
                status = format!("failed ({e})");
            })
            .is_ok();
    let h = o.h(NODE).clone();
    if joined {
        // A connection per request closes 100,000 connections in a minute: h2load's ports
        // would run out in TIME_WAIT (connect() then searches the range for seconds). This
        // namespace's own setting; the host's is not touched.
        let _ = out(&w, &h, 5, "sysctl -qw net.ipv4.tcp_tw_reuse=1");
        let dir = h.dir.display().to_string();
        let _ = std::fs::create_dir_all(h.dir.join("www"));
        let _ = std::fs::write(h.dir.join("www/file"), vec![b'x'; 16 * 1024]);
        let conf = h.dir.join("nginx.conf");
        let _ = std::fs::write(&conf, NGINX.replace("DIR", &dir));
        let conf = conf.display().to_string();
        w.spawn(&h, "nginx", &[], &["nginx", "-c", &conf]);
        for (svc, port, target) in [("h1", 8080, 18080), ("h2", 8081, 18081)] {
            let reg = o.ovl_out(
                &w,
                NODE,
                &format!("register {svc} --port {port} --target {target} --json"),
            );
            let v: serde_json::Value = reg
                .and_then(|r| serde_json::from_str(&r).ok())
                .unwrap_or_default();
            addrs.push(v["address"].as_str().unwrap_or("").to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // Whose CPU time counts: the daemon, then nginx's master and workers.
    let mut pids: Vec<u32> = o.pid(&w, NODE).into_iter().collect();
    if joined && pids.is_empty() {
        ctx.fail("capture", "no daemon pid");
    }
    pids.extend(nginx_pids(&h.dir));
    let tck = clk_tck();
    let cpu = |pids: &[u32]| {
        pids.iter()
            .filter_map(|p| proc_cpu(*p, tck))
            .collect::<Vec<_>>()
    };
    // Pauses or resumes the capture; false (and the run is not counted) if that failed.
    let record = |on: bool| {
        let flag = if on { "--resume" } else { "--pause" };
        o.ovl_out(&w, NODE, &format!("traffic {flag} --json"))
            .and_then(|r| serde_json::from_str::<Recording>(&r).ok())
            .is_some_and(|r| r.on == on)
    };
    let mut protos = Vec::new();
    for (name, k, port, flags, requests, target) in [
        ("HTTP/1.1", 0, 8080, "--h1 -c 8", REQUESTS, 3.0),
        ("HTTP/2 (h2c)", 1, 8081, "-c 8 -m 16", REQUESTS, 5.0),
        (
            "HTTP/1.1, a connection per request",
            0,
            8080,
            "--h1 -c 8 -H 'Connection: close'",
            REQUESTS_CONN,
            3.0,
        ),
    ] {
        // [recording, paused]
        let mut runs: [Runs; 2] = Default::default();
        let a = addrs.get(k).map_or("", String::as_str);
        let cmd = format!("h2load {flags} -n {requests} http://{a}:{port}/file");
        for round in 0..if joined { ROUNDS } else { 0 } {
            // Which state goes first alternates by round: the host's state drifts within a
            // round (caches, frequency, the other tenants), and always measuring one state
            // second would count that drift as the capture's cost or gain.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                if !record(i == 0) {
                    ctx.fail("capture", "overlay traffic --pause/--resume failed");
                    continue;
                }
                let (before, host0) = (cpu(&pids), host_busy(tck));
                // bash's `times` then prints h2load's CPU time.
                let text = out(&w, &h, 120, &format!("{cmd} && times"));
                let (after, host1) = (cpu(&pids), host_busy(tck));
                let Some(r) = text.as_deref().and_then(h2load_req_per_sec) else {
                    ctx.fail("capture", &format!("h2load failed: {cmd}"));
                    continue;
                };
                let run = &mut runs[i];
                run.req_s.push(r);
                let per_req = |secs: f64| secs * 1e6 / f64::from(requests);
                let used: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
                let h2load = text.as_deref().and_then(child_cpu);
                if used.len() == pids.len() && !pids.is_empty() {
                    run.daemon_cpu_us.push(per_req(used[0]));
                    if let Some(c) = h2load {
                        run.cpu_us.push(per_req(used.iter().sum::<f64>() + c));
                    }
                }
                if let (Some(a), Some(b)) = (host1, host0) {
                    run.host_cpu_us.push(per_req(a - b));
                }
            }
        }
        let (on, off) = (median(&runs[0].req_s), median(&runs[1].req_s));
        let cost = match (on, off) {
            (Some(a), Some(b)) if b > 0.0 => Some(100.0 * (1.0 - a / b)),
            _ => None,
        };
        let growth = |on: &[f64], off: &[f64]| match (median(on), median(off)) {
            (Some(a), Some(b)) if b > 0.0 => Some(100.0 * (a / b - 1.0)),
            _ => None,
        };
        let [r_on, r_off] = runs;
        protos.push(Proto {
            name,
            requests_per_run: requests,
            median_on: on,
            median_off: off,
            cost_percent: cost,
            target_percent: target,
            median_cpu_us_on: median(&r_on.cpu_us),
            median_cpu_us_off: median(&r_off.cpu_us),
            cpu_cost_percent: growth(&r_on.cpu_us, &r_off.cpu_us),
            host_cpu_cost_percent: growth(&r_on.host_cpu_us, &r_off.host_cpu_us),
            on_req_s: r_on.req_s,
            off_req_s: r_off.req_s,
            on_cpu_us: r_on.cpu_us,
            off_cpu_us: r_off.cpu_us,
            on_daemon_cpu_us: r_on.daemon_cpu_us,
            off_daemon_cpu_us: r_off.daemon_cpu_us,
            on_host_cpu_us: r_on.host_cpu_us,
            off_host_cpu_us: r_off.host_cpu_us,
        });
    }
    o.down_all(&w);
    let (us, _) = in_process(
        IN_PROCESS_ROUNDS,
        IN_PROCESS_EXCHANGES,
        IN_PROCESS_RING,
        false,
    );
    let (us_conn, _) = in_process(
        IN_PROCESS_ROUNDS,
        IN_PROCESS_EXCHANGES,
        IN_PROCESS_RING,
        true,
    );
    let median_us = median(&us);
    let off_cpu = protos.first().and_then(|p| p.median_cpu_us_off);
    let in_process = InProcess {
        percent_of_off_cpu: median_us
            .zip(off_cpu)
            .filter(|(_, off)| *off > 0.0)
            .map(|(u, off)| 100.0 * u / off),
        median_us,
        us_per_exchange: us,
        median_us_per_connection: median(&us_conn),
        us_per_connection: us_conn,
    };
    let (when, host) = (now_utc(), host_desc());
    let mut t = Table::new(&[
        "through a listener",
        "recording (req/s, median)",
        "paused (req/s, median)",
        "cost",
        "CPU µs/req on",
        "CPU µs/req off",
        "CPU cost",
        "host CPU cost",
        "target",
    ]);
    for p in &protos {
        t.row(vec![
            p.name.to_string(),
            fmt(p.median_on, 0),
            fmt(p.median_off, 0),
            p.cost_percent.map_or("-".into(), |c| format!("{c:.1}%")),
            fmt(p.median_cpu_us_on, 1),
            fmt(p.median_cpu_us_off, 1),
            p.cpu_cost_percent
                .map_or("-".into(), |c| format!("{c:.1}%")),
            p.host_cpu_cost_percent
                .map_or("-".into(), |c| format!("{c:.1}%")),
            format!("<= {}%", p.target_percent),
        ]);
    }
    let params = format!(
        "h2load, {REQUESTS} requests of a 16 KiB file per run ({REQUESTS_CONN} on a connection each), {ROUNDS} rounds alternating the capture recording and paused on one node; \
         CPU: user+system time of the daemon, nginx and h2load per request (median); host CPU: /proc/stat busy time"
    );
    let own = format!(
        "the capture's own work, in-process: {} µs per HTTP/1.1 exchange (median of {IN_PROCESS_ROUNDS} rounds \
         of {IN_PROCESS_EXCHANGES}, 64 MiB ring), {} of the capture-off setup's CPU per request; \
         {} µs with a capture made and closed per exchange",
        fmt(in_process.median_us, 2),
        in_process
            .percent_of_off_cpu
            .map_or("-".into(), |p| format!("{p:.1}%")),
        fmt(in_process.median_us_per_connection, 2),
    );
    println!(
        "\ncapture: {host} ({status})\n\n{}\n{params}\n{own}",
        t.plain()
    );
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; {params}.\n\n{}\n{own}.",
        t.markdown()
    );
    write_json(
        &ctx.out,
        "capture",
        &Results {
            part: "capture",
            time: when,
            host,
            status,
            requests_per_run: REQUESTS,
            rounds: ROUNDS,
            protocols: protos,
            in_process,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_figures_and_bash_times_are_read() {
        let text = "finished in 2.71s, 36846.99 req/s, 578.93MB/s\n\
                    requests: 100000 total\n\
                    0m0.001s 0m0.002s\n\
                    1m0.250s 0m1.500s\n";
        assert_eq!(h2load_req_per_sec(text), Some(36846.99));
        let c = child_cpu(text).unwrap();
        assert!((c - 61.75).abs() < 1e-9, "{c}");
        assert_eq!(child_cpu("no times here"), None);
    }

    #[test]
    fn the_in_process_exchange_is_captured_whole_and_fills_the_ring() {
        let mut pushed = Vec::new();
        for per_connection in [false, true] {
            let (us, ring) = in_process(2, 50, 1 << 20, per_connection);
            assert!(
                us.len() == 2 && us.iter().all(|u| u.is_finite() && *u > 0.0),
                "{us:?}"
            );
            assert!(ring.evicted() > 0, "every record evicts one");
            let filter = overlay_core::traffic::capture::Filter::default();
            let newest = ring.list(&filter, 0, 1);
            let r = newest.first().expect("a record");
            let s = r.summary();
            assert_eq!((s.method.as_deref(), s.status), (Some("GET"), Some(200)));
            let body = r.response().map(|m| (m.body.data.len(), m.body.truncated));
            assert_eq!(body, Some((16 * 1024, false)));
            pushed.push(ring.next_id());
        }
        // One record per exchange either way: a closed HTTP connection adds no flow record.
        assert_eq!(pushed[0], pushed[1]);
    }

    #[test]
    fn this_process_and_the_host_have_used_cpu() {
        let tck = clk_tck();
        assert!(tck > 0.0);
        assert!(proc_cpu(std::process::id(), tck).is_some());
        assert!(host_busy(tck).is_some_and(|b| b > 0.0));
        assert_eq!(proc_cpu(u32::MAX, tck), None);
    }
}

//! Part `intercept`: what a service's front costs its remote callers while nobody intercepts
//! it. The relay runs with a catalog entry `orders` whose `address` is nginx in the remote
//! environment (the hub namespace) and whose `front` is a port of the relay; a caller host on
//! the same bridge calls nginx directly and through the front, in the same run:
//! - latency: the bench's own HTTP/1.1 probe, GETs alternating between the two addresses, on
//!   new connections and on kept-alive ones; the added latency is the difference of medians
//!   (target: under 200 µs);
//! - throughput: h2load `--h1` on kept-alive connections, rounds alternating direct and
//!   front, for a small response and a 1 MiB one; the ratio of medians (target: at least 80%).
//!   socat forwarding TCP in the same place is measured beside them, as a reference for what
//!   any extra hop costs on the host (the caller, nginx and the hop share its cores).

use crate::ctx::{self, out, Ctx};
use crate::ovl::Ovl;
use crate::probe::LatencyLine;
use crate::report::{host_desc, now_utc, write_json, Table};
use crate::stats::{diff, fmt, median, met, met_json, ratio};
use overlay_tests::world::World;
use serde::Serialize;

/// Rounds per throughput case and address.
const ROUNDS: usize = 5;
/// Requests per h2load run, small and large responses.
const REQUESTS: [u32; 2] = [20_000, 2_000];
/// Target: median latency the front adds, in µs.
const ADDED_US: f64 = 200.0;
/// Target: throughput through the front against direct.
const THROUGHPUT: f64 = 0.8;

/// Where the remote `orders` (nginx) listens, and the relay's front for it.
const ADDRESS: &str = "10.78.0.1:8080";
const FRONT: &str = "10.78.0.1:18080";
/// socat forwarding to `ADDRESS`, the reference hop.
const SOCAT: &str = "10.78.0.1:18090";

const NGINX: &str = "daemon off; worker_processes 1; pid DIR/nginx.pid; error_log DIR/nginx.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 10.78.0.1:8080; root DIR/www; } }
";

#[derive(Serialize, Default)]
struct Throughput {
    name: &'static str,
    direct_req_s: Vec<f64>,
    front_req_s: Vec<f64>,
    socat_req_s: Vec<f64>,
    median_direct: Option<f64>,
    median_front: Option<f64>,
    median_socat: Option<f64>,
    ratio: Option<f64>,
    socat_ratio: Option<f64>,
    target_ratio: f64,
    met: Option<bool>,
}

#[derive(Serialize)]
struct Latency {
    connections: String,
    direct_median_us: Option<f64>,
    front_median_us: Option<f64>,
    added_median_us: Option<f64>,
    direct_p99_us: Option<f64>,
    front_p99_us: Option<f64>,
    target_added_us: f64,
    met: Option<bool>,
}

#[derive(Serialize)]
struct Results {
    part: &'static str,
    time: String,
    host: String,
    status: String,
    requests_per_latency_round: u32,
    latency: Vec<Latency>,
    throughput: Vec<Throughput>,
}

/// h2load's "finished in ..., N req/s" figure.
fn req_per_sec(text: &str) -> Option<f64> {
    let l = text.lines().find(|l| l.starts_with("finished in"))?;
    let rs = l.split(',').find(|p| p.contains("req/s"))?;
    rs.split_whitespace().next()?.parse().ok()
}

pub fn run(ctx: &Ctx) {
    tracing::info!("part intercept: a front without an intercept against the service directly");
    let mut w: World = ctx.world("intercept");
    let mut o = Ovl::new(ctx, &w, "intercept");
    let caller = o.host(&mut w, "caller", 2);
    let hub = w.hub.clone();
    let dir = hub.dir.display().to_string();
    let _ = std::fs::create_dir_all(hub.dir.join("www"));
    let _ = std::fs::write(hub.dir.join("www/small"), vec![b'x'; 128]);
    let _ = std::fs::write(hub.dir.join("www/large"), vec![b'x'; 1 << 20]);
    let conf = hub.dir.join("nginx.conf");
    let _ = std::fs::write(&conf, NGINX.replace("DIR", &dir));
    let catalog = hub.dir.join("catalog.toml");
    let _ = std::fs::write(
        &catalog,
        format!("[services.orders]\naddress = \"{ADDRESS}\"\nfront = \"{FRONT}\"\n"),
    );
    let conf = conf.display().to_string();
    w.spawn(&hub, "nginx", &[], &["nginx", "-c", &conf]);
    let listen = format!(
        "TCP-LISTEN:{},bind=10.78.0.1,fork,reuseaddr,nodelay",
        &SOCAT[10..]
    );
    let to = format!("TCP:{ADDRESS},nodelay");
    w.spawn(&hub, "socat", &[], &["socat", &listen, &to]);
    let catalog = catalog.display().to_string();
    let mut status = "ok".to_string();
    let mut fail = |ctx: &Ctx, e: String| {
        ctx.fail("intercept", &e);
        status = format!("failed ({e})");
    };
    let up = ctx.have_binaries()
        && o.relay_start(&w, &["--catalog", &catalog])
            .map_err(|e| fail(ctx, e))
            .is_ok()
        && {
            let answers = |a: &str| {
                ctx::ok(
                    &w,
                    &caller,
                    5,
                    &format!("curl -sf --max-time 2 -o /dev/null http://{a}/small"),
                )
            };
            let ok = ctx::wait(10, "nginx and the front to answer", || {
                answers(ADDRESS) && answers(FRONT) && answers(SOCAT)
            });
            if !ok {
                fail(ctx, "nginx, the front or socat does not answer".into());
            }
            ok
        };
    let n = ctx.o.requests;
    let mut lat: Vec<LatencyLine> = Vec::new();
    if up {
        tracing::info!(
            "  latency: {n} GETs each to {ADDRESS} and {FRONT}, new then kept-alive connections"
        );
        let res = hub.dir.join("latency.json");
        let o_lat = ctx::run(
            &w,
            &caller,
            u64::from(n / 5 + 120),
            &format!(
                "{} probe latency --direct {ADDRESS} --via {FRONT} -n {n} --path /small --result {} 2>>{}",
                ctx.me.display(),
                res.display(),
                ctx.log("intercept-probe.log").display()
            ),
        );
        if o_lat.status.success() {
            lat = std::fs::read_to_string(&res)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
        } else {
            ctx.tail(&ctx.log("intercept-probe.log"));
            fail(ctx, "the latency probe failed".into());
        }
    }
    let mut tput = Vec::new();
    for (k, (name, path)) in [
        ("128 B responses, 8 connections", "small"),
        ("1 MiB responses, 8 connections", "large"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = Throughput {
            name,
            target_ratio: THROUGHPUT,
            ..Default::default()
        };
        let requests = REQUESTS[k];
        for _ in 0..if up { ROUNDS } else { 0 } {
            for (a, into) in [
                (ADDRESS, &mut t.direct_req_s),
                (FRONT, &mut t.front_req_s),
                (SOCAT, &mut t.socat_req_s),
            ] {
                let cmd = format!("h2load --h1 -c 8 -n {requests} http://{a}/{path}");
                match out(&w, &caller, 120, &cmd).as_deref().and_then(req_per_sec) {
                    Some(r) => into.push(r),
                    None => ctx.fail("intercept", &format!("h2load failed: {cmd}")),
                }
            }
        }
        t.median_direct = median(&t.direct_req_s);
        t.median_front = median(&t.front_req_s);
        t.median_socat = median(&t.socat_req_s);
        t.ratio = ratio(t.median_front, t.median_direct);
        t.socat_ratio = ratio(t.median_socat, t.median_direct);
        t.met = met_json(t.ratio, |r| r >= THROUGHPUT);
        tput.push(t);
    }
    o.down_all(&w);
    let latency: Vec<Latency> = ["fresh", "keepalive"]
        .iter()
        .map(|round| {
            let l = |who: &str| lat.iter().find(|l| l.round == *round && l.address == who);
            let (d, v) = (l("direct"), l("via"));
            let added = diff(v.map(|v| v.median_us), d.map(|d| d.median_us));
            Latency {
                connections: if *round == "fresh" {
                    "a new connection per request".into()
                } else {
                    "kept alive".into()
                },
                direct_median_us: d.map(|d| d.median_us),
                front_median_us: v.map(|v| v.median_us),
                added_median_us: added,
                direct_p99_us: d.map(|d| d.p99_us),
                front_p99_us: v.map(|v| v.p99_us),
                target_added_us: ADDED_US,
                met: met_json(added, |a| a < ADDED_US),
            }
        })
        .collect();
    let (when, host) = (now_utc(), host_desc());
    let mut lt = Table::new(&[
        "latency per GET",
        "direct (median µs)",
        "front (median µs)",
        "added (median µs)",
        "p99 direct / front (µs)",
        "target met (< 200 µs)",
    ]);
    for l in &latency {
        lt.row(vec![
            l.connections.clone(),
            fmt(l.direct_median_us, 0),
            fmt(l.front_median_us, 0),
            fmt(l.added_median_us, 0),
            format!("{} / {}", fmt(l.direct_p99_us, 0), fmt(l.front_p99_us, 0)),
            met(l.added_median_us, |a| a < ADDED_US).into(),
        ]);
    }
    let mut tt = Table::new(&[
        "throughput (h2load --h1)",
        "direct (req/s, median)",
        "front (req/s, median)",
        "front / direct",
        "target met (>= 80%)",
        "socat / direct (reference)",
    ]);
    for t in &tput {
        tt.row(vec![
            t.name.to_string(),
            fmt(t.median_direct, 0),
            fmt(t.median_front, 0),
            t.ratio
                .map_or("n/a".into(), |r| format!("{:.1}%", r * 100.0)),
            met(t.ratio, |r| r >= THROUGHPUT).into(),
            t.socat_ratio
                .map_or("n/a".into(), |r| format!("{:.1}%", r * 100.0)),
        ]);
    }
    let params = format!(
        "a caller host on the bridge calls nginx in the remote environment directly ({ADDRESS}) and through the relay's front without an intercept ({FRONT}); latency: {n} GETs of 128 B per address and connection mode, alternating; throughput: h2load, {ROUNDS} rounds alternating direct, front and socat ({SOCAT}, fork per connection), {} and {} requests per run",
        REQUESTS[0], REQUESTS[1]
    );
    println!(
        "\nintercept: {host} ({status})\n\n{}\n{}\n{params}",
        lt.plain(),
        tt.plain()
    );
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; {params}.\n\n{}\n{}",
        lt.markdown(),
        tt.markdown()
    );
    write_json(
        &ctx.out,
        "intercept",
        &Results {
            part: "intercept",
            time: when,
            host,
            status,
            requests_per_latency_round: n,
            latency,
            throughput: tput,
        },
    );
}

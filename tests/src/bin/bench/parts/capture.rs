//! Part `capture`: what the traffic capture costs. Two nodes in the same run, one with capture
//! on and one with `OVERLAY_CAPTURE_OFF=1`, each with nginx on 127.0.0.1 serving a 16 KiB file
//! over HTTP/1.1 and over h2c (prior knowledge), registered as services; h2load on the same
//! host calls them through their listeners (which tee every byte into the capture when it is
//! on). Rounds alternate on and off; the medians' ratio is the cost. Targets: at most 3% on
//! HTTP/1.1 and 5% on HTTP/2 throughput.

use crate::ctx::{out, Ctx};
use crate::ovl::Ovl;
use crate::report::{host_desc, now_utc, write_json, Table};
use crate::stats::{fmt, median};
use overlay_tests::world::World;
use serde::Serialize;

/// Requests per h2load run.
const REQUESTS: u32 = 20_000;
/// Rounds per protocol and node.
const ROUNDS: usize = 5;

#[derive(Serialize)]
struct Proto {
    name: &'static str,
    on_req_s: Vec<f64>,
    off_req_s: Vec<f64>,
    median_on: Option<f64>,
    median_off: Option<f64>,
    cost_percent: Option<f64>,
    target_percent: f64,
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
}

const NGINX: &str = "daemon off; worker_processes 1; pid DIR/nginx.pid; error_log DIR/nginx.err;
events { worker_connections 256; }
http { access_log off; keepalive_requests 100000;
  server { listen 127.0.0.1:18080; root DIR/www; }
  server { listen 127.0.0.1:18081 http2; root DIR/www; } }
";

/// h2load's "finished in ..., N req/s" figure.
fn req_per_sec(text: &str) -> Option<f64> {
    let l = text.lines().find(|l| l.starts_with("finished in"))?;
    let rs = l.split(',').find(|p| p.contains("req/s"))?;
    rs.split_whitespace().next()?.parse().ok()
}

pub fn run(ctx: &Ctx) {
    tracing::info!("part capture: h2load through listeners, capture on vs off, same run");
    let mut w: World = ctx.world("capture");
    let mut o = Ovl::new(ctx, &w, "capture");
    for (n, oct) in [("on", 2), ("off", 3)] {
        o.host(&mut w, n, oct);
    }
    let mut status = "ok".to_string();
    let mut addrs = Vec::new();
    let joined = ctx.have_binaries()
        && o.relay_start(&w, &[])
            .and_then(|_| o.token(&w, 2))
            .and_then(|()| o.join(&w, "on"))
            .and_then(|_| o.join_with(&w, "off", "OVERLAY_CAPTURE_OFF=1"))
            .map_err(|e| {
                ctx.fail("capture", &e);
                status = format!("failed ({e})");
            })
            .is_ok();
    if joined {
        for n in ["on", "off"] {
            let h = o.h(n).clone();
            let dir = h.dir.display().to_string();
            let _ = std::fs::create_dir_all(h.dir.join("www"));
            let _ = std::fs::write(h.dir.join("www/file"), vec![b'x'; 16 * 1024]);
            let conf = h.dir.join("nginx.conf");
            let _ = std::fs::write(&conf, NGINX.replace("DIR", &dir));
            let conf = conf.display().to_string();
            w.spawn(&h, "nginx", &[], &["nginx", "-c", &conf]);
            let mut a = Vec::new();
            for (svc, port, target) in [("h1", 8080, 18080), ("h2", 8081, 18081)] {
                let reg = o.ovl_out(
                    &w,
                    n,
                    &format!("register {svc} --port {port} --target {target} --json"),
                );
                let v: serde_json::Value = reg
                    .and_then(|r| serde_json::from_str(&r).ok())
                    .unwrap_or_default();
                a.push(v["address"].as_str().unwrap_or("").to_string());
            }
            addrs.push((n, h, a));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let mut protos = Vec::new();
    for (k, (name, port, flags, target)) in [
        ("HTTP/1.1", 8080, "--h1 -c 8", 3.0),
        ("HTTP/2 (h2c)", 8081, "-c 8 -m 16", 5.0),
    ]
    .into_iter()
    .enumerate()
    {
        let mut runs: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..if joined { ROUNDS } else { 0 } {
            for (i, (_, h, a)) in addrs.iter().enumerate() {
                let a = a.get(k).map_or("", String::as_str);
                let cmd = format!("h2load {flags} -n {REQUESTS} http://{a}:{port}/file");
                match out(&w, h, 120, &cmd).as_deref().and_then(req_per_sec) {
                    Some(r) => runs[i].push(r),
                    None => ctx.fail("capture", &format!("h2load failed: {cmd}")),
                }
            }
        }
        let (on, off) = (median(&runs[0]), median(&runs[1]));
        let cost = match (on, off) {
            (Some(a), Some(b)) if b > 0.0 => Some(100.0 * (1.0 - a / b)),
            _ => None,
        };
        let [on_req_s, off_req_s] = runs;
        protos.push(Proto {
            name,
            on_req_s,
            off_req_s,
            median_on: on,
            median_off: off,
            cost_percent: cost,
            target_percent: target,
        });
    }
    o.down_all(&w);
    let (when, host) = (now_utc(), host_desc());
    let mut t = Table::new(&[
        "through a listener",
        "capture on (req/s, median)",
        "capture off (req/s, median)",
        "cost",
        "target",
    ]);
    for p in &protos {
        t.row(vec![
            p.name.to_string(),
            fmt(p.median_on, 0),
            fmt(p.median_off, 0),
            p.cost_percent.map_or("-".into(), |c| format!("{c:.1}%")),
            format!("<= {}%", p.target_percent),
        ]);
    }
    let params = format!(
        "h2load, {REQUESTS} requests of a 16 KiB file per run, {ROUNDS} rounds alternating the two nodes"
    );
    println!("\ncapture: {host} ({status})\n\n{}\n{params}", t.plain());
    println!(
        "\nmarkdown (for docs/benchmarks.md):\n\nMeasured {when} on {host}; {params}.\n\n{}",
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
        },
    );
}

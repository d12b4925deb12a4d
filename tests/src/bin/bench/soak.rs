//! `overlay-bench soak` (scripts/soak.sh): a relay and three nodes in network namespaces
//! (prefix `ovs-`) under mixed load for a bounded time, watching the daemons' memory and file
//! descriptors. Not part of CI.
//!
//! World: the hub runs overlay-relay with a catalog naming "upstream", an HTTP server on host r
//! (the remote environment); nodes a, b, c join with a token; b serves "web" (an HTTP server on
//! its 127.0.0.1, `overlay register web --target`). Until the time is up, in rounds: a 3 s
//! iperf3 burst a -> b through the relay; 20 curls a -> http://web:8080 and 20 c ->
//! http://upstream:8080 (relay gateway); 20 DNS queries on c; every 2nd round an extra node d
//! joins, pings the relay and leaves; every 3rd round `overlay down` / `up` on c; every
//! --relay-every minutes (at half time in shorter runs) the relay is stopped (SIGTERM) and
//! started again, timed until a reaches b again. RSS and descriptors of the relay and the
//! daemons of a, b, c are sampled at the start, after the warm-up (a quarter of the run, at most
//! a minute), every minute and at the end, between rounds. "Flat": end RSS within 20 % + 5 MB,
//! descriptors within 20 % + 5, of the warm-up sample.
//!
//! Exit status: 0 when nothing crashed (failed requests are counted, not fatal); 1 when the
//! relay or a node daemon died on its own or logged a panic, or the world could not be set up;
//! 2 on bad usage. Logs: target/soak/ (emptied at each start).

use crate::ctx::{ok, out, run as run_in, wait, Ctx, Opts};
use crate::ovl::{Ovl, NODE_DNS, RELAY_OVL};
use crate::report::{fds, now_utc, rss_kb};
use crate::stats::Summary;
use clap::Parser;
use overlay_tests::World;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// overlay soak test: relay and three nodes under mixed load, in namespaces "ovs-*".
#[derive(Parser, Debug)]
#[command(
    name = "scripts/soak.sh",
    after_help = "Exit status: 0 nothing crashed; 1 a daemon died or panicked, or the world could not be set up; 2 bad usage.\nLogs: target/soak/."
)]
struct Args {
    /// Minutes to run (at most 1440)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1440))]
    minutes: u32,
    /// Restart the relay every M minutes (at half time when the run is shorter than two)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    relay_every: u32,
}

const ACTIVITIES: [&str; 7] = [
    "iperf3",
    "curl-web",
    "curl-remote",
    "dns",
    "join-leave",
    "down-up",
    "relay-restart",
];
const ROLES: [&str; 4] = ["relay", "a", "b", "c"];

/// A pid for people: the number, or `-`.
fn show(pid: Option<u32>) -> String {
    pid.map_or("-".to_string(), |p| p.to_string())
}

struct Sample {
    label: String,
    elapsed: u64,
    role: &'static str,
    pid: Option<u32>,
    rss: Option<u64>,
    fds: Option<usize>,
}

struct Soak<'c> {
    w: World,
    o: Ovl<'c>,
    t0: Instant,
    ok: BTreeMap<&'static str, u32>,
    fail: BTreeMap<&'static str, u32>,
    crashes: Vec<String>,
    pid: BTreeMap<&'static str, Option<u32>>,
    samples: Vec<Sample>,
    reconnect: Vec<f64>,
    iperf: Vec<f64>,
    port: u16,
    joins: u32,
}

impl Soak<'_> {
    fn say(&self, msg: &str) {
        println!("[{:4}s] {msg}", self.t0.elapsed().as_secs());
    }

    fn count(&mut self, what: &'static str, good: bool) {
        *if good { &mut self.ok } else { &mut self.fail }
            .entry(what)
            .or_default() += 1;
    }

    fn crashed(&mut self, what: String) {
        self.say(&format!("CRASH: {what}"));
        self.crashes.push(what);
    }

    fn relay_pid(&self) -> Option<u32> {
        self.o.relay_pid
    }

    /// The relay and the daemons of a, b, c must still run; what died is restarted.
    fn check_alive(&mut self) {
        if let Some(p) = self.relay_pid() {
            if !self.w.alive(p) {
                self.crashed(format!(
                    "the relay (pid {p}) exited on its own; see target/soak/soak-relay.log"
                ));
                self.o.relay_pid = None;
                let _ = self.o.relay_start(
                    &self.w,
                    &[
                        "--catalog",
                        &self.w.dir.join("catalog.toml").to_string_lossy(),
                    ],
                );
            }
        }
        for n in ["a", "b", "c"] {
            if let Some(Some(p)) = self.pid.get(n).copied() {
                if !std::path::Path::new(&format!("/proc/{p}")).exists() {
                    self.crashed(format!(
                        "the daemon of node {n} (pid {p}) exited on its own; see its daemon.log"
                    ));
                    let up = self.o.shielded(&self.w, n, "up").status.success();
                    let np = if up { self.o.pid(&self.w, n) } else { None };
                    self.pid.insert(n, np);
                }
            }
        }
    }

    fn sample(&mut self, label: &str) {
        let elapsed = self.t0.elapsed().as_secs();
        let mut line = String::new();
        for role in ROLES {
            let pid = if role == "relay" {
                self.relay_pid()
            } else {
                self.pid.get(role).copied().flatten()
            };
            let (rss, fds) = (pid.and_then(rss_kb), pid.and_then(fds));
            line.push_str(&format!(
                "{role} {} kB {} fds; ",
                rss.map_or("-".into(), |v| v.to_string()),
                fds.map_or("-".into(), |v| v.to_string())
            ));
            self.samples.push(Sample {
                label: label.to_string(),
                elapsed,
                role,
                pid,
                rss,
                fds,
            });
        }
        self.say(&format!("sample {label}: {line}"));
    }

    fn iperf_burst(&mut self, ctx: &Ctx) {
        self.port += 1;
        let (port, b_addr) = (self.port, self.o.addr["b"].clone());
        let b = self.o.h("b").clone();
        let a = self.o.h("a").clone();
        let srv = self.w.spawn_to(
            &b,
            &ctx.log("iperf3-server.log"),
            &[],
            &["iperf3", "-s", "-1", "-p", &port.to_string(), "-B", &b_addr],
        );
        let mut good = false;
        if wait(5, "iperf3 server", || {
            ok(
                &self.w,
                &b,
                5,
                &format!("ss -Hltn 'sport = :{port}' | grep -q ."),
            )
        }) {
            let o = run_in(
                &self.w,
                &a,
                20,
                &format!("iperf3 -c {b_addr} -p {port} -t 3 -f m -J --connect-timeout 3000"),
            );
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            crate::ctx::append(&ctx.log("iperf3.log"), &text);
            if o.status.success() {
                good = true;
                if let Some(bps) = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["end"]["sum_received"]["bits_per_second"].as_f64())
                {
                    self.iperf.push(bps / 1e6);
                }
            }
        }
        self.w.stop(srv);
        self.count("iperf3", good);
    }

    fn curls(&mut self, ctx: &Ctx, what: &'static str, node: &str, url: &str) {
        let h = self.o.h(node).clone();
        for _ in 0..20 {
            let good = ok(
                &self.w,
                &h,
                10,
                &format!("curl -sf --max-time 5 -o /dev/null {url}"),
            );
            if !good {
                crate::ctx::append(
                    &ctx.log("curl.log"),
                    &format!("{} {node} {url} failed\n", now_utc()),
                );
            }
            self.count(what, good);
        }
    }

    fn dns(&mut self, ctx: &Ctx) {
        let c = self.o.h("c").clone();
        for _ in 0..10 {
            for name in ["web.ovl.internal", "upstream.ovl.internal"] {
                let ans = out(
                    &self.w,
                    &c,
                    5,
                    &format!("dig +short +tries=1 +time=2 @{NODE_DNS} {name}"),
                )
                .unwrap_or_default();
                let good = ans.trim().parse::<std::net::Ipv4Addr>().is_ok();
                if !good {
                    crate::ctx::append(
                        &ctx.log("dns.log"),
                        &format!("{} {name}: '{}'\n", now_utc(), ans.trim()),
                    );
                }
                self.count("dns", good);
            }
        }
    }

    fn join_leave(&mut self) {
        self.joins += 1;
        let d = self.o.h("d").clone();
        for sub in ["state", "run"] {
            let _ = std::fs::remove_dir_all(d.dir.join(sub));
            std::fs::create_dir_all(d.dir.join(sub)).expect("node directories");
        }
        let mut good = self.o.join(&self.w, "d").is_ok()
            && wait(10, "d to reach the relay", || {
                ok(&self.w, &d, 5, &format!("ping -n -c 1 -W 1 {RELAY_OVL}"))
            });
        if !self.o.ovl(&self.w, "d", "leave").status.success() {
            good = false;
            // The daemon, so that the next round starts clean.
            let _ = overlay_tests::world::sh_output(&format!(
                "ip netns pids {} | xargs -r kill -9",
                d.ns
            ));
        }
        self.o.forget("d");
        if !good {
            self.o.note(&format!("join/leave {} failed", self.joins));
        }
        self.count("join-leave", good);
    }

    fn down_up(&mut self) {
        let good = self.o.ovl(&self.w, "c", "down").status.success()
            && self.o.shielded(&self.w, "c", "up").status.success()
            && wait(15, "c to connect again", || {
                self.o
                    .ovl_out(&self.w, "c", "status --json")
                    .is_some_and(|s| s.contains("\"connected\""))
            });
        let p = self.o.pid(&self.w, "c");
        self.pid.insert("c", p);
        self.count("down-up", good);
    }

    fn relay_restart(&mut self) {
        self.say("restarting the relay");
        if let Some(p) = self.o.relay_pid.take() {
            self.w.stop(p);
        }
        let t = Instant::now();
        let cat = self
            .w
            .dir
            .join("catalog.toml")
            .to_string_lossy()
            .into_owned();
        let b = self.o.addr["b"].clone();
        let a = self.o.h("a").clone();
        let good = self.o.relay_start(&self.w, &["--catalog", &cat]).is_ok()
            && wait(60, "a to reach b after the relay restart", || {
                ok(&self.w, &a, 5, &format!("ping -n -c 1 -W 1 {b}"))
            });
        if good {
            let s = (t.elapsed().as_secs_f64() * 10.0).round() / 10.0;
            self.reconnect.push(s);
            self.say(&format!(
                "the relay is back (pid {}); a reached b {s} s after the restart began",
                show(self.o.relay_pid)
            ));
        }
        self.count("relay-restart", good);
    }
}

pub fn main(args: &[String]) -> i32 {
    let a = match Args::try_parse_from(
        std::iter::once("scripts/soak.sh".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    crate::init_tracing();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("soak.sh needs root (network namespaces): run sudo scripts/soak.sh");
        return 1;
    }
    if let Err(e) = crate::require_tools(&[
        "ip", "timeout", "python3", "curl", "dig", "iperf3", "ping", "ss",
    ]) {
        eprintln!("{e}");
        return 1;
    }
    let opts = Opts {
        runs: None,
        time: 3,
        pings: 0,
        services: 0,
        rate: 0,
        registrations: 0,
        fill: 0,
        requests: 0,
        restarts: 0,
        peers: 0,
        steady: 0,
        cycles: 0,
        no_build: true,
    };
    let mut ctx = Ctx::new(opts, crate::repo_root());
    ctx.out = ctx.root.join("target").join("soak");
    ctx.logs = ctx.out.clone();
    if !ctx.have_binaries() {
        eprintln!(
            "soak.sh: {} or {} is missing; build them with: cargo build --release --bins",
            ctx.overlay.display(),
            ctx.relay.display()
        );
        return 1;
    }
    let Some(_lock) = crate::lock("/run/ovs-soak.lock") else {
        eprintln!("another soak is already running.");
        return 1;
    };
    let _ = std::fs::remove_dir_all(&ctx.out);
    if std::fs::create_dir_all(&ctx.out).is_err() {
        eprintln!("soak.sh: cannot create {}", ctx.out.display());
        return 1;
    }
    let out_dir = ctx.out.clone();
    crate::on_signals(move || crate::give_back(&out_dir));
    overlay_tests::world::remove_stale("ovs-");
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        soak(&ctx, a.minutes, a.relay_every)
    }))
    .unwrap_or(1);
    crate::give_back(&ctx.out);
    crate::wait_if_interrupted();
    code
}

fn soak(ctx: &Ctx, minutes: u32, relay_every: u32) -> i32 {
    let t0 = Instant::now();
    println!(
        "[   0s] soak: {minutes} minute(s); logs in {}/",
        ctx.rel(&ctx.out)
    );
    let mut w = World::with_prefix("ovs-", "soak");
    let mut o = Ovl::new(ctx, &w, "soak");
    for (i, n) in ["a", "b", "c", "d", "r"].into_iter().enumerate() {
        o.host(&mut w, n, (2 + i) as u8);
    }
    let r = o.h("r").clone();
    let b = o.h("b").clone();
    let www = w.dir.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "hello from the soak\n").expect("index");
    let catalog = w.dir.join("catalog.toml");
    std::fs::write(
        &catalog,
        format!(
            "[services.upstream]\naddress = \"{}:8081\"\nport = 8080\n",
            r.ip
        ),
    )
    .expect("catalog");
    let www_s = www.to_string_lossy().into_owned();
    w.spawn_to(
        &r,
        &ctx.log("remote-http.log"),
        &[],
        &[
            "python3",
            "-m",
            "http.server",
            "--bind",
            &r.ip,
            "--directory",
            &www_s,
            "8081",
        ],
    );
    w.spawn_to(
        &b,
        &ctx.log("web-http.log"),
        &[],
        &[
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            &www_s,
            "18080",
        ],
    );
    let cat = catalog.to_string_lossy().into_owned();
    if let Err(e) = o.relay_start(&w, &["--catalog", &cat]) {
        eprintln!("soak.sh: {e}.");
        return 1;
    }
    if let Err(e) = o
        .admin(&w, "token create --uses 10000 --ttl 48h")
        .map(|t| o.token = t.trim().to_string())
    {
        eprintln!("soak.sh: {e}.");
        return 1;
    }
    let mut pid = BTreeMap::new();
    for n in ["a", "b", "c"] {
        match o.join(&w, n) {
            Ok(addr) => {
                let p = o.pid(&w, n);
                println!(
                    "[{:4}s] node {n}: {addr} (daemon pid {})",
                    t0.elapsed().as_secs(),
                    show(p)
                );
                pid.insert(n, p);
            }
            Err(e) => {
                eprintln!("soak.sh: {e}.");
                return 1;
            }
        }
    }
    if !o
        .ovl(&w, "b", "register web --port 8080 --target 18080")
        .status
        .success()
    {
        eprintln!("soak.sh: overlay register web failed on b.");
        return 1;
    }
    let (a, c) = (o.h("a").clone(), o.h("c").clone());
    if !wait(20, "web and upstream to answer from a and c", || {
        ok(
            &w,
            &a,
            5,
            "curl -sf --max-time 2 -o /dev/null http://web:8080/",
        ) && ok(
            &w,
            &c,
            5,
            "curl -sf --max-time 2 -o /dev/null http://upstream:8080/",
        )
    }) {
        println!(
            "[{:4}s] warning: web or upstream does not answer yet (the rounds count the failures)",
            t0.elapsed().as_secs()
        );
    }
    let mut s = Soak {
        w,
        o,
        t0,
        ok: ACTIVITIES.iter().map(|a| (*a, 0)).collect(),
        fail: ACTIVITIES.iter().map(|a| (*a, 0)).collect(),
        crashes: Vec::new(),
        pid,
        samples: Vec::new(),
        reconnect: Vec::new(),
        iperf: Vec::new(),
        port: 5300,
        joins: 0,
    };
    let duration = Duration::from_secs(u64::from(minutes) * 60);
    let mut every = Duration::from_secs(u64::from(relay_every) * 60);
    if duration < 2 * every {
        every = duration / 2;
    }
    let start = Instant::now();
    let end = start + duration;
    let mut next_sample = start + Duration::from_secs(60);
    let mut next_restart = start + every;
    let warm = (duration / 4).min(Duration::from_secs(60));
    let mut warmed = false;
    s.sample("start");
    let mut round = 0u32;
    while Instant::now() < end {
        round += 1;
        s.iperf_burst(ctx);
        s.check_alive();
        s.curls(ctx, "curl-web", "a", "http://web:8080/");
        s.curls(ctx, "curl-remote", "c", "http://upstream:8080/");
        s.dns(ctx);
        s.check_alive();
        if round.is_multiple_of(2) {
            s.join_leave();
        }
        if round.is_multiple_of(3) {
            s.down_up();
        }
        s.check_alive();
        let now = Instant::now();
        if !warmed && now - start >= warm {
            s.sample("warm");
            warmed = true;
        }
        if now >= next_restart && now < end {
            s.relay_restart();
            next_restart += every;
            s.check_alive();
        }
        let now = Instant::now();
        if now >= next_sample && now < end {
            let label = format!("min{}", ((now - start).as_secs() + 30) / 60);
            s.sample(&label);
            next_sample += Duration::from_secs(60);
        }
    }
    s.check_alive();
    // The last connections close (curl's, iperf3's): the end sample is taken at rest.
    wait(5, "the last connections to close", || {
        !ok(&s.w, &a, 5, "ss -Htn state established | grep -q .")
    });
    s.sample("end");
    report(ctx, &mut s, minutes, round)
}

fn report(ctx: &Ctx, s: &mut Soak, minutes: u32, rounds: u32) -> i32 {
    let mut logs = vec![ctx.log("soak-relay.log")];
    for n in ["a", "b", "c", "d"] {
        let daemon = s.o.h(n).dir.join("state").join("daemon.log");
        if daemon.exists() {
            let copy = ctx.log(&format!("daemon-{n}.log"));
            let _ = std::fs::copy(&daemon, &copy);
            logs.push(copy);
        }
    }
    for f in logs {
        if let Some(l) = std::fs::read_to_string(&f).ok().and_then(|t| {
            t.lines()
                .find(|l| l.contains("panicked"))
                .map(str::to_string)
        }) {
            s.crashed(format!("a panic in {}: {l}", ctx.rel(&f)));
        }
    }
    println!(
        "\nsoak: {minutes} minute(s), {rounds} rounds, {}\n",
        now_utc()
    );
    println!("{:<14} {:>8} {:>8}", "activity", "ok", "failed");
    for a in ACTIVITIES {
        println!("{a:<14} {:>8} {:>8}", s.ok[a], s.fail[a]);
    }
    if !s.reconnect.is_empty() {
        let v: Vec<String> = s.reconnect.iter().map(|x| x.to_string()).collect();
        println!(
            "after each relay restart, a reached b again after: {} s",
            v.join(" ")
        );
    }
    match Summary::of(&s.iperf) {
        Some(x) => println!(
            "iperf3 bursts a -> b (3 s each), Mbit/s: median {:.0}, min {:.0}, max {:.0} over {}",
            x.median, x.min, x.max, x.n
        ),
        None => println!("iperf3 bursts a -> b (3 s each), Mbit/s: none"),
    }
    println!("\nsamples (RSS kB / open fds):");
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for x in &s.samples {
        println!(
            "  {:<6} {:>5}s  {:<5} pid {:<7} {:>8} kB {:>5} fds",
            x.label,
            x.elapsed,
            x.role,
            dash(x.pid.map(|v| v.to_string())),
            dash(x.rss.map(|v| v.to_string())),
            dash(x.fds.map(|v| v.to_string()))
        );
    }
    println!();
    let mut flat = true;
    for role in ROLES {
        let find = |l: &str| s.samples.iter().find(|x| x.label == l && x.role == role);
        let (Some(wm), Some(en)) = (find("warm"), find("end")) else {
            println!("{role}: no warm-up or end sample");
            flat = false;
            continue;
        };
        let (Some(wr), Some(er), Some(wf), Some(ef)) = (wm.rss, en.rss, wm.fds, en.fds) else {
            println!("{role}: no warm-up or end sample");
            flat = false;
            continue;
        };
        let rss_flat = er as f64 <= wr as f64 * 1.2 + 5120.0;
        let fds_flat = ef as f64 <= wf as f64 * 1.2 + 5.0;
        let word = |f: bool| if f { "flat" } else { "GROWING" };
        let note = if wm.pid != en.pid {
            format!(
                " (restarted during the soak: pid {} -> {}, so this compares two processes)",
                show(wm.pid),
                show(en.pid)
            )
        } else {
            String::new()
        };
        println!(
            "{role}: RSS {wr} -> {er} kB {}; fds {wf} -> {ef} {}{note}",
            word(rss_flat),
            word(fds_flat)
        );
        flat &= rss_flat && fds_flat;
    }
    if flat {
        println!("memory and descriptors: flat (end within 20 % + 5 MB of RSS, 20 % + 5 fds of the warm-up sample)");
    } else {
        println!("memory and descriptors: NOT flat for every process (see above)");
    }
    s.o.down_all(&s.w);
    if s.crashes.is_empty() {
        println!("crashes: none");
        0
    } else {
        println!("crashes: {}", s.crashes.len());
        for c in &s.crashes {
            println!("  {c}");
        }
        1
    }
}

//! Part `restart`: `overlay dev` (as uid 65534, never root) runs a small python HTTP service.
//! Measured: the latency its listener on the overlay address adds per request (against calling
//! $PORT directly, alternating, same run); `overlay restart` until a new process answers, minus
//! the command's own start (started directly, alternating with the restarts); the same for a
//! worker (listens nowhere); and restarts that drain one open connection.

mod report;
mod scripts;

use report::report;
use scripts::{HOLD_PY, SERVER_PY, WORKER_PY};

use crate::ctx::{append, ms_since, run as run_in, wait, Ctx};
use crate::ovl::Ovl;
use crate::probe::{read_result, LatencyLine};
use crate::stats::fmt;
use overlay_tests::world::shell_quote;
use overlay_tests::{Host, World};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `overlay dev` runs as this user (nobody), never as root.
pub(super) const DEV_UID: u32 = 65534;
/// The service's python: every user can run it (a pyenv one under /root may not).
const DEV_PYTHON: &str = "/usr/bin/python3";
/// "echo" with `exec` (python replaces the `sh -c` overlay dev starts), "echo-sh" without (sh
/// stays and python is its child, as with most commands in overlay.toml). Latency is measured
/// on echo, restarts on both.
const SERVICES: [&str; 2] = ["echo", "echo-sh"];
/// `drain = "2s"` for the service "held".
pub(super) const DRAIN_S: f64 = 2.0;

#[derive(Default, Serialize, Clone)]
pub(super) struct Svc {
    pub(super) service: String,
    pub(super) command: String,
    pub(super) own_start_ms: Vec<f64>,
    pub(super) restart_until_serving_ms: Vec<f64>,
    pub(super) printed_ms: Vec<f64>,
}

#[derive(Serialize)]
pub(super) struct Drain {
    pub(super) client_closes_after_s: f64,
    pub(super) restart_ms: f64,
    pub(super) drained: Option<u64>,
    pub(super) closed: Option<u64>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) lat: Vec<LatencyLine>,
    pub(super) svcs: Vec<Svc>,
    pub(super) worker: Svc,
    pub(super) worker_first: Option<f64>,
    pub(super) drains: Vec<Drain>,
    pub(super) left: String,
}

/// The parts of an `overlay dev` output line "HH:MM:SS.mmm NAME | MESSAGE".
fn dev_line(l: &str) -> Option<(&str, &str)> {
    let (left, msg) = l.split_once(" | ")?;
    let mut it = left.split_whitespace();
    let ts = it.next()?;
    if !ts
        .chars()
        .all(|c| c.is_ascii_digit() || c == ':' || c == '.')
    {
        return None;
    }
    Some((it.next()?, msg))
}

/// (local port, overlay address) of the last "ready in N ms: pid P, local port X, at A:P" line
/// of `svc`.
fn ready(log: &str, svc: &str) -> Option<(u16, String)> {
    log.lines()
        .rev()
        .filter_map(dev_line)
        .filter(|(n, m)| *n == svc && m.contains("ready in "))
        .filter_map(|(_, m)| {
            let port = m
                .split("local port ")
                .nth(1)?
                .split(',')
                .next()?
                .trim()
                .parse()
                .ok()?;
            let addr = m
                .split(", at ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_string();
            addr.contains(':').then_some((port, addr))
        })
        .next()
}

/// The N of "restarted in N ms".
fn printed(out: &str) -> Option<f64> {
    out.split("restarted in ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// "... ; N connection(s) drained, M closed": (N, M).
fn drained(out: &str) -> (Option<u64>, Option<u64>) {
    let Some(i) = out.find(" drained, ") else {
        return (None, None);
    };
    let n = out[..i]
        .rsplit("; ")
        .next()
        .and_then(|s| s.split_whitespace().next()?.parse().ok());
    let m = out[i + 10..]
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok());
    (n, m)
}

fn worker_lines(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(dev_line)
        .filter(|(n, m)| *n == "worker" && m.starts_with("worker up"))
        .count()
}

/// `cmd` run directly in `host` (`ip netns exec`, no shell in between, so the timing carries
/// as little overhead as `overlay restart` has).
fn direct(host: &Host, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &host.ns])
        .args(args)
        .output()
        .expect("ip netns exec runs")
}

struct Dev<'a> {
    ctx: &'a Ctx,
    w: &'a World,
    a: Host,
    svc_dir: PathBuf,
    /// VAR=VALUE for `overlay` run as the developer.
    env: Vec<String>,
    log: PathBuf,
    cmds: Vec<(String, String)>,
}

impl Dev<'_> {
    fn cmd(&self, svc: &str) -> &str {
        self.cmds
            .iter()
            .find(|(s, _)| s == svc)
            .map_or("", |(_, c)| c)
    }

    fn overlay(&self, args: &[&str]) -> std::process::Output {
        let overlay = self.ctx.overlay.to_string_lossy().into_owned();
        let mut v: Vec<&str> = vec!["env"];
        v.extend(self.env.iter().map(String::as_str));
        v.push(&overlay);
        v.extend_from_slice(args);
        direct(&self.a, &v)
    }

    fn env_line(&self) -> String {
        self.env.join(" ")
    }

    /// The command started directly (same user, same `sh -c`, a port of its own), timed until
    /// it answers a GET.
    fn own_start(&self, svc: &str, r: u32) -> Result<f64, String> {
        let port = 19000 + r;
        let res = self.svc_dir.join(format!("own-{svc}-{r}.json"));
        let cmd = format!(
            "{} probe http 127.0.0.1 {port} --stop-cmd --timeout 20 --result {} -- setpriv --reuid {DEV_UID} --regid {DEV_UID} --clear-groups env -C {} PORT={port} sh -c {} 2>>{}",
            self.ctx.me.display(),
            res.display(),
            self.svc_dir.display(),
            shell_quote(self.cmd(svc)),
            self.ctx.log("restart-probe.log").display()
        );
        let _ = run_in(self.w, &self.a, 40, &cmd);
        read_result(&res).and_then(|p| p.reached_ms).ok_or_else(|| {
            self.ctx.tail(&self.ctx.log("restart-probe.log"));
            format!("{svc} run {r}: the command started directly did not answer within 20 s")
        })
    }

    /// `overlay restart SVC`, timed until a GET at the overlay address answers from a new
    /// process: (until serving, printed "restarted in").
    fn restart(&self, svc: &str, addr: &str, r: u32) -> Result<(f64, Option<f64>), String> {
        let old = crate::ctx::out(
            self.w,
            &self.a,
            10,
            &format!("curl -s --max-time 5 http://{addr}/"),
        )
        .unwrap_or_default();
        if !old.starts_with("pid") {
            return Err(format!(
                "{svc} run {r}: the service did not answer at {addr} before the restart"
            ));
        }
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "80"));
        let (res, out) = (
            self.svc_dir.join("restart.json"),
            self.svc_dir.join("restart.out"),
        );
        let cli = self.ctx.log("restart-cli.log");
        let cmd = format!(
            "{} probe http {host} {port} --not-body {} --timeout 30 --result {} --cmd-out {} -- env {} {} restart {svc} 2>>{}",
            self.ctx.me.display(),
            shell_quote(old.trim()),
            res.display(),
            out.display(),
            self.env_line(),
            self.ctx.overlay.display(),
            cli.display()
        );
        let _ = std::fs::remove_file(&res);
        let _ = run_in(self.w, &self.a, 60, &cmd);
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        append(&cli, &text);
        let p =
            read_result(&res).ok_or_else(|| format!("{svc} run {r}: the probe did not report"))?;
        if p.cmd_rc != Some(0) {
            self.ctx.tail(&cli);
            return Err(format!(
                "{svc} run {r}: overlay restart failed (status {:?})",
                p.cmd_rc
            ));
        }
        let reached = p.reached_ms.ok_or_else(|| {
            self.ctx.tail(&self.log);
            format!("{svc} run {r}: no answer from a new process at {addr} within 30 s")
        })?;
        tracing::info!(
            "  {svc} {r}/{}: overlay restart until the new process answers {reached} ms (printed \"restarted in {} ms\"; {} -> {})",
            self.ctx.o.restarts,
            fmt(printed(&text), 0),
            old.trim(),
            p.detail.unwrap_or_default()
        );
        Ok((reached, printed(&text)))
    }

    /// The worker's own start (its command run directly until it printed its line), and
    /// `overlay restart worker` until the new worker printed its line.
    fn worker(&self, st: &mut State, r: u32) -> Result<(), String> {
        let svc = self.svc_dir.to_string_lossy().into_owned();
        let t0 = Instant::now();
        let o = direct(
            &self.a,
            &[
                "setpriv",
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "env",
                "-C",
                &svc,
                "WORKER_ONCE=1",
                "PORT=1",
                "sh",
                "-c",
                self.cmd("worker"),
            ],
        );
        let own = ms_since(t0);
        if !o.status.success() {
            return Err(format!("worker run {r}: its command did not run directly"));
        }
        let n0 = worker_lines(&self.log);
        let t0 = Instant::now();
        let o = self.overlay(&["restart", "worker"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if !o.status.success() {
            return Err(format!(
                "worker run {r}: overlay restart failed: {}",
                text.trim()
            ));
        }
        let end = Instant::now() + Duration::from_secs(10);
        while worker_lines(&self.log) <= n0 {
            if Instant::now() > end {
                self.ctx.tail(&self.log);
                return Err(format!(
                    "worker run {r}: the new worker printed nothing within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let total = ms_since(t0);
        append(&self.ctx.log("restart-cli.log"), &text);
        st.worker.own_start_ms.push(own.round());
        st.worker.restart_until_serving_ms.push(total.round());
        st.worker.printed_ms.extend(printed(&text));
        tracing::info!("  worker {r}/{}: own start {own:.0} ms; overlay restart until the new worker printed {total:.0} ms", self.ctx.o.restarts);
        Ok(())
    }

    /// Restarts "held" while one connection is open that its client closes after `hold` s.
    fn drain(&self, st: &mut State, addr: &str, hold: f64) -> Result<(), String> {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "80"));
        let ready = self.svc_dir.join("held.ready");
        let _ = std::fs::remove_file(&ready);
        let hold_py = self.svc_dir.join("hold.py").to_string_lossy().into_owned();
        let pid = self.w.spawn_to(
            &self.a,
            &self.ctx.log("restart-hold.log"),
            &[],
            &[
                "python3",
                &hold_py,
                host,
                port,
                &hold.to_string(),
                &ready.to_string_lossy(),
            ],
        );
        if !wait(10, "the drain client to hold its connection", || {
            ready.exists()
        }) {
            self.ctx.tail(&self.ctx.log("restart-hold.log"));
            return Err(format!(
                "drain: the client did not get an answer from held at {addr}"
            ));
        }
        let t0 = Instant::now();
        let o = self.overlay(&["restart", "held"]);
        let ms = ms_since(t0).round();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        append(&self.ctx.log("restart-cli.log"), &text);
        self.w.stop(pid);
        if !o.status.success() {
            return Err(format!(
                "drain: overlay restart held failed: {}",
                text.trim()
            ));
        }
        let (d, c) = drained(&text);
        tracing::info!("  drain: a connection its client closes after {hold} s, drain = {DRAIN_S}s: overlay restart took {ms} ms; {d:?} drained, {c:?} closed");
        st.drains.push(Drain {
            client_closes_after_s: hold,
            restart_ms: ms,
            drained: d,
            closed: c,
        });
        Ok(())
    }
}

fn dev_ready(log: &Path) -> bool {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    SERVICES
        .iter()
        .chain(&["held"])
        .all(|s| ready(&text, s).is_some())
        && text
            .lines()
            .filter_map(dev_line)
            .any(|(n, m)| n == "worker" && m.starts_with("[overlay] ready in"))
}

fn measure(
    ctx: &Ctx,
    w: &World,
    o: &mut Ovl,
    st: &mut State,
    dev_pid: &mut Option<u32>,
) -> Result<(), String> {
    if !Path::new(DEV_PYTHON).exists() {
        return Err(format!(
            "{DEV_PYTHON} is missing (the service runs as uid {DEV_UID})"
        ));
    }
    o.relay_start(w, &[])?;
    o.token(w, 1)?;
    // Joined "through sudo" by the developer: the daemon lets that user register services.
    o.join_with(w, "a", &format!("SUDO_UID={DEV_UID} SUDO_GID={DEV_UID}"))?;
    let a = o.h("a").clone();
    // Like /run: the daemon's socket and the developer's session sockets side by side. The
    // developer's own state directory (logs), and the service's files.
    let run_dir = a.dir.join("run");
    let (dev_dir, svc_dir) = (a.dir.join("dev"), a.dir.join("svc"));
    for d in [&dev_dir, &svc_dir] {
        std::fs::create_dir_all(d).expect("restart directories");
    }
    let sh = |c: &str| overlay_tests::world::sh(c);
    sh(&format!(
        "chmod 1777 {} && chown {DEV_UID}:{DEV_UID} {}",
        run_dir.display(),
        dev_dir.display()
    ));
    for (f, text) in [
        ("server.py", SERVER_PY),
        ("worker.py", WORKER_PY),
        ("hold.py", HOLD_PY),
    ] {
        std::fs::write(svc_dir.join(f), text).expect("service files");
    }
    let s = svc_dir.display();
    let cmds = vec![
        (
            "echo".to_string(),
            format!("exec {DEV_PYTHON} {s}/server.py"),
        ),
        ("echo-sh".to_string(), format!("{DEV_PYTHON} {s}/server.py")),
        (
            "worker".to_string(),
            format!("exec {DEV_PYTHON} {s}/worker.py"),
        ),
        (
            "held".to_string(),
            format!("exec {DEV_PYTHON} {s}/server.py"),
        ),
    ];
    let mut toml = String::new();
    for svc in SERVICES {
        let c = &cmds.iter().find(|(n, _)| n == svc).expect("command").1;
        toml.push_str(&format!(
            "[services.{svc}]\ncommand = \"{c}\"\nport = 8080\nhealth = {{ http = \"/\" }}\n\n"
        ));
    }
    // No health setting: overlay dev tells it is a worker from its sockets.
    toml.push_str(&format!(
        "[services.worker]\ncommand = \"{}\"\n\n",
        cmds[2].1
    ));
    toml.push_str(&format!("[services.held]\ncommand = \"{}\"\nport = 8080\nhealth = {{ http = \"/\" }}\ndrain = \"{DRAIN_S}s\"\n", cmds[3].1));
    let toml_path = svc_dir.join("overlay.toml");
    std::fs::write(&toml_path, &toml).expect("overlay.toml");
    let _ = std::fs::write(ctx.log("restart-overlay.toml.txt"), &toml);
    sh(&format!(
        "chmod -R a+rX {s} && chmod a+x {}",
        a.dir.display()
    ));
    let env = vec![
        format!("RUST_LOG={}", ctx.rust_log),
        "NO_COLOR=1".to_string(),
        format!("OVERLAY_STATE_DIR={}", dev_dir.display()),
        format!("OVERLAY_RUN_DIR={}", run_dir.display()),
        format!("SUDO_UID={DEV_UID}"),
        format!("SUDO_GID={DEV_UID}"),
    ];
    let log = ctx.log("restart-dev.log");
    let dev = Dev {
        ctx,
        w,
        a: a.clone(),
        svc_dir: svc_dir.clone(),
        env,
        log: log.clone(),
        cmds,
    };
    let overlay = ctx.overlay.to_string_lossy().into_owned();
    let toml_arg = toml_path.to_string_lossy().into_owned();
    let mut cmd: Vec<&str> = Vec::new();
    let svc_s = svc_dir.to_string_lossy().into_owned();
    cmd.extend(["env", "-C", svc_s.as_str()]);
    cmd.extend(dev.env.iter().map(String::as_str));
    cmd.extend([overlay.as_str(), "dev", "-f", toml_arg.as_str()]);
    let pid = w.spawn_to(&a, &log, &[], &cmd);
    *dev_pid = Some(pid);
    if !wait(30, "overlay dev to start the services", || {
        dev_ready(&log) || !w.alive(pid)
    }) || !w.alive(pid)
    {
        ctx.tail(&log);
        return Err("overlay dev did not bring the services up".into());
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut addrs = Vec::new();
    for svc in SERVICES {
        let (port, addr) = ready(&text, svc).ok_or("no ready line")?;
        tracing::info!("  overlay dev (uid {DEV_UID}): {svc} at {addr}, local port {port}");
        if !wait(10, &format!("{svc} to answer at {addr}"), || {
            crate::ctx::ok(
                w,
                &a,
                5,
                &format!("curl -sf --max-time 2 -o /dev/null http://{addr}/"),
            )
        }) {
            ctx.tail(&log);
            return Err(format!(
                "{svc} does not answer at its overlay address {addr}"
            ));
        }
        addrs.push((svc, port, addr));
    }
    let (_, port, addr) = &addrs[0];
    let n = ctx.o.requests;
    tracing::info!("  latency: {n} GETs each to 127.0.0.1:{port} and {addr}, on new connections, then on kept-alive ones");
    let res = svc_dir.join("latency.json");
    let o_lat = run_in(
        w,
        &a,
        u64::from(n / 5 + 120),
        &format!(
            "{} probe latency --direct 127.0.0.1:{port} --via {addr} -n {n} --result {} --raw {} 2>>{}",
            ctx.me.display(),
            res.display(),
            ctx.log("restart-latency").display(),
            ctx.log("restart-probe.log").display()
        ),
    );
    if !o_lat.status.success() {
        ctx.tail(&ctx.log("restart-probe.log"));
        return Err("the latency probe failed".into());
    }
    st.lat = std::fs::read_to_string(&res)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    st.svcs = SERVICES
        .iter()
        .map(|s| Svc {
            service: s.to_string(),
            command: dev.cmd(s).to_string(),
            ..Default::default()
        })
        .collect();
    st.worker = Svc {
        service: "worker".into(),
        command: dev.cmd("worker").to_string(),
        ..Default::default()
    };
    // Own starts and restarts alternate, so that background load hits both alike.
    for r in 1..=ctx.o.restarts {
        for (i, (svc, _, addr)) in addrs.iter().enumerate() {
            let own = dev.own_start(svc, r)?;
            let (reached, pr) = dev.restart(svc, addr, r)?;
            st.svcs[i].own_start_ms.push(own);
            st.svcs[i].restart_until_serving_ms.push(reached);
            st.svcs[i].printed_ms.extend(pr);
            // A pause between restarts, as a developer's edits are: not measured.
            std::thread::sleep(Duration::from_millis(200));
        }
        dev.worker(st, r)?;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    st.worker_first = text
        .lines()
        .filter_map(dev_line)
        .find(|(n, m)| {
            *n == "worker" && m.starts_with("[overlay] ready in") && m.contains("a worker")
        })
        .and_then(|(_, m)| {
            m.split("ready in ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
    let (_, held) = ready(&text, "held").ok_or_else(|| {
        ctx.tail(&log);
        "the service held did not start".to_string()
    })?;
    dev.drain(st, &held, 0.5)?;
    dev.drain(st, &held, 30.0)?;
    Ok(())
}

/// Stops overlay dev with SIGINT, as Ctrl-C does; returns the developer's processes left.
fn stop_dev(w: &World, a: &Host, pid: u32) -> String {
    w.stop_with(pid, "INT", Duration::from_secs(15));
    let mut left = String::new();
    wait(5, "the services of overlay dev to end", || {
        let o = overlay_tests::world::sh_output(&format!("ip netns pids {}", a.ns));
        left = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter(|p| {
                std::fs::metadata(format!("/proc/{p}"))
                    .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == DEV_UID)
            })
            .collect::<Vec<_>>()
            .join(" ");
        left.is_empty()
    });
    left
}

pub fn run(ctx: &Ctx) {
    tracing::info!(
        "part restart: overlay dev's listener latency ({} requests each way) and restart overhead ({} restarts per service)",
        ctx.o.requests,
        ctx.o.restarts
    );
    let mut w = ctx.world("restart");
    let mut o = Ovl::new(ctx, &w, "restart");
    let a = o.host(&mut w, "a", 2);
    let mut st = State::default();
    let mut status = "ok".to_string();
    let mut dev_pid = None;
    if !ctx.have_binaries() {
        status = "n/a (binaries missing)".into();
    } else if let Err(e) = measure(ctx, &w, &mut o, &mut st, &mut dev_pid) {
        ctx.fail("restart", &e);
        status = "failed".into();
    }
    if let Some(p) = dev_pid {
        st.left = stop_dev(&w, &a, p);
        if !st.left.is_empty() {
            ctx.fail(
                "restart",
                &format!(
                    "processes of uid {DEV_UID} left after overlay dev stopped: {}",
                    st.left
                ),
            );
        }
    }
    o.down_all(&w);
    report(ctx, &st, &status);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_output_lines() {
        let log = "12:00:01.123 echo     | [overlay] ready in 85 ms: pid 42, local port 41234, at 100.64.0.66:8080 (echo.ovl.internal)\n\
                   12:00:01.200 worker   | worker up 77\n";
        assert_eq!(ready(log, "echo"), Some((41234, "100.64.0.66:8080".into())));
        assert_eq!(ready(log, "held"), None);
        assert_eq!(printed("echo restarted in 93 ms: pid 7"), Some(93.0));
        assert_eq!(
            drained("held restarted in 512 ms: pid 9; 1 connection drained, 0 closed"),
            (Some(1), Some(0))
        );
        assert_eq!(drained("nothing"), (None, None));
    }
}

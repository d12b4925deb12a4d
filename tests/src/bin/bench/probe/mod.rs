//! `overlay-bench probe`: timing probes run inside a namespace (`ip netns exec NS overlay-bench
//! probe ...`), where polling with `ping` or `dig` in a loop would cost a process start per try.
//!
//! - `icmp ADDR -- CMD...`: ICMP echo to ADDR every `--interval` ms (a raw socket); send errors
//!   such as "Network is unreachable" are expected until a route exists and are retried.
//! - `dns SERVER NAME -- CMD...`: an A query for NAME to SERVER:53; success is a NOERROR answer
//!   with an A record.
//! - `http HOST PORT -- CMD...`: a GET on a fresh connection (answer awaited up to 5 s) every
//!   interval; success is a 200 whose body is not `--not-body`. `--stop-cmd` stops CMD (a server
//!   timed until it answers, in its own process group) at the first success.
//! - `latency --direct H:P --via H:P -n N`: HTTP/1.1 GET round trips to two addresses of one
//!   server, alternating, after a warm-up: on fresh connections, then on kept-alive ones
//!   (`--via-header 'NAME: VALUE'`: with that header on the requests to `--via`).
//!
//! The first three open their socket first, then take t0 and start CMD, and write one JSON
//! [`ProbeResult`] to `--result`: times in ms from t0 (monotonic). Exit status 0 when the result
//! was written, 2 on bad usage or socket errors (3: latency, the two addresses answered
//! different bodies).

mod dns;
mod http;
mod icmp;

use clap::{Parser, Subcommand};
use dns::Dns;
use http::{http_probe, latency};
use icmp::Icmp;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a probe measured.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProbeResult {
    /// From t0 to the first success; `None`: never.
    pub reached_ms: Option<f64>,
    /// From t0 to the command's exit; `None`: stopped (at the timeout, or by --stop-cmd).
    pub cmd_ms: Option<f64>,
    pub cmd_rc: Option<i32>,
    pub probes: u64,
    /// The A record's address (dns), the replying address (icmp), the body's first line (http).
    pub detail: Option<String>,
}

/// One round and address of the latency probe.
#[derive(Debug, Serialize, Deserialize)]
pub struct LatencyLine {
    pub round: String,
    pub address: String,
    pub n: usize,
    pub median_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

#[derive(Parser, Debug)]
#[command(
    name = "overlay-bench probe",
    about = "Timing probes (run inside a namespace)"
)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Where to write the JSON result.
    #[arg(long)]
    result: PathBuf,
    /// The command's stdout (default: inherited).
    #[arg(long)]
    cmd_out: Option<PathBuf>,
    /// Milliseconds between probes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Seconds until giving up.
    #[arg(long, default_value_t = 20.0)]
    timeout: f64,
    /// The command to start and time.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Mode {
    Icmp {
        addr: Ipv4Addr,
        #[command(flatten)]
        c: Common,
    },
    Dns {
        server: Ipv4Addr,
        name: String,
        #[command(flatten)]
        c: Common,
    },
    Http {
        host: String,
        port: u16,
        #[arg(long, default_value = "/")]
        path: String,
        /// An answer with exactly this body does not count.
        #[arg(long)]
        not_body: Option<String>,
        /// Stop the command (a server) at the first success.
        #[arg(long)]
        stop_cmd: bool,
        #[command(flatten)]
        c: Common,
    },
    Latency {
        #[arg(long)]
        direct: String,
        #[arg(long)]
        via: String,
        /// A header (`NAME: VALUE`) sent with every request to --via only.
        #[arg(long)]
        via_header: Option<String>,
        #[arg(short = 'n', default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 50)]
        warmup: usize,
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long)]
        result: PathBuf,
        /// Every value to RAW-ROUND-ADDRESS.txt.
        #[arg(long)]
        raw: Option<String>,
    },
}

pub fn main(args: &[String]) -> i32 {
    let a = match Args::try_parse_from(
        std::iter::once("overlay-bench probe".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let r = match a.mode {
        Mode::Icmp { addr, c } => Icmp::new(addr).and_then(|p| poll_probe(p, &c)),
        Mode::Dns { server, name, c } => Dns::new(server, &name).and_then(|p| poll_probe(p, &c)),
        Mode::Http {
            host,
            port,
            path,
            not_body,
            stop_cmd,
            c,
        } => http_probe(&host, port, &path, not_body.as_deref(), stop_cmd, &c),
        Mode::Latency {
            direct,
            via,
            via_header,
            n,
            warmup,
            path,
            result,
            raw,
        } => {
            return latency(
                &direct,
                &via,
                via_header.as_deref(),
                n,
                warmup,
                &path,
                &result,
                raw.as_deref(),
            )
        }
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("probe: {e}");
            2
        }
    }
}

fn start(c: &Common, own_group: bool) -> Result<Child, String> {
    let mut cmd = Command::new(&c.cmd[0]);
    cmd.args(&c.cmd[1..]).stdin(Stdio::null());
    if let Some(p) = &c.cmd_out {
        let f = std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
        cmd.stdout(f);
    }
    if own_group {
        cmd.process_group(0);
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", c.cmd[0]))
}

fn write_result(path: &PathBuf, r: &ProbeResult) -> Result<(), String> {
    let text = serde_json::to_string(r).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

fn ms(t0: Instant, t: Instant) -> f64 {
    ((t - t0).as_secs_f64() * 1e6).round() / 1e3
}

/// A probe on a non-blocking datagram socket.
trait Probe {
    fn fd(&self) -> i32;
    fn send(&mut self) -> std::io::Result<()>;
    /// A success detail for a datagram that answers one of our probes.
    fn receive(&mut self) -> std::io::Result<Option<String>>;
}

/// Sends a probe every interval from t0 on, stops at the first success once the command has
/// exited, when the command fails, or at the timeout; stops the command if it still runs.
fn poll_probe(mut p: impl Probe, c: &Common) -> Result<(), String> {
    let t0 = Instant::now();
    let mut child = start(c, false)?;
    let interval = Duration::from_secs_f64(c.interval / 1000.0);
    let deadline = t0 + Duration::from_secs_f64(c.timeout);
    let mut r = ProbeResult::default();
    let mut next = t0;
    let mut reached: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if r.cmd_rc.is_none() {
            if let Ok(Some(st)) = child.try_wait() {
                r.cmd_rc = Some(st.code().unwrap_or(-1));
                r.cmd_ms = Some(ms(t0, now));
            }
        }
        if reached.is_some() && r.cmd_rc.is_some() {
            break;
        }
        if r.cmd_rc.is_some_and(|rc| rc != 0) || now >= deadline {
            break;
        }
        if reached.is_none() && now >= next {
            if p.send().is_ok() {
                r.probes += 1;
            }
            next += interval;
            if next < now {
                next = now + interval;
            }
        }
        let mut wait = next.min(deadline).saturating_duration_since(Instant::now());
        if reached.is_some() {
            wait = Duration::from_millis(5); // only the command is left: check it every 5 ms
        }
        let mut pfd = libc::pollfd {
            fd: p.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis().min(1000) as i32) };
        if n > 0 {
            while let Ok(got) = p.receive() {
                if let (Some(d), None) = (got, reached) {
                    reached = Some(Instant::now());
                    r.reached_ms = Some(ms(t0, Instant::now()));
                    r.detail = Some(d);
                }
            }
        }
    }
    if r.cmd_rc.is_none() {
        stop(&mut child, false);
        r.cmd_rc = child.try_wait().ok().flatten().and_then(|s| s.code());
    }
    write_result(&c.result, &r)
}

/// SIGTERM (to the process group with `group`), SIGKILL after 3 s.
fn stop(child: &mut Child, group: bool) {
    let pid = child.id() as i32;
    // SAFETY: kill has no memory preconditions; the pid (group) is our child's.
    unsafe { libc::kill(if group { -pid } else { pid }, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above.
    unsafe { libc::kill(if group { -pid } else { pid }, libc::SIGKILL) };
    let _ = child.wait();
}

/// Reads a probe's result file.
pub fn read_result(path: &std::path::Path) -> Option<ProbeResult> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

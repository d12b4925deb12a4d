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
//!   server, alternating, after a warm-up: on fresh connections, then on kept-alive ones.
//!
//! The first three open their socket first, then take t0 and start CMD, and write one JSON
//! [`ProbeResult`] to `--result`: times in ms from t0 (monotonic). Exit status 0 when the result
//! was written, 2 on bad usage or socket errors (3: latency, the two addresses answered
//! different bodies).

use crate::stats::{mean, median, percentile};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
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
            n,
            warmup,
            path,
            result,
            raw,
        } => return latency(&direct, &via, n, warmup, &path, &result, raw.as_deref()),
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

struct Icmp {
    fd: i32,
    addr: Ipv4Addr,
    ident: u16,
    seq: u16,
}

impl Icmp {
    fn new(addr: Ipv4Addr) -> Result<Icmp, String> {
        // SAFETY: plain socket(2) call; the fd is owned by Icmp and closed on drop.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(format!(
                "cannot open the ICMP socket: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Icmp {
            fd,
            addr,
            ident: (std::process::id() & 0xffff) as u16,
            seq: 0,
        })
    }
}

impl Drop for Icmp {
    fn drop(&mut self) {
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// The Internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut s: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

impl Probe for Icmp {
    fn fd(&self) -> i32 {
        self.fd
    }

    fn send(&mut self) -> std::io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut pkt = vec![8u8, 0, 0, 0];
        pkt.extend_from_slice(&self.ident.to_be_bytes());
        pkt.extend_from_slice(&self.seq.to_be_bytes());
        pkt.extend_from_slice(b"ovb-bench-probe!");
        let ck = checksum(&pkt);
        pkt[2..4].copy_from_slice(&ck.to_be_bytes());
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(self.addr.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: pkt and sa are valid for the call.
        let n = unsafe {
            libc::sendto(
                self.fd,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn receive(&mut self) -> std::io::Result<Option<String>> {
        let mut buf = [0u8; 2048];
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let d = &buf[..n as usize];
        if d.len() < 20 || d[12..16] != self.addr.octets() {
            return Ok(None);
        }
        let ihl = usize::from(d[0] & 0x0f) * 4;
        let Some(icmp) = d.get(ihl..ihl + 8) else {
            return Ok(None);
        };
        let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
        Ok((icmp[0] == 0 && ident == self.ident).then(|| self.addr.to_string()))
    }
}

struct Dns {
    sock: UdpSocket,
    question: Vec<u8>,
    next_id: u16,
    sent: std::collections::HashSet<u16>,
}

impl Dns {
    fn new(server: Ipv4Addr, name: &str) -> Result<Dns, String> {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("udp socket: {e}"))?;
        sock.connect((server, 53))
            .and_then(|()| sock.set_nonblocking(true))
            .map_err(|e| format!("udp socket: {e}"))?;
        let mut question = Vec::new();
        for label in name.trim_end_matches('.').split('.') {
            question.push(label.len() as u8);
            question.extend_from_slice(label.as_bytes());
        }
        question.extend_from_slice(&[0, 0, 1, 0, 1]);
        Ok(Dns {
            sock,
            question,
            next_id: rand::random(),
            sent: Default::default(),
        })
    }
}

/// The offset after a (possibly compressed) name at `off`.
fn skip_name(m: &[u8], mut off: usize) -> Option<usize> {
    loop {
        let l = *m.get(off)?;
        if l == 0 {
            return Some(off + 1);
        }
        if l & 0xc0 == 0xc0 {
            return Some(off + 2);
        }
        off += 1 + usize::from(l);
    }
}

/// The first A record of a NOERROR answer whose id is in `ids`.
fn dns_answer(m: &[u8], ids: &std::collections::HashSet<u16>) -> Option<Ipv4Addr> {
    let h = m.get(..12)?;
    let id = u16::from_be_bytes([h[0], h[1]]);
    let flags = u16::from_be_bytes([h[2], h[3]]);
    let qd = u16::from_be_bytes([h[4], h[5]]);
    let an = u16::from_be_bytes([h[6], h[7]]);
    if !ids.contains(&id) || flags & 0x8000 == 0 || flags & 0x000f != 0 || an == 0 {
        return None;
    }
    let mut off = 12;
    for _ in 0..qd {
        off = skip_name(m, off)? + 4;
    }
    for _ in 0..an {
        off = skip_name(m, off)?;
        let rr = m.get(off..off + 10)?;
        let (typ, len) = (
            u16::from_be_bytes([rr[0], rr[1]]),
            usize::from(u16::from_be_bytes([rr[8], rr[9]])),
        );
        off += 10;
        if typ == 1 && len == 4 {
            let a = m.get(off..off + 4)?;
            return Some(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
        }
        off += len;
    }
    None
}

impl Probe for Dns {
    fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    fn send(&mut self) -> std::io::Result<()> {
        self.next_id = self.next_id.wrapping_add(1);
        self.sent.insert(self.next_id);
        let mut q = self.next_id.to_be_bytes().to_vec();
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(&self.question);
        self.sock.send(&q).map(|_| ())
    }

    fn receive(&mut self) -> std::io::Result<Option<String>> {
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Ok(dns_answer(&buf[..n], &self.sent).map(|a| a.to_string())),
            // ECONNREFUSED from an earlier query: the server is not up yet.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One GET on `s`; the status and body (Content-Length framed, else until close).
fn http_get(
    s: &mut TcpStream,
    host: &str,
    path: &str,
    close: bool,
) -> std::io::Result<(u16, Vec<u8>)> {
    let conn = if close { "close" } else { "keep-alive" };
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\n\r\n").as_bytes(),
    )?;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(bad("closed before the answer's headers"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("not an HTTP answer"))?;
    let length = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    return Err(bad("closed in the middle of the body"));
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            s.read_to_end(&mut body)?;
        }
    }
    Ok((status, body))
}

fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn http_probe(
    host: &str,
    port: u16,
    path: &str,
    not_body: Option<&str>,
    stop_cmd: bool,
    c: &Common,
) -> Result<(), String> {
    let t0 = Instant::now();
    let mut child = start(c, stop_cmd)?;
    let interval = Duration::from_secs_f64(c.interval / 1000.0);
    let deadline = t0 + Duration::from_secs_f64(c.timeout);
    let mut r = ProbeResult::default();
    let mut next = t0;
    let check_exit = |r: &mut ProbeResult, child: &mut Child| {
        if r.cmd_rc.is_none() {
            if let Ok(Some(st)) = child.try_wait() {
                r.cmd_rc = Some(st.code().unwrap_or(-1));
                r.cmd_ms = Some(ms(t0, Instant::now()));
            }
        }
    };
    while Instant::now() < deadline {
        check_exit(&mut r, &mut child);
        // A failed command, or a server that exited before it answered.
        if r.cmd_rc.is_some_and(|rc| rc != 0 || stop_cmd) {
            break;
        }
        r.probes += 1;
        let got = connect(host, port, Duration::from_secs(5))
            .and_then(|mut s| http_get(&mut s, &format!("{host}:{port}"), path, true));
        if let Ok((200, body)) = got {
            let text = String::from_utf8_lossy(&body);
            if Some(text.trim()) != not_body.map(str::trim) {
                r.reached_ms = Some(ms(t0, Instant::now()));
                let first = text.lines().next().unwrap_or("-").trim().replace(' ', "_");
                r.detail = Some(first);
                break;
            }
        }
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        std::thread::sleep(next - now);
    }
    if stop_cmd {
        if r.cmd_rc.is_none() {
            stop(&mut child, true);
        }
        r.cmd_ms = None;
    } else if r.reached_ms.is_some() {
        // Success: the command gets the rest of the time to finish.
        while r.cmd_rc.is_none() && Instant::now() < deadline {
            check_exit(&mut r, &mut child);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    check_exit(&mut r, &mut child);
    if r.cmd_rc.is_none() && !stop_cmd {
        stop(&mut child, false);
        r.cmd_rc = child.try_wait().ok().flatten().and_then(|s| s.code());
    }
    write_result(&c.result, &r)
}

fn split_hostport(s: &str) -> Result<(String, u16), String> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s}: not HOST:PORT"))?;
    Ok((
        h.to_string(),
        p.parse().map_err(|_| format!("{s}: bad port"))?,
    ))
}

fn latency(
    direct: &str,
    via: &str,
    n: usize,
    warmup: usize,
    path: &str,
    result: &PathBuf,
    raw: Option<&str>,
) -> i32 {
    let targets = match (split_hostport(direct), split_hostport(via)) {
        (Ok(d), Ok(v)) => [("direct", d), ("via", v)],
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("probe: {e}");
            return 2;
        }
    };
    let mut bodies: [Option<Vec<u8>>; 2] = [None, None];
    let mut lines = Vec::new();
    for round in ["fresh", "keepalive"] {
        let mut socks: [Option<TcpStream>; 2] = [None, None];
        let mut samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for i in 0..warmup + n {
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let (name, (host, port)) = &targets[k];
                let hp = format!("{host}:{port}");
                let got = if round == "fresh" {
                    let t = Instant::now();
                    connect(host, *port, Duration::from_secs(10))
                        .and_then(|mut s| http_get(&mut s, &hp, path, true))
                        .map(|a| (a, t.elapsed()))
                } else {
                    let s = match socks[k].take() {
                        Some(s) => Ok(s),
                        None => connect(host, *port, Duration::from_secs(10)),
                    };
                    s.and_then(|mut s| {
                        let t = Instant::now();
                        let a = http_get(&mut s, &hp, path, false)?;
                        let took = t.elapsed();
                        socks[k] = Some(s);
                        Ok((a, took))
                    })
                };
                match got {
                    Ok(((200, body), took)) => {
                        bodies[k].get_or_insert(body);
                        if i >= warmup {
                            samples[k].push(took.as_secs_f64() * 1e6);
                        }
                    }
                    Ok(((status, _), _)) => {
                        eprintln!("probe: latency ({round}): {name} answered {status}");
                        return 2;
                    }
                    Err(e) => {
                        eprintln!("probe: latency ({round}): {name}: {e}");
                        return 2;
                    }
                }
            }
        }
        for (k, (name, _)) in targets.iter().enumerate() {
            let v = &samples[k];
            let r1 = |x: Option<f64>| (x.unwrap_or(0.0) * 10.0).round() / 10.0;
            lines.push(LatencyLine {
                round: round.to_string(),
                address: name.to_string(),
                n: v.len(),
                median_us: r1(median(v)),
                p99_us: r1(percentile(v, 99)),
                mean_us: r1(mean(v)),
            });
            if let Some(prefix) = raw {
                let text: String = v.iter().map(|x| format!("{x:.1}\n")).collect();
                let _ = std::fs::write(format!("{prefix}-{round}-{name}.txt"), text);
            }
        }
    }
    let text = serde_json::to_string(&lines).unwrap_or_default();
    if let Err(e) = std::fs::write(result, text + "\n") {
        eprintln!("probe: {}: {e}", result.display());
        return 2;
    }
    if bodies[0] != bodies[1] {
        eprintln!("probe: the two addresses answered differently");
        return 3;
    }
    0
}

/// Reads a probe's result file.
pub fn read_result(path: &std::path::Path) -> Option<ProbeResult> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_an_echo_request() {
        // type 8, code 0, id 1, seq 1, no payload: 0xf7fd.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }

    #[test]
    fn dns_answer_parses_a_record() {
        let ids: std::collections::HashSet<u16> = [0x1234].into();
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 100, 64, 0, 9]);
        assert_eq!(dns_answer(&m, &ids), Some(Ipv4Addr::new(100, 64, 0, 9)));
        // Another id, or NXDOMAIN: no answer.
        assert_eq!(dns_answer(&m, &[7].into()), None);
        m[3] = 0x83;
        assert_eq!(dns_answer(&m, &ids), None);
        assert_eq!(dns_answer(&m[..5], &ids), None);
    }
}

//! Data-path measurements shared by the parts: ping latency, iperf3 throughput, the result of
//! one setup, and userspace WireGuard pairs (wireguard-go, boringtun-cli) as baselines.

use crate::ctx::{append, ok, run, wait, Ctx};
use crate::stats::{median, percentile};
use overlay_tests::{Host, World};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One measured setup (a row of the dataplane, gateway and tcp tables).
#[derive(Clone, Debug, Serialize)]
pub struct Setup {
    pub id: String,
    pub title: String,
    pub status: String,
    pub throughput_mbps: Option<f64>,
    pub throughput_runs_mbps: Vec<f64>,
    pub ping_median_us: Option<f64>,
    pub ping_p99_us: Option<f64>,
    pub ping_replies: usize,
}

impl Setup {
    pub fn begin(id: &str, title: &str) -> Setup {
        tracing::info!("setup: {title}");
        Setup {
            id: id.to_string(),
            title: title.to_string(),
            status: "ok".to_string(),
            throughput_mbps: None,
            throughput_runs_mbps: Vec::new(),
            ping_median_us: None,
            ping_p99_us: None,
            ping_replies: 0,
        }
    }

    pub fn ok(&self) -> bool {
        self.status == "ok"
    }

    /// Not measured, not an error (e.g. binaries not built).
    pub fn na(&mut self, why: &str) {
        tracing::info!("{}: n/a ({why})", self.title);
        self.status = format!("n/a ({why})");
    }

    /// A component failed to run: the run's exit status becomes 1.
    pub fn failed(&mut self, ctx: &Ctx, why: &str, log: Option<&Path>) {
        self.status = format!("failed ({why})");
        ctx.fail(&self.title, why);
        if let Some(l) = log {
            ctx.tail(l);
        }
    }
}

/// Round-trip times in µs of the `time=` fields of ping's output.
pub fn ping_times_us(text: &str) -> Vec<f64> {
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix("time="))
        .filter_map(|t| t.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .collect()
}

/// Median, p99 (µs, rounded) and replies of a ping sample.
pub fn ping_figures(times: &[f64]) -> Option<(f64, f64, usize)> {
    Some((
        median(times)?.round(),
        percentile(times, 99)?.round(),
        times.len(),
    ))
}

/// `count` pings 5 ms apart from `host` to `addr`; their output goes to `log`.
pub fn ping(w: &World, host: &Host, addr: &str, count: u32, log: &Path) -> Vec<f64> {
    ping_every(w, host, addr, count, Duration::from_millis(5), log)
}

/// [`ping`] with `interval` seconds between requests. Below 0.01 iputils' ping waits for the
/// next send by spinning on `sched_yield` and takes a whole core (measured: 2.0 s of CPU in 2 s
/// at 0.005, 0.01 s at 0.01), which on a 2-core host is taken from the path it measures.
pub fn ping_every(
    w: &World,
    host: &Host,
    addr: &str,
    count: u32,
    interval: Duration,
    log: &Path,
) -> Vec<f64> {
    let secs = interval.as_secs_f64();
    let o = run(
        w,
        host,
        (f64::from(count) * secs) as u64 + 30,
        &format!("ping -n -c {count} -i {secs:.3} -W 1 {addr} 2>&1"),
    );
    let text = String::from_utf8_lossy(&o.stdout);
    append(log, &text);
    ping_times_us(&text)
}

/// The latency figures of a setup from `host` to `addr`; false (and the setup failed) when no
/// reply came back.
pub fn ping_only(ctx: &Ctx, w: &World, s: &mut Setup, host: &Host, addr: &str) -> bool {
    let log = ctx.log(&format!("ping-{}.log", s.id));
    let times = ping(w, host, addr, ctx.o.pings, &log);
    let Some((p50, p99, n)) = ping_figures(&times) else {
        s.failed(ctx, &format!("no ping replies from {addr}"), Some(&log));
        return false;
    };
    (s.ping_median_us, s.ping_p99_us, s.ping_replies) = (Some(p50), Some(p99), n);
    tracing::info!(
        "  ping: median {p50} µs, p99 {p99} µs ({n}/{} replies)",
        ctx.o.pings
    );
    true
}

/// One iperf3 TCP run from `client` to `addr` (served in `server`): the receiver's Mbit/s.
/// Each run has a one-off server on a new port: a long-lived iperf3 server sometimes stays
/// "busy" after a test and refuses every later one.
pub fn iperf_once(
    ctx: &Ctx,
    w: &World,
    client: &Host,
    server: &Host,
    addr: &str,
    secs: u32,
    log: &Path,
) -> Result<f64, String> {
    let port = ctx.next_port();
    let srv = w.spawn_to(
        server,
        &ctx.log("iperf3-server.log"),
        &[],
        &["iperf3", "-s", "-1", "-p", &port.to_string()],
    );
    let listening = wait(10, &format!("the iperf3 server in {}", server.ns), || {
        ok(
            w,
            server,
            5,
            &format!("ss -Hltn 'sport = :{port}' | grep -q ."),
        )
    });
    if !listening {
        w.stop(srv);
        return Err("the iperf3 server did not listen".into());
    }
    let o = run(
        w,
        client,
        u64::from(secs) + 40,
        &format!("iperf3 -c {addr} -p {port} -t {secs} -O 1 -f m -J --connect-timeout 5000"),
    );
    w.stop(srv);
    let text = String::from_utf8_lossy(&o.stdout);
    append(log, &text);
    append(log, &String::from_utf8_lossy(&o.stderr));
    if !o.status.success() {
        return Err(format!("iperf3 to {addr} failed"));
    }
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("iperf3 printed no JSON: {e}"))?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e6)
        .ok_or_else(|| "iperf3 reported no receiver rate".to_string())
}

/// `runs` iperf3 runs from `client` to `addr`; their median in the setup.
pub fn iperf_runs(
    ctx: &Ctx,
    w: &World,
    s: &mut Setup,
    client: &Host,
    server: &Host,
    addr: &str,
    runs: u32,
) {
    let log = ctx.log(&format!("iperf3-{}.log", s.id));
    for r in 1..=runs {
        match iperf_once(ctx, w, client, server, addr, ctx.o.time, &log) {
            Ok(mbps) => {
                tracing::info!("  iperf3 run {r}/{runs}: {mbps:.0} Mbit/s");
                s.throughput_runs_mbps.push((mbps * 100.0).round() / 100.0);
            }
            Err(e) => {
                s.failed(ctx, &format!("iperf3 run {r} to {addr}: {e}"), Some(&log));
                return;
            }
        }
    }
    s.throughput_mbps = median(&s.throughput_runs_mbps);
}

/// Latency, then throughput, from `client` to `addr`.
pub fn measure(
    ctx: &Ctx,
    w: &World,
    s: &mut Setup,
    client: &Host,
    server: &Host,
    addr: &str,
    runs: u32,
) {
    if ping_only(ctx, w, s, client, addr) {
        iperf_runs(ctx, w, s, client, server, addr, runs);
    }
}

/// The UDP port userspace WireGuard baselines listen on.
pub const WG_PORT: u16 = 51821;

/// A WireGuard key pair made with `wg`: (private key file, public key).
pub fn wg_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let o = overlay_tests::world::sh_output(&format!(
        "umask 077 && wg genkey > {0} && wg pubkey < {0}",
        key.display()
    ));
    (key, String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// One end of a userspace WireGuard link, configured with `wg`.
pub struct WgEnd<'a> {
    pub host: &'a Host,
    /// Interface name: the UAPI socket `/var/run/wireguard/IFNAME.sock` is shared by every
    /// namespace, hence one name per end (prefix `ovbwg`, removed at the end).
    pub ifname: &'a str,
    pub key: &'a Path,
    pub addr: &'a str,
    pub peer_pub: &'a str,
    pub peer_endpoint: String,
    pub peer_allowed: &'a str,
}

/// Starts `imp` (`wireguard-go` or a boringtun-cli path) for `end` in the foreground (so the
/// pid is ours) and configures it. Returns the pid, or why it failed.
pub fn wg_start(ctx: &Ctx, w: &World, imp: &str, end: &WgEnd) -> Result<u32, String> {
    let ns = &end.host.ns;
    let name = Path::new(imp)
        .file_name()
        .map_or("wg".into(), |n| n.to_string_lossy().into_owned());
    let log = ctx.log(&format!("{name}-{}.log", end.ifname));
    let pid = if imp == "wireguard-go" {
        w.spawn_to(
            end.host,
            &log,
            &[("LOG_LEVEL", "error"), ("WG_PROCESS_FOREGROUND", "1")],
            &["wireguard-go", "-f", end.ifname],
        )
    } else {
        let out = ctx.log(&format!("boringtun-{}.out", end.ifname));
        w.spawn_to(
            end.host,
            &log,
            &[],
            &[
                imp,
                "-f",
                "--disable-drop-privileges",
                "--log",
                &out.to_string_lossy(),
                end.ifname,
            ],
        )
    };
    let sock = PathBuf::from(format!("/var/run/wireguard/{}.sock", end.ifname));
    if !wait(5, &format!("{imp} {} in {ns}", end.ifname), || {
        sock.exists()
    }) {
        return Err(format!("{imp} did not start (log {})", ctx.rel(&log)));
    }
    let cmd = format!(
        "wg set {ifn} private-key {key} listen-port {WG_PORT} peer {pp} endpoint {pe} allowed-ips {pa} && \
         ip addr add {addr} dev {ifn} && ip link set {ifn} mtu 1420 up",
        ifn = end.ifname,
        key = end.key.display(),
        pp = end.peer_pub,
        pe = end.peer_endpoint,
        pa = end.peer_allowed,
        addr = end.addr,
    );
    let o = run(w, end.host, 15, &cmd);
    if !o.status.success() {
        return Err(format!(
            "configuring {}: {}",
            end.ifname,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(pid)
}

/// Removes the UAPI sockets of our baseline interfaces (they outlive a killed daemon).
pub fn wg_sockets_cleanup() {
    if let Ok(dir) = std::fs::read_dir("/var/run/wireguard") {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with("ovbwg") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Pins the calling thread to `cpu`; false if the host has no such CPU.
fn pin_to(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays within it for cpu < CPU_SETSIZE, and
    // sched_setaffinity(0, ...) only changes the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Round trips (µs) of a UDP echo over loopback between two threads of this process pinned to
/// CPUs 0 and 1, `count` of them `interval` apart: what waking a thread on the other CPU costs
/// on this host, the floor under every hop of a user-space data path (a nested VM's host may
/// leave a vCPU waiting for its own scheduler). `None` without two CPUs or sockets.
pub fn cross_cpu_echo_us(count: u32, interval: Duration) -> Option<Vec<f64>> {
    use std::net::UdpSocket;
    use std::time::Instant;
    let server = UdpSocket::bind("127.0.0.1:0").ok()?;
    let client = UdpSocket::bind("127.0.0.1:0").ok()?;
    let to = server.local_addr().ok()?;
    server.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    client.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let echo = std::thread::spawn(move || {
        if !pin_to(1) {
            return;
        }
        let mut buf = [0u8; 16];
        // Ends on the client's one-byte "stop", or when nothing comes for the read timeout.
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            if n == 1 {
                break;
            }
            let _ = server.send_to(&buf[..n], from);
        }
    });
    // SAFETY: a zeroed cpu_set_t filled in by the kernel for this thread.
    let before = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then_some(set)
    };
    let mut rtts = Vec::new();
    let pinned = before.is_some() && pin_to(0);
    let mut buf = [0u8; 16];
    for i in 0..if pinned { count } else { 0 } {
        let t = Instant::now();
        if client.send_to(&i.to_be_bytes(), to).is_err() {
            break;
        }
        match client.recv_from(&mut buf) {
            Ok((4, _)) if buf[..4] == i.to_be_bytes() => rtts.push(t.elapsed().as_secs_f64() * 1e6),
            _ => break,
        }
        std::thread::sleep(interval);
    }
    let _ = client.send_to(&[0], to);
    let _ = echo.join();
    // Back to the CPUs this thread had, for the rest of the run.
    if let Some(set) = before {
        // SAFETY: the set the kernel gave for this thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    }
    (rtts.len() == count as usize && count > 0).then_some(rtts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_output_parses() {
        let text = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
            64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.051 ms\n\
            64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=0.100 ms\n\
            64 bytes from 10.0.0.2: icmp_seq=3 ttl=64 time=1.20 ms\n\n\
            --- 10.0.0.2 ping statistics ---\n";
        let t = ping_times_us(text);
        assert_eq!(t.len(), 3);
        assert_eq!(ping_figures(&t), Some((100.0, 1200.0, 3)));
        assert_eq!(ping_figures(&[]), None);
    }
}

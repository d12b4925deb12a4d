//! `overlay-loadgen`: many WireGuard peers in one process, against a real relay.
//!
//! Registers N peers through the relay's admin socket, then each peer (a boringtun `Tunn` on
//! its own UDP socket) handshakes, keeps alive and pings the relay now and then. Prints one JSON
//! line: how long until every peer had a session, and the relay's RSS and CPU at steady state.

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use clap::Parser;
use overlay_core::net::wire::build_echo_request;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Simulate many peers against a running relay.
#[derive(Parser, Debug)]
struct Args {
    /// The relay's state directory (for its admin socket).
    #[arg(long)]
    state: PathBuf,
    /// The relay's UDP endpoint.
    #[arg(long)]
    relay: SocketAddr,
    /// The relay's pid, for RSS and CPU figures.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// Number of peers.
    #[arg(long, default_value_t = 1000)]
    peers: usize,
    /// Handshakes started per second (a real fleet does not start in the same millisecond).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of steady state (keepalives and a little traffic) to measure CPU over.
    #[arg(long, default_value_t = 10)]
    steady: u64,
    /// Peer name prefix (names must be unique on the relay).
    #[arg(long, default_value = "load")]
    prefix: String,
}

fn admin(sock: &PathBuf, req: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let mut s = UnixStream::connect(sock)?;
    s.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    if v["status"] != "ok" {
        anyhow::bail!("admin: {}", v["message"]);
    }
    Ok(v["data"].clone())
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn raise_fd_limit(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads the struct; failure leaves the limit unchanged.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

/// One simulated peer.
struct SimPeer {
    secret: StaticSecret,
    relay_key: PublicKey,
    relay: SocketAddr,
    addr: Ipv4Addr,
    index: u32,
    start_at: Instant,
    stop_at: Instant,
}

async fn peer(p: SimPeer, done: Arc<AtomicUsize>) -> anyhow::Result<()> {
    let SimPeer {
        secret,
        relay_key,
        relay,
        addr,
        index,
        start_at,
        stop_at,
    } = p;
    tokio::time::sleep_until(start_at.into()).await;
    let sock = UdpSocket::bind("0.0.0.0:0").await?;
    let mut tunn = Tunn::new(secret, relay_key, None, Some(25), index, None);
    let mut buf = vec![0u8; 2048];
    let mut rx = vec![0u8; 2048];
    if let TunnResult::WriteToNetwork(p) = tunn.format_handshake_initiation(&mut buf, false) {
        sock.send_to(p, relay).await?;
    }
    let mut established = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut next_ping = Instant::now() + Duration::from_secs(2);
    let mut seq = 0u16;
    while Instant::now() < stop_at {
        tokio::select! {
            r = sock.recv_from(&mut rx) => {
                let (n, _) = r?;
                let mut res = tunn.decapsulate(None, &rx[..n], &mut buf);
                while let TunnResult::WriteToNetwork(p) = res {
                    sock.send_to(p, relay).await?;
                    res = tunn.decapsulate(None, &[], &mut buf);
                }
                if !established && tunn.stats().0.is_some() {
                    established = true;
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ = tick.tick() => {
                if let TunnResult::WriteToNetwork(p) = tunn.update_timers(&mut buf) {
                    sock.send_to(p, relay).await?;
                }
                if established && Instant::now() >= next_ping {
                    // A little traffic: one echo to the relay every 5 s.
                    seq = seq.wrapping_add(1);
                    let ping = build_echo_request(addr, Ipv4Addr::new(100, 64, 0, 1), 1, seq, b"load");
                    if let TunnResult::WriteToNetwork(p) = tunn.encapsulate(&ping, &mut buf) {
                        sock.send_to(p, relay).await?;
                    }
                    next_ping = Instant::now() + Duration::from_secs(5);
                }
            }
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // A test build of overlay-core (feature sim-time) freezes boringtun's clock.
    anyhow::ensure!(
        !overlay_core::SIMULATED_TIME,
        "built with simulated time (a test build of overlay-core); build with `cargo build --release --bins`"
    );
    let args = Args::parse();
    raise_fd_limit(args.peers as u64 + 256);
    let sock = args.state.join("admin.sock");
    let mut peers = Vec::with_capacity(args.peers);
    let mut relay_key = None;
    for i in 0..args.peers {
        let secret = StaticSecret::random_from_rng(rand::rngs::OsRng);
        let public = PublicKey::from(&secret);
        let added = admin(
            &sock,
            &serde_json::json!({"cmd": "peer_add", "name": format!("{}-{i}", args.prefix),
                "public_key": overlay_core::identity::key::encode(public.as_bytes())}),
        )?;
        let addr: Ipv4Addr = added["address"].as_str().unwrap_or_default().parse()?;
        if relay_key.is_none() {
            relay_key = Some(overlay_core::identity::key::decode(
                added["relay_public_key"].as_str().unwrap_or_default(),
            )?);
        }
        peers.push((secret, addr));
    }
    let relay_key = PublicKey::from(relay_key.ok_or_else(|| anyhow::anyhow!("no peers"))?);
    let done = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let spacing = Duration::from_micros(1_000_000 / args.rate.max(1));
    // Handshakes take at most a few seconds; steady state follows.
    let stop_at = began + Duration::from_secs(30 + args.steady);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (secret, addr)) in peers.into_iter().enumerate() {
        let start_at = began + spacing * i as u32;
        let p = SimPeer {
            secret,
            relay_key,
            relay: args.relay,
            addr,
            index: i as u32 + 1,
            start_at,
            stop_at,
        };
        tasks.spawn(peer(p, done.clone()));
    }
    let deadline = began + Duration::from_secs(30);
    let mut all_secs = None;
    while Instant::now() < deadline {
        if done.load(Ordering::SeqCst) >= args.peers {
            all_secs = Some(began.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Steady state: keepalives and pings; measure the relay's CPU over it.
    let hz = 100.0; // USER_HZ on Linux
    let cpu_before = args.relay_pid.and_then(proc_cpu_ticks);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.steady)).await;
    let cpu_after = args.relay_pid.and_then(proc_cpu_ticks);
    let cpu_pct = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => {
            Some((b.saturating_sub(a)) as f64 / hz / t0.elapsed().as_secs_f64() * 100.0)
        }
        _ => None,
    };
    let rss_mb = args
        .relay_pid
        .and_then(proc_rss_kb)
        .map(|kb| kb as f64 / 1024.0);
    tasks.abort_all();
    println!(
        "{}",
        serde_json::json!({
            "peers": args.peers,
            "handshaken": done.load(Ordering::SeqCst),
            "all_handshaken_secs": all_secs,
            "relay_rss_mb": rss_mb,
            "relay_cpu_percent_steady": cpu_pct,
            "steady_secs": args.steady,
        })
    );
    Ok(())
}

//! `overlay-flood`: floods a relay's UDP port with join datagrams, for tests and benches.
//!
//! `anon`: anonymous join datagrams (the join magic, then random bytes: no token for this
//! relay) at a given rate, sent in `sendmmsg` batches from one socket; python cannot send
//! 100k datagrams a second. `forge`: well-formed join requests for a token with a wrong secret,
//! sent through a raw socket with a forged source address (the forged-source lockout case).
//! Prints one JSON line with what was sent. Only for use inside test namespaces.

use clap::{Parser, Subcommand};
use overlay_core::identity::join::{JoinInitiator, JoinRequest};
use overlay_core::identity::token::Token;
use rand::RngCore;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Flood a relay with join datagrams.
#[derive(Parser, Debug)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Anonymous join datagrams at a rate.
    Anon {
        /// The relay's UDP endpoint.
        #[arg(long)]
        relay: SocketAddr,
        /// Datagrams per second.
        #[arg(long)]
        rate: u64,
        /// How long to send, seconds.
        #[arg(long)]
        secs: f64,
        /// Datagram size in bytes.
        #[arg(long, default_value_t = 200)]
        size: usize,
    },
    /// Join requests with a wrong secret for TOKEN, from a forged source address.
    Forge {
        /// The relay's UDP endpoint (IPv4).
        #[arg(long)]
        relay: SocketAddrV4Arg,
        /// A valid token; its secret is changed before use.
        #[arg(long)]
        token: String,
        /// The source address to forge.
        #[arg(long)]
        source: Ipv4Addr,
        /// How many requests.
        #[arg(long, default_value_t = 12)]
        count: u32,
    },
}

type SocketAddrV4Arg = std::net::SocketAddrV4;

/// Sends `n` datagrams of `bufs` on a connected socket with one `sendmmsg` call; returns how many went.
fn send_batch(sock: &UdpSocket, bufs: &mut [Vec<u8>]) -> usize {
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: an all-zero mmsghdr is valid (no name, no control data).
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: msgs points at valid headers whose iovecs point into `bufs`, alive for the call.
    let n = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as u32,
            libc::MSG_DONTWAIT,
        )
    };
    n.max(0) as usize
}

fn anon(relay: SocketAddr, rate: u64, secs: f64, size: usize) -> anyhow::Result<()> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(relay)?;
    let size = size.max(8);
    let mut rng = rand::rngs::OsRng;
    const BATCH: usize = 32;
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; size]).collect();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let (mut sent, mut attempted) = (0u64, 0u64);
    while Instant::now() < end {
        // Paced: as many as the rate allows by now, in batches.
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if attempted >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let n = ((due - attempted) as usize).min(BATCH);
        for b in bufs.iter_mut().take(n) {
            rng.fill_bytes(b);
            b[..4].copy_from_slice(b"OVJ\x01");
        }
        sent += send_batch(&sock, &mut bufs[..n]) as u64;
        attempted += n as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"mode": "anon", "sent": sent, "attempted": attempted,
            "secs": elapsed, "rate": sent as f64 / elapsed})
    );
    Ok(())
}

fn forge(
    relay: std::net::SocketAddrV4,
    token: &str,
    source: Ipv4Addr,
    count: u32,
) -> anyhow::Result<()> {
    let mut t = Token::parse(token)?;
    t.secret[0] ^= 0xff;
    // SAFETY: plain socket call; the fd is checked and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        anyhow::bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*relay.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut sent = 0;
    for i in 0..count {
        let node = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        let req = JoinRequest {
            token_id: t.id.clone(),
            token_secret: t.secret,
            name: None,
            hint: Some("forger".into()),
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
        };
        let (_, d) = JoinInitiator::new(&node, t.relay_key, &req, &mut rand::rngs::OsRng)?;
        let packet = overlay_core::net::wire::build_udp(
            source,
            40000 + i as u16,
            *relay.ip(),
            relay.port(),
            &d,
        );
        // SAFETY: packet and dst are valid for the call.
        let n = unsafe {
            libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&dst as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n > 0 {
            sent += 1;
        }
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    println!(
        "{}",
        serde_json::json!({"mode": "forge", "sent": sent, "source": source.to_string()})
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // A test build of overlay-core (feature sim-time) freezes boringtun's clock.
    anyhow::ensure!(
        !overlay_core::SIMULATED_TIME,
        "built with simulated time (a test build of overlay-core); build with `cargo build --release --bins`"
    );
    match Args::parse().mode {
        Mode::Anon {
            relay,
            rate,
            secs,
            size,
        } => anon(relay, rate, secs, size),
        Mode::Forge {
            relay,
            token,
            source,
            count,
        } => forge(relay, &token, source, count),
    }
}

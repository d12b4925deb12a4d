//! The node's data path: TUN <-> boringtun <-> UDP to the relay, or the stream to its URL.
//!
//! Which way datagrams go is decided by `overlay_core::stream::transport::Chooser` in the timer
//! task; the data thread reads the choice from an atomic. The stream is a tokio task
//! ([`Tunnel::stream_task`]) that talks to the data thread through two bounded queues and a
//! wake-up descriptor the data thread polls with the TUN device and the UDP socket.
//!
//! One thread moves packets in both directions (see [`DataPath`]); a task drives the WireGuard
//! timers. The `Tunn` sits behind a mutex that is held only for the cryptographic call, never
//! across I/O.
//!
//! Both directions work in batches, which is where the speed comes from: the TUN device hands
//! over TCP super-packets of up to 64 KiB (TSO, split here into MTU-sized packets) and takes
//! coalesced ones back (GRO), and the UDP socket sends a train of equal-sized datagrams in one
//! call (GSO) and receives many per call (recvmmsg, GRO). Buffers are allocated once.

use crate::daemon::cpu_latency::CpuLatencyRequest;
use crate::daemon::relaystream::{self, Target};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use overlay_core::batch::SendBatch;
use overlay_core::control::{self, Owner};
use overlay_core::cpu_latency::{Change, Hold, Mode, LINGER};
use overlay_core::packet;
use overlay_core::prefix::Ipv4Prefix;
use overlay_core::spin::Spin;
use overlay_core::stream::transport::{Action, Chooser, Mode as TransportMode, Transport};
use overlay_sys::udp::Udp;
use overlay_sys::wake::Wake;
use quinn_udp::RecvMeta;
use serde::Serialize;
use std::io::{ErrorKind, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tun_rs::{DeviceImpl, GROTable, SyncDevice, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

const BUF: usize = 65536;
/// Bytes of encrypted datagrams gathered before they are sent (a few GSO runs).
const SEND_BATCH: usize = 256 << 10;
/// What encryption adds to a packet at most: header, tag and padding to 16 bytes.
const SEAL_OVERHEAD: usize = 16 + 16 + 15;
/// Receive buffers per recvmmsg call, each big enough for one GRO-coalesced train.
const RECV_SLOTS: usize = 8;
/// How long a send from the data thread waits for room in a full socket buffer before it
/// drops the rest of the batch (the relay is the node's only peer: waiting a little costs no
/// one else anything).
const SEND_WAIT: Duration = Duration::from_millis(5);
const TIMER_TICK: Duration = Duration::from_millis(250);
/// The relay's control datagrams waiting for the daemon's control client at most (it reads
/// them at once; the relay sends one per request and a notice per registry change).
pub const CONTROL_QUEUE: usize = 256;
/// Batches of datagrams waiting for the stream's writer at most (each a TUN read's worth).
const STREAM_OUT_QUEUE: usize = 256;
/// Datagrams from the stream waiting for the data thread at most.
const STREAM_IN_QUEUE: usize = 4096;
/// Stream datagrams the data thread takes per turn.
const STREAM_READS_PER_TURN: usize = 256;
/// The longest wait between attempts to open the stream.
const STREAM_RETRY_MAX: Duration = Duration::from_secs(10);

/// Settings of one tunnel to the relay.
pub struct TunnelConfig {
    /// The node's private key.
    pub private_key: [u8; 32],
    /// The relay's public key.
    pub relay_key: [u8; 32],
    /// The relay's endpoint as configured (`host:port`).
    pub endpoint: String,
    /// Inner source addresses accepted from the relay.
    pub allowed: Vec<Ipv4Prefix>,
    /// Persistent keepalive in seconds.
    pub keepalive: Option<u16>,
    /// When to ask the kernel for quick CPU wake-ups (see `overlay_core::cpu_latency`).
    pub cpu_latency: Mode,
    /// The relay's overlay address: its control channel is the daemon's alone, never carried
    /// to or from the TUN device.
    pub relay_address: Ipv4Addr,
    /// The relay's URL for the stream, if it has one.
    pub url: Option<String>,
    /// Which transports may be used.
    pub transport: TransportMode,
}

/// Counters of the data path, readable while it runs.
#[derive(Default)]
pub struct Stats {
    rx_bytes: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    tx_packets: AtomicU64,
    drop_tun_invalid: AtomicU64,
    drop_rejected: AtomicU64,
    drop_foreign_source: AtomicU64,
    drop_unknown_sender: AtomicU64,
    drop_send: AtomicU64,
    /// Packets local programs wrote to the TUN device for the relay's control channel.
    drop_local_control: AtomicU64,
    /// Control datagrams from the relay that found the daemon's queue full.
    drop_control_queue: AtomicU64,
    /// Milliseconds since `started` when the relay last sent anything that authenticated.
    last_rx_ms: AtomicU64,
    /// The round-trip floor to the relay in microseconds; 0 until measured.
    relay_rtt_us: AtomicU64,
    /// Whether the data thread holds the kernel's CPU-latency request now.
    cpu_latency_held: AtomicBool,
    /// How many times it took the request.
    cpu_latency_holds: AtomicU64,
    /// Milliseconds since `started` when an authenticated datagram last came over UDP.
    last_udp_rx_ms: AtomicU64,
    /// Batches or datagrams dropped because a stream queue was full.
    drop_stream_queue: AtomicU64,
}

/// A snapshot of the tunnel for `overlay status`.
#[derive(Serialize, Debug)]
pub struct TunnelStatus {
    /// The relay endpoint in use.
    pub endpoint: String,
    /// Seconds since the last completed handshake.
    pub last_handshake_secs: Option<u64>,
    /// Inner bytes received.
    pub rx_bytes: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    /// Inner packets received.
    pub rx_packets: u64,
    /// Inner packets sent.
    pub tx_packets: u64,
    /// Drops by reason.
    pub drops: std::collections::BTreeMap<&'static str, u64>,
    /// Seconds since the relay last sent anything that authenticated.
    pub last_rx_secs: Option<u64>,
    /// Quick CPU wake-ups around traffic.
    pub cpu_latency: CpuLatencyStatus,
    /// The transport in use: `udp` or `tcp`.
    pub transport: Transport,
    /// The transports allowed: `auto`, `udp` or `tcp`.
    pub transport_mode: TransportMode,
    /// The relay's URL for the stream, if it has one.
    pub url: Option<String>,
}

/// The CPU-latency request in `overlay status`.
#[derive(Serialize, Debug)]
pub struct CpuLatencyStatus {
    /// auto, on or off.
    pub mode: String,
    /// Whether the request is held now.
    pub held: bool,
    /// How many times it was taken.
    pub holds: u64,
    /// The round-trip floor to the relay that `auto` decides by, in microseconds.
    pub relay_rtt_us: Option<u64>,
}

/// A running tunnel.
pub struct Tunnel {
    tunn: Mutex<Tunn>,
    sock: Udp,
    relay: RwLock<SocketAddr>,
    endpoint: String,
    allowed: Vec<Ipv4Prefix>,
    stats: Stats,
    started: std::time::Instant,
    cpu_latency: Mode,
    relay_address: Ipv4Addr,
    /// The traffic capture's read-only tap, once the daemon sets it.
    tap: std::sync::OnceLock<crate::traffic::tap::Tap>,
    /// Where the relay's control datagrams go: the daemon's control client, never the TUN.
    control: std::sync::OnceLock<tokio::sync::mpsc::Sender<Vec<u8>>>,
    /// The transport decision, driven by the timer task.
    chooser: Mutex<Chooser>,
    /// What the data thread sends over: 0 UDP, 1 the stream.
    transport: AtomicU8,
    /// Tells the stream task which transport is in use.
    want: tokio::sync::watch::Sender<Transport>,
    /// Where the stream goes, when the relay has a URL.
    target: Option<Target>,
    /// Encrypted datagrams for the stream, in batches (see [`push_datagram`]).
    stream_out: tokio::sync::mpsc::Sender<Vec<u8>>,
    stream_out_rx: Mutex<Option<tokio::sync::mpsc::Receiver<Vec<u8>>>>,
    /// Datagrams from the stream for the data thread.
    stream_in: std::sync::mpsc::SyncSender<Vec<u8>>,
    stream_in_rx: Mutex<Option<std::sync::mpsc::Receiver<Vec<u8>>>>,
    /// Wakes the data thread when the stream delivered.
    wake: Wake,
    /// When the node gave up on UDP, until the first datagram went over the stream.
    gave_up_udp: Mutex<Option<Instant>>,
}

/// Which way a datagram came, so an answer goes back the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Udp(SocketAddr),
    Stream,
}

/// Appends `d` to a batch for the stream: a 2-byte length, then the datagram.
fn push_datagram(out: &mut Vec<u8>, d: &[u8]) {
    // WireGuard datagrams are far below 64 KiB (inner MTU plus 32 bytes).
    let len = u16::try_from(d.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&d[..usize::from(len)]);
}

/// The datagrams of a batch made by [`push_datagram`].
fn batch_datagrams(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = b;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (d, after) = tail.split_at(len);
        rest = after;
        Some(d)
    })
}

impl Tunnel {
    /// Binds the UDP socket and resolves the relay; does not send anything yet.
    pub async fn new(cfg: TunnelConfig) -> anyhow::Result<Arc<Tunnel>> {
        let relay = resolve(&cfg.endpoint).await?;
        let bind: SocketAddr = if relay.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let sock = Udp::bind(bind)?;
        let target = match &cfg.url {
            Some(u) => Some(Target::from_env(u)?),
            None => None,
        };
        if cfg.transport == TransportMode::Tcp && target.is_none() {
            anyhow::bail!(
                "the transport is tcp, but the relay has no URL for it; join with a token of a relay started with --tcp-listen, or use --transport auto"
            );
        }
        let chooser = Chooser::new(cfg.transport, target.is_some());
        let current = chooser.current();
        let (stream_out, out_rx) = tokio::sync::mpsc::channel(STREAM_OUT_QUEUE);
        let (stream_in, in_rx) = std::sync::mpsc::sync_channel(STREAM_IN_QUEUE);
        let tunn = Tunn::new(
            StaticSecret::from(cfg.private_key),
            PublicKey::from(cfg.relay_key),
            None,
            cfg.keepalive,
            rand::random::<u32>() & 0x00ff_ffff,
            None,
        );
        Ok(Arc::new(Tunnel {
            tunn: Mutex::new(tunn),
            sock,
            relay: RwLock::new(relay),
            endpoint: cfg.endpoint,
            allowed: cfg.allowed,
            stats: Stats::default(),
            started: std::time::Instant::now(),
            cpu_latency: cfg.cpu_latency,
            relay_address: cfg.relay_address,
            tap: std::sync::OnceLock::new(),
            control: std::sync::OnceLock::new(),
            chooser: Mutex::new(chooser),
            transport: AtomicU8::new(u8::from(current == Transport::Tcp)),
            want: tokio::sync::watch::Sender::new(current),
            target,
            stream_out,
            stream_out_rx: Mutex::new(Some(out_rx)),
            stream_in,
            stream_in_rx: Mutex::new(Some(in_rx)),
            wake: Wake::new()?,
            gave_up_udp: Mutex::new(None),
        }))
    }

    /// Lets the traffic capture see the plaintext packets (it never slows them down).
    pub fn set_tap(&self, tap: crate::traffic::tap::Tap) {
        let _ = self.tap.set(tap);
    }

    /// Hands the relay's control datagrams (whole inner packets) to `sink` from now on; until
    /// then they are dropped. Set once, by the daemon's control client.
    pub fn set_control_sink(&self, sink: tokio::sync::mpsc::Sender<Vec<u8>>) {
        let _ = self.control.set(sink);
    }

    /// Sends the daemon's control datagram (a whole inner packet) through the tunnel. It does
    /// not pass the TUN device, so only the daemon can originate control traffic; before a
    /// session exists boringtun queues it and starts the handshake.
    pub fn send_control(&self, packet: &[u8]) {
        // encapsulate needs room for its overhead, and 148 bytes for a handshake initiation.
        let mut buf = vec![0u8; (packet.len() + SEAL_OVERHEAD).max(256)];
        let r = self.lock().encapsulate(packet, &mut buf);
        match r {
            TunnResult::WriteToNetwork(d) => {
                self.send_now(d);
                self.stats
                    .tx_bytes
                    .fetch_add(packet.len() as u64, Ordering::Relaxed);
                self.stats.tx_packets.fetch_add(1, Ordering::Relaxed);
            }
            TunnResult::Err(e) => tracing::debug!("encapsulate control: {e:?}"),
            _ => {}
        }
    }

    /// Passes a control datagram from the relay to the daemon; false when it was not one.
    fn to_daemon(&self, p: &[u8]) -> bool {
        let Ok(ip) = packet::Ipv4Packet::new_checked(p) else {
            return false;
        };
        if control::owner(&ip, self.relay_address) != Owner::Daemon {
            return false;
        }
        // Rare (replies and notices): a copy per datagram is fine here.
        let queued = self
            .control
            .get()
            .is_some_and(|c| c.try_send(ip.as_bytes().to_vec()).is_ok());
        if !queued {
            self.stats
                .drop_control_queue
                .fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Records the round-trip floor to the relay (what `auto` CPU-latency mode decides by).
    pub fn set_relay_rtt(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        self.stats.relay_rtt_us.store(us, Ordering::Relaxed);
    }

    /// Whether a session with the relay exists (a handshake completed).
    pub fn handshaken(&self) -> bool {
        self.lock().stats().0.is_some()
    }

    fn relay_rtt(&self) -> Option<Duration> {
        match self.stats.relay_rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// The transport the data path sends over now.
    pub fn transport(&self) -> Transport {
        if self.transport.load(Ordering::Relaxed) == 1 {
            Transport::Tcp
        } else {
            Transport::Udp
        }
    }

    /// Sends one datagram to the relay over the transport in use.
    fn send_now(&self, d: &[u8]) {
        match self.transport() {
            Transport::Udp => self.sock.send_now(d, self.relay()),
            Transport::Tcp => self.send_stream(d),
        }
    }

    /// Sends one datagram back the way `via` says.
    fn send_via(&self, via: Via, d: &[u8]) {
        match via {
            Via::Udp(to) => self.sock.send_now(d, to),
            Via::Stream => self.send_stream(d),
        }
    }

    fn send_stream(&self, d: &[u8]) {
        let mut b = Vec::with_capacity(d.len() + 2);
        push_datagram(&mut b, d);
        self.queue_stream(b);
    }

    /// Hands a batch to the stream's writer; a full queue drops it, like a full socket buffer.
    fn queue_stream(&self, batch: Vec<u8>) {
        if self.stream_out.try_send(batch).is_err() {
            self.stats.drop_stream_queue.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn relay(&self) -> SocketAddr {
        *self.relay.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tunn> {
        self.tunn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the handshake, then moves packets on a thread of its own and drives the timers
    /// until either fails.
    pub async fn run(self: Arc<Self>, dev: Arc<SyncDevice>) -> anyhow::Result<()> {
        self.initiate().await;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        std::thread::Builder::new()
            .name("overlay-data".into())
            .spawn(move || {
                let _ = done_tx.send(DataPath::new(&this, &dev).run(&this, &dev));
            })?;
        let timers = tokio::spawn(self.clone().timers());
        // Ends with the runtime; it is idle while UDP is in use.
        tokio::spawn(self.clone().stream_task());
        tokio::select! {
            r = done_rx => r.map_err(|_| anyhow::anyhow!("the data path thread died"))?,
            r = timers => r?,
        }
    }

    async fn initiate(&self) {
        let mut buf = vec![0u8; 256];
        let r = self.lock().format_handshake_initiation(&mut buf, false);
        if let TunnResult::WriteToNetwork(p) = r {
            self.send_now(p);
            if self.transport() == Transport::Udp {
                self.chooser().udp_initiation_sent(Instant::now());
            }
        }
    }

    fn chooser(&self) -> std::sync::MutexGuard<'_, Chooser> {
        self.chooser.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends what `batch` holds and counts what could not be sent.
    fn flush(&self, batch: &mut SendBatch) {
        if batch.is_empty() {
            return;
        }
        if self.transport() == Transport::Tcp {
            let mut b = Vec::with_capacity(batch.datagrams() * 2 + SEND_BATCH / 4);
            for run in batch.runs() {
                for d in batch.bytes(run).chunks(run.segment.max(1)) {
                    push_datagram(&mut b, d);
                }
            }
            batch.clear();
            self.queue_stream(b);
            return;
        }
        let lost = self.sock.send_batch(batch, SEND_WAIT);
        if lost > 0 {
            self.stats
                .drop_send
                .fetch_add(lost as u64, Ordering::Relaxed);
        }
    }

    /// Decrypts one datagram from the relay into `pkt` after `headroom` bytes; true when it
    /// holds a packet for the TUN device. Handshake messages are answered here.
    fn open(
        &self,
        d: &[u8],
        via: Via,
        pkt: &mut Vec<u8>,
        headroom: usize,
        scratch: &mut [u8],
    ) -> bool {
        pkt.clear();
        pkt.resize(headroom + d.len(), 0);
        let src = match via {
            Via::Udp(from) => from.ip(),
            Via::Stream => self.relay().ip(),
        };
        let r = self.lock().decapsulate(Some(src), d, &mut pkt[headroom..]);
        if !matches!(r, TunnResult::Err(_)) {
            self.mark_rx();
            if matches!(via, Via::Udp(_)) {
                // The timer task sees this and moves back to UDP if it was on the stream.
                let ms = self.started.elapsed().as_millis() as u64 + 1;
                self.stats.last_udp_rx_ms.store(ms, Ordering::Relaxed);
            }
        }
        match r {
            TunnResult::WriteToNetwork(p) => {
                self.send_via(via, p);
                // Packets queued during the handshake go out now, the way in use.
                loop {
                    let r = self.lock().decapsulate(None, &[], scratch);
                    match r {
                        TunnResult::WriteToNetwork(p) => self.send_now(p),
                        _ => break,
                    }
                }
                false
            }
            TunnResult::WriteToTunnelV4(p, src) => {
                if !self.allowed.iter().any(|a| a.contains(src)) {
                    self.stats
                        .drop_foreign_source
                        .fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                let len = p.len();
                self.stats.rx_bytes.fetch_add(len as u64, Ordering::Relaxed);
                self.stats.rx_packets.fetch_add(1, Ordering::Relaxed);
                if self.to_daemon(p) {
                    return false;
                }
                if let Some(tap) = self.tap.get() {
                    tap.packet(p, false);
                }
                pkt.truncate(headroom + len);
                true
            }
            TunnResult::WriteToTunnelV6(..) => {
                self.stats
                    .drop_foreign_source
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
            TunnResult::Done => false,
            TunnResult::Err(e) => {
                tracing::debug!("decapsulate: {e:?}");
                self.stats.drop_rejected.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    async fn timers(self: Arc<Self>) -> anyhow::Result<()> {
        let mut buf = vec![0u8; BUF];
        let mut tick = tokio::time::interval(TIMER_TICK);
        let mut seen_udp_rx = 0;
        loop {
            tick.tick().await;
            let now = Instant::now();
            let udp_rx = self.stats.last_udp_rx_ms.load(Ordering::Relaxed);
            let mut actions = Vec::new();
            if udp_rx != seen_udp_rx {
                seen_udp_rx = udp_rx;
                actions.extend(self.chooser().udp_answered(now));
            }
            actions.extend(self.chooser().poll(now));
            for a in actions {
                self.act(a, &mut buf);
            }
            let r = self.lock().update_timers(&mut buf);
            match r {
                TunnResult::WriteToNetwork(p) => {
                    self.send_now(p);
                    // A handshake initiation (message type 1) over UDP waits for its answer.
                    if self.transport() == Transport::Udp && p.first() == Some(&1) {
                        self.chooser().udp_initiation_sent(now);
                    }
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    // Keep trying for as long as we run; the relay may have moved (DNS).
                    if let Ok(addr) = resolve(&self.endpoint).await {
                        *self.relay.write().unwrap_or_else(|e| e.into_inner()) = addr;
                    }
                    self.initiate().await;
                }
                _ => {}
            }
        }
    }

    /// Carries out a transport decision.
    fn act(&self, a: Action, buf: &mut [u8]) {
        match a {
            Action::Switch(t) => {
                self.transport
                    .store(u8::from(t == Transport::Tcp), Ordering::Relaxed);
                self.want.send_replace(t);
                match t {
                    Transport::Tcp => {
                        *self.gave_up_udp.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(Instant::now());
                        tracing::warn!(
                            url = %self.target.as_ref().map(Target::describe).unwrap_or_default(),
                            "the relay did not answer over UDP within {} s: using the stream to its URL (UDP is tried again every {} s)",
                            overlay_core::stream::transport::FALLBACK_AFTER.as_secs(),
                            overlay_core::stream::transport::PROBE_EVERY.as_secs()
                        );
                    }
                    Transport::Udp => {
                        tracing::info!("the relay answered over UDP again: back on UDP");
                    }
                }
            }
            Action::ProbeUdp => {
                // A new handshake over UDP: its answer comes back over UDP only if UDP passes.
                if let TunnResult::WriteToNetwork(p) =
                    self.lock().format_handshake_initiation(buf, true)
                {
                    tracing::debug!("probing UDP to the relay");
                    self.sock.send_now(p, self.relay());
                }
            }
        }
    }

    /// Keeps the stream to the relay's URL open while the stream is the transport in use:
    /// connects (again after a failure, with growing waits), starts a handshake over it, and
    /// moves datagrams between it and the data thread.
    async fn stream_task(self: Arc<Self>) {
        let Some(target) = self.target.clone() else {
            return;
        };
        let Some(mut out) = self
            .stream_out_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let mut want = self.want.subscribe();
        let mut retry = Duration::from_millis(250);
        let mut buf = vec![0u8; 256];
        loop {
            while *want.borrow_and_update() != Transport::Tcp {
                if want.changed().await.is_err() {
                    return;
                }
            }
            let stream = match relaystream::connect(&target).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("{e}; trying again in {} ms", retry.as_millis());
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(STREAM_RETRY_MAX);
                    continue;
                }
            };
            retry = Duration::from_millis(250);
            tracing::info!(url = %target.describe(), "stream to the relay open");
            let (mut r, mut w) = stream.split();
            // What queued while there was no stream is stale.
            while out.try_recv().is_ok() {}
            // The relay learns the stream is this node's from an authenticated datagram.
            let init = match self.lock().format_handshake_initiation(&mut buf, true) {
                TunnResult::WriteToNetwork(p) => p.to_vec(),
                _ => Vec::new(),
            };
            if !init.is_empty() && w.send(&init).await.is_err() {
                continue;
            }
            if let Some(at) = self
                .gave_up_udp
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                tracing::info!(
                    us = at.elapsed().as_micros() as u64,
                    "first datagram over the stream after giving up on UDP"
                );
            }
            let why = loop {
                tokio::select! {
                    b = out.recv() => {
                        let Some(b) = b else { return };
                        let sent = tokio::time::timeout(
                            Duration::from_secs(15),
                            w.send_all(batch_datagrams(&b)),
                        )
                        .await;
                        match sent {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => break e.to_string(),
                            Err(_) => break "the relay stopped taking writes".to_string(),
                        }
                    }
                    got = r.recv_batch(|d| {
                        if self.stream_in.try_send(d.to_vec()).is_err() {
                            self.stats.drop_stream_queue.fetch_add(1, Ordering::Relaxed);
                        }
                    }) => {
                        self.wake.wake();
                        match got {
                            Ok(true) => {}
                            Ok(false) => break "the relay closed it".to_string(),
                            Err(e) => break e.to_string(),
                        }
                    }
                    _ = want.changed() => {
                        if *want.borrow() != Transport::Tcp {
                            break "back on UDP".to_string();
                        }
                    }
                }
            };
            tracing::info!("stream to the relay closed: {why}");
        }
    }

    fn mark_rx(&self) {
        let ms = self.started.elapsed().as_millis() as u64 + 1;
        self.stats.last_rx_ms.store(ms, Ordering::Relaxed);
    }

    /// The tunnel's counters and handshake age.
    pub fn status(&self) -> TunnelStatus {
        let (hs, ..) = self.lock().stats();
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut drops = std::collections::BTreeMap::new();
        for (k, v) in [
            ("tun_invalid", get(&s.drop_tun_invalid)),
            ("rejected", get(&s.drop_rejected)),
            ("foreign_source", get(&s.drop_foreign_source)),
            ("unknown_sender", get(&s.drop_unknown_sender)),
            ("send_failed", get(&s.drop_send)),
            ("local_control", get(&s.drop_local_control)),
            ("control_queue", get(&s.drop_control_queue)),
            ("stream_queue", get(&s.drop_stream_queue)),
        ] {
            if v > 0 {
                drops.insert(k, v);
            }
        }
        TunnelStatus {
            endpoint: self.relay().to_string(),
            last_handshake_secs: hs.map(|d| d.as_secs()),
            last_rx_secs: match get(&s.last_rx_ms) {
                0 => None,
                ms => Some(
                    self.started
                        .elapsed()
                        .as_millis()
                        .saturating_sub(u128::from(ms)) as u64
                        / 1000,
                ),
            },
            rx_bytes: get(&s.rx_bytes),
            tx_bytes: get(&s.tx_bytes),
            rx_packets: get(&s.rx_packets),
            tx_packets: get(&s.tx_packets),
            drops,
            cpu_latency: CpuLatencyStatus {
                mode: self.cpu_latency.to_string(),
                held: s.cpu_latency_held.load(Ordering::Relaxed),
                holds: get(&s.cpu_latency_holds),
                relay_rtt_us: self.relay_rtt().map(|d| d.as_micros() as u64),
            },
            transport: self.transport(),
            transport_mode: self.chooser().mode(),
            url: self.target.as_ref().map(|t| t.url.to_string()),
        }
    }
}

/// The data path's buffers, allocated once, and its loop.
///
/// One thread serves both directions: it polls the TUN device and the UDP socket, and after
/// traffic it may keep polling without sleeping for up to [`SPIN`]. A request's answer
/// usually comes back within that window, so it is picked up without the thread (and, on a
/// VM, the virtual CPU) being put to sleep and woken again, which is what most of the per-hop
/// latency was. `Spin` stops polling where it does not pay (answers over a WAN). While
/// packets move, `hold` also keeps the other CPUs quick to wake, for the hand-overs to the
/// application and, on one host, to the relay (see `overlay_core::cpu_latency`).
/// Encryption of a bulk flow and decryption of its acknowledgements fit one core; the relay's
/// work and the peer's run on the other.
struct DataPath {
    /// TUN read: a super-packet with its virtio header, split into `bufs`.
    original: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    batch: SendBatch,
    /// UDP receive: RECV_SLOTS buffers of BUF bytes, possibly GRO trains.
    rx: Vec<u8>,
    meta: [RecvMeta; RECV_SLOTS],
    /// Decrypted packets with `headroom` bytes free in front for the virtio header.
    pkts: Vec<Vec<u8>>,
    headroom: usize,
    gro: GROTable,
    scratch: Vec<u8>,
    spin: Spin,
    hold: Hold,
    request: CpuLatencyRequest,
    /// Datagrams the stream task received.
    stream_in: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
}

/// How long the data thread keeps polling after the last packet before it sleeps, when
/// polling pays (see `overlay_core::spin`). Covers an answer's round trip through the relay
/// on a LAN or one host; measured: ping through the relay between two namespaces went from
/// ~270 to ~70 µs median with the relay polling too (scripts/bench.sh dataplane).
const SPIN: Duration = Duration::from_micros(500);
/// TUN reads (each up to IDEAL_BATCH_SIZE packets) before the socket gets its turn.
const TUN_READS_PER_TURN: usize = 4;
/// recvmmsg calls before the TUN device gets its turn.
const UDP_READS_PER_TURN: usize = 4;

impl DataPath {
    fn new(tunnel: &Tunnel, dev: &SyncDevice) -> DataPath {
        let headroom = if dev.tcp_gso() { VIRTIO_NET_HDR_LEN } else { 0 };
        DataPath {
            original: vec![0u8; VIRTIO_NET_HDR_LEN + BUF],
            // Built one by one: zeroed allocations stay untouched (not resident) until used.
            bufs: (0..IDEAL_BATCH_SIZE).map(|_| vec![0u8; BUF]).collect(),
            sizes: vec![0; IDEAL_BATCH_SIZE],
            batch: SendBatch::new(SEND_BATCH, tunnel.sock.max_gso_segments()),
            rx: vec![0u8; RECV_SLOTS * BUF],
            meta: [RecvMeta::default(); RECV_SLOTS],
            pkts: (0..IDEAL_BATCH_SIZE)
                .map(|_| Vec::with_capacity(headroom + BUF))
                .collect(),
            headroom,
            gro: GROTable::default(),
            scratch: vec![0u8; BUF],
            spin: Spin::new(SPIN),
            hold: Hold::new(tunnel.cpu_latency, LINGER),
            request: CpuLatencyRequest::default(),
            stream_in: tunnel
                .stream_in_rx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        }
    }

    /// `moved` counts the applications' packets carried: what the kernel sends that is not
    /// carried (IPv6 router solicitations), WireGuard's own messages (keepalives, handshakes)
    /// and the node's control channel (liveness pings, registry sync) are not traffic to poll
    /// for or to keep CPUs awake for.
    fn run(mut self, t: &Tunnel, dev: &SyncDevice) -> anyhow::Result<()> {
        let dev: &DeviceImpl = dev;
        let fds = [dev.as_raw_fd(), t.sock.as_raw_fd(), t.wake.fd()];
        loop {
            t.wake.reset();
            let moved =
                self.tun_to_udp(t, dev)? + self.udp_to_tun(t, dev) + self.stream_to_tun(t, dev);
            let now = Instant::now();
            if moved > 0 {
                self.spin.traffic(now);
                // After the packets went: asking the kernel must not delay them.
                if let Some(c) = self.hold.traffic(now, t.relay_rtt()) {
                    self.apply(t, c);
                }
            } else if self.spin.keep_polling(now) {
                std::thread::yield_now();
            } else {
                if let Some(c) = self.hold.idle(now) {
                    self.apply(t, c);
                }
                let ms = self.hold.timeout(now).map_or(1000, |d| {
                    i32::try_from(d.as_millis() + 1).unwrap_or(1000).min(1000)
                });
                wait_readable(&fds, ms);
            }
        }
    }

    /// Takes or gives back the kernel's CPU-latency request and shows it in the stats.
    fn apply(&mut self, t: &Tunnel, c: Change) {
        let ok = self.request.apply(c);
        if !ok {
            // No device or no permission (said once in the log): stop asking.
            self.hold = Hold::new(Mode::Off, LINGER);
        }
        let held = ok && c == Change::Take;
        t.stats.cpu_latency_held.store(held, Ordering::Relaxed);
        if held && t.stats.cpu_latency_holds.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::info!(
                "asking the kernel for quick CPU wake-ups while packets move (--cpu-latency {}; \
                 relay round trip {:?}); `overlay status` shows when",
                t.cpu_latency,
                t.relay_rtt()
            );
        }
    }

    /// Reads from the TUN device until it is empty (or its turn is over), encrypts, sends.
    fn tun_to_udp(&mut self, t: &Tunnel, dev: &DeviceImpl) -> anyhow::Result<usize> {
        let mut moved = 0;
        for _ in 0..TUN_READS_PER_TURN {
            let n = match dev.recv_multiple(&mut self.original, &mut self.bufs, &mut self.sizes, 0)
            {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // A super-packet the splitter cannot handle: drop it, keep the device.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Other) => {
                    tracing::debug!("tun read: {e}");
                    t.stats.drop_tun_invalid.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => return Err(anyhow::anyhow!("reading the TUN device failed: {e}")),
            };
            let relay = t.relay();
            for (buf, &len) in self.bufs.iter().zip(&self.sizes).take(n) {
                let p = &buf[..len];
                let Ok(ip) = packet::Ipv4Packet::new_checked(p) else {
                    // IPv6 router solicitations and the like: not carried yet.
                    t.stats.drop_tun_invalid.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if control::owner(&ip, t.relay_address) == Owner::Daemon {
                    // A local program speaking to the relay's control port: only the daemon
                    // may (see Tunnel::send_control). Said once; `overlay status` counts them.
                    if t.stats.drop_local_control.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(
                            "dropped UDP from a local program to the relay {}: its control \
                             channel is the daemon's alone (counted as local_control in `overlay status`)",
                            t.relay_address
                        );
                    }
                    continue;
                }
                if let Some(tap) = t.tap.get() {
                    tap.packet(p, true);
                }
                if self.batch.spare(len + SEAL_OVERHEAD).is_none() {
                    t.flush(&mut self.batch);
                }
                let Some(space) = self.batch.spare(len + SEAL_OVERHEAD) else {
                    continue;
                };
                let sealed = match t.lock().encapsulate(p, space) {
                    TunnResult::WriteToNetwork(d) => d.len(),
                    TunnResult::Err(e) => {
                        tracing::debug!("encapsulate: {e:?}");
                        continue;
                    }
                    _ => continue,
                };
                self.batch.commit(relay, sealed);
                moved += 1;
                t.stats.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
                t.stats.tx_packets.fetch_add(1, Ordering::Relaxed);
            }
            t.flush(&mut self.batch);
        }
        Ok(moved)
    }

    /// Receives from the socket until it is empty (or its turn is over), decrypts, and writes
    /// the packets to the TUN device together so GRO can coalesce them.
    fn udp_to_tun(&mut self, t: &Tunnel, dev: &DeviceImpl) -> usize {
        let mut moved = 0;
        for _ in 0..UDP_READS_PER_TURN {
            // On the stack: this runs on every poll, including while the thread spins.
            let mut chunks = self.rx.chunks_mut(BUF);
            let mut iovs: [IoSliceMut<'_>; RECV_SLOTS] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            let got = match t.sock.try_recv(&mut iovs, &mut self.meta) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors for earlier sends surface here; they are not fatal.
                    tracing::debug!("udp receive: {e}");
                    continue;
                }
            };
            let relay = t.relay();
            let mut ready = 0;
            for (m, iov) in self.meta.iter().zip(&iovs).take(got) {
                if m.addr != relay {
                    t.stats.drop_unknown_sender.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                for d in iov[..m.len].chunks(m.stride.max(1)) {
                    if ready == self.pkts.len() {
                        write_tun(dev, &mut self.gro, &mut self.pkts, self.headroom);
                        ready = 0;
                    }
                    if t.open(
                        d,
                        Via::Udp(relay),
                        &mut self.pkts[ready],
                        self.headroom,
                        &mut self.scratch,
                    ) {
                        moved += 1;
                        ready += 1;
                    }
                }
            }
            if ready > 0 {
                write_tun(dev, &mut self.gro, &mut self.pkts[..ready], self.headroom);
            }
        }
        moved
    }
}

impl DataPath {
    /// Decrypts what the stream task received and writes it to the TUN device.
    fn stream_to_tun(&mut self, t: &Tunnel, dev: &DeviceImpl) -> usize {
        let Some(rx) = &self.stream_in else {
            return 0;
        };
        let mut moved = 0;
        let mut ready = 0;
        let mut taken = 0;
        for _ in 0..STREAM_READS_PER_TURN {
            let Ok(d) = rx.try_recv() else { break };
            taken += 1;
            if ready == self.pkts.len() {
                write_tun(dev, &mut self.gro, &mut self.pkts, self.headroom);
                ready = 0;
            }
            if t.open(
                &d,
                Via::Stream,
                &mut self.pkts[ready],
                self.headroom,
                &mut self.scratch,
            ) {
                moved += 1;
                ready += 1;
            }
        }
        if ready > 0 {
            write_tun(dev, &mut self.gro, &mut self.pkts[..ready], self.headroom);
        }
        if taken == STREAM_READS_PER_TURN {
            // More may be waiting: do not sleep before the next turn.
            t.wake.wake();
        }
        moved
    }
}

fn write_tun(dev: &DeviceImpl, gro: &mut GROTable, pkts: &mut [Vec<u8>], headroom: usize) {
    if let Err(e) = dev.send_multiple(gro, pkts, headroom) {
        tracing::debug!("tun write: {e}");
    }
}

/// Sleeps until one of `fds` is readable, or `ms` milliseconds pass.
fn wait_readable(fds: &[RawFd; 3], ms: i32) {
    let mut p = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: p is a valid array of three pollfd for the length given.
    unsafe { libc::poll(p.as_mut_ptr(), 3, ms) };
}

async fn resolve(endpoint: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(endpoint)
        .await
        .map_err(|e| anyhow::anyhow!("cannot resolve the relay endpoint {endpoint}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("the relay endpoint {endpoint} resolves to no address"))
}

//! The node's data path, the I/O side: TUN device <-> `overlay_core::node::Tunnel` <-> UDP to
//! the relay, or the stream to its URL.
//!
//! Everything that decides is in the core's `node::Tunnel` (which packets are carried, the
//! allowed sources, the control channel, counters, the transport choice, the timers,
//! busy-polling and quick CPU wake-ups). This file moves bytes: the TUN device with offload,
//! the batched UDP socket, the stream, one data thread and its wake-ups. The core sits behind
//! a mutex that is held for one call at a time, never across I/O; the data thread drives it
//! (packets, timers, `end_turn`, transmits and events) and the daemon's tasks call in for
//! control datagrams and status.
//!
//! The stream is a tokio task ([`Tunnel::stream_task`]) that talks to the data thread through
//! two bounded queues and a wake-up descriptor the data thread polls with the TUN device and
//! the UDP socket.
//!
//! Both directions work in batches, which is where the speed comes from: the TUN device hands
//! over TCP super-packets of up to 64 KiB (TSO, split here into MTU-sized packets) and takes
//! coalesced ones back (GRO), and the UDP socket sends a train of equal-sized datagrams in one
//! call (GSO) and receives many per call (recvmmsg, GRO). Buffers are allocated once.

use crate::daemon::cpu_latency::CpuLatencyRequest;
use crate::daemon::relaystream::{self, Target};
use overlay_core::net::batch::SendBatch;
use overlay_core::net::prefix::Ipv4Prefix;
use overlay_core::node::cpu_latency::Mode;
use overlay_core::node::tunnel::{MIN_OUT, SEAL_OVERHEAD, TRANSMIT_BUF};
use overlay_core::node::{self, Dropped, Event, Next, Outbound, Received, Via};
use overlay_core::transport::stream::transport::{Mode as TransportMode, Transport};
use overlay_sys::udp::Udp;
use overlay_sys::wake::Wake;
use quinn_udp::RecvMeta;
use serde::Serialize;
use std::io::{ErrorKind, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tun_rs::{DeviceImpl, GROTable, SyncDevice, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

const BUF: usize = 65536;
/// Bytes of encrypted datagrams gathered before they are sent (a few GSO runs).
const SEND_BATCH: usize = 256 << 10;
/// Receive buffers per recvmmsg call, each big enough for one GRO-coalesced train.
const RECV_SLOTS: usize = 8;
/// How long a send from the data thread waits for room in a full socket buffer before it
/// drops the rest of the batch (the relay is the node's only peer: waiting a little costs no
/// one else anything).
const SEND_WAIT: Duration = Duration::from_millis(5);
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
/// The data thread sleeps at most this long (the core's timers wake it sooner).
const MAX_SLEEP_MS: i32 = 1000;

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
    /// When to ask the kernel for quick CPU wake-ups (see `overlay_core::node::cpu_latency`).
    pub cpu_latency: Mode,
    /// The relay's overlay address: its control channel is the daemon's alone, never carried
    /// to or from the TUN device.
    pub relay_address: Ipv4Addr,
    /// The relay's URL for the stream, if it has one.
    pub url: Option<String>,
    /// Which transports may be used.
    pub transport: TransportMode,
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
    core: Mutex<node::Tunnel>,
    sock: Udp,
    endpoint: String,
    /// The traffic capture's read-only tap, once the daemon sets it.
    tap: std::sync::OnceLock<crate::traffic::tap::Tap>,
    /// Where the relay's control datagrams go: the daemon's control client, never the TUN.
    control: std::sync::OnceLock<tokio::sync::mpsc::Sender<Vec<u8>>>,
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
    /// Wakes the data thread when the stream delivered or the core has work for it.
    wake: Wake,
    /// When the node gave up on UDP, until the first datagram went over the stream.
    gave_up_udp: Mutex<Option<Instant>>,
    /// The runtime the data thread hands asynchronous work to (resolving the relay again).
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
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
        let core = node::Tunnel::new(
            node::Config {
                private_key: cfg.private_key,
                relay_key: cfg.relay_key,
                keepalive: cfg.keepalive,
                index: rand::random::<u32>(),
                allowed: cfg.allowed,
                relay_address: cfg.relay_address,
                relay,
                cpu_latency: cfg.cpu_latency,
                transport: cfg.transport,
                has_url: target.is_some(),
            },
            Instant::now(),
        );
        let current = core.transport();
        let (stream_out, out_rx) = tokio::sync::mpsc::channel(STREAM_OUT_QUEUE);
        let (stream_in, in_rx) = std::sync::mpsc::sync_channel(STREAM_IN_QUEUE);
        Ok(Arc::new(Tunnel {
            core: Mutex::new(core),
            sock,
            endpoint: cfg.endpoint,
            tap: std::sync::OnceLock::new(),
            control: std::sync::OnceLock::new(),
            want: tokio::sync::watch::Sender::new(current),
            target,
            stream_out,
            stream_out_rx: Mutex::new(Some(out_rx)),
            stream_in,
            stream_in_rx: Mutex::new(Some(in_rx)),
            wake: Wake::new()?,
            gave_up_udp: Mutex::new(None),
            runtime: std::sync::OnceLock::new(),
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
        let mut buf = vec![0u8; (packet.len() + SEAL_OVERHEAD).max(MIN_OUT)];
        let mut core = self.core();
        let (transport, relay) = (core.transport(), core.relay());
        if let Outbound::Datagram(d) = core.send_control(Instant::now(), packet, &mut buf) {
            drop(core);
            self.send_to(transport, relay, d);
        }
    }

    /// Passes a control datagram from the relay to the daemon's control client.
    fn to_daemon(&self, p: &[u8]) {
        // Rare (replies and notices): a copy per datagram is fine here.
        let queued = self
            .control
            .get()
            .is_some_and(|c| c.try_send(p.to_vec()).is_ok());
        if !queued {
            self.core().count_drop(Dropped::ControlQueue, 1);
        }
    }

    /// Records the round-trip floor to the relay (what `auto` CPU-latency mode decides by).
    pub fn set_relay_rtt(&self, rtt: Duration) {
        self.core().set_relay_rtt(rtt);
    }

    /// Whether a session with the relay exists (a handshake completed).
    pub fn handshaken(&self) -> bool {
        self.core().has_session()
    }

    /// The transport the data path sends over now.
    pub fn transport(&self) -> Transport {
        self.core().transport()
    }

    fn core(&self) -> std::sync::MutexGuard<'_, node::Tunnel> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one datagram to the relay over `transport`.
    fn send_to(&self, transport: Transport, relay: SocketAddr, d: &[u8]) {
        match transport {
            Transport::Udp => self.sock.send_now(d, relay),
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
            self.core().count_drop(Dropped::StreamQueue, 1);
        }
    }

    /// Sends what the core has to send on its own (handshakes, keepalives, probes, packets
    /// queued during a handshake); `buf` holds at least `TRANSMIT_BUF` bytes.
    fn transmit(&self, buf: &mut [u8]) {
        loop {
            let (t, relay) = {
                let mut core = self.core();
                (core.poll_transmit(buf), core.relay())
            };
            let Some(t) = t else { return };
            if let Some(d) = buf.get(..t.len) {
                self.send_to(t.transport, relay, d);
            }
        }
    }

    /// Starts the handshake, then moves packets on a thread of its own until it fails.
    pub async fn run(self: Arc<Self>, dev: Arc<SyncDevice>) -> anyhow::Result<()> {
        let _ = self.runtime.set(tokio::runtime::Handle::current());
        // The initiation leaves in the data thread's first turn.
        self.core().initiate(Instant::now());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        std::thread::Builder::new()
            .name("overlay-data".into())
            .spawn(move || {
                let _ = done_tx.send(DataPath::new(&this, &dev).run(&this, &dev));
            })?;
        // Ends with the runtime; it is idle while UDP is in use.
        tokio::spawn(self.clone().stream_task());
        done_rx
            .await
            .map_err(|_| anyhow::anyhow!("the data path thread died"))?
    }

    /// Carries out what the core asks besides datagrams. Runs on the data thread.
    fn on_event(self: &Arc<Self>, e: Event, request: &mut CpuLatencyRequest) {
        match e {
            Event::Transport(t) => {
                self.want.send_replace(t);
                match t {
                    Transport::Tcp => {
                        *self.gave_up_udp.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(Instant::now());
                        tracing::warn!(
                            url = %self.target.as_ref().map(Target::describe).unwrap_or_default(),
                            "the relay did not answer over UDP within {} s: using the stream to its URL (UDP is tried again every {} s)",
                            overlay_core::transport::stream::transport::FALLBACK_AFTER.as_secs(),
                            overlay_core::transport::stream::transport::PROBE_EVERY.as_secs()
                        );
                    }
                    Transport::Udp => {
                        tracing::info!("the relay answered over UDP again: back on UDP");
                    }
                }
            }
            Event::Expired => {
                let Some(rt) = self.runtime.get() else { return };
                let this = self.clone();
                rt.spawn(async move {
                    // Keep trying for as long as we run; the relay may have moved (DNS).
                    if let Ok(addr) = resolve(&this.endpoint).await {
                        this.core().set_relay(addr);
                    }
                    this.core().initiate(Instant::now());
                    this.wake.wake();
                });
            }
            Event::CpuLatency(c) => {
                let ok = request.apply(c);
                let first = self.core().cpu_latency_applied(c, ok);
                if first {
                    let s = self.core().status();
                    tracing::info!(
                        "asking the kernel for quick CPU wake-ups while packets move (--cpu-latency {}; \
                         relay round trip {:?}); `overlay status` shows when",
                        s.cpu_latency,
                        s.relay_rtt
                    );
                }
            }
        }
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
            self.core().count_drop(Dropped::SendFailed, lost as u64);
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
            let init = self
                .core()
                .stream_opened(&mut buf)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
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
                            self.core().count_drop(Dropped::StreamQueue, 1);
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

    /// The tunnel's counters and handshake age.
    pub fn status(&self) -> TunnelStatus {
        let s = self.core().status();
        let c = &s.counters;
        let drops = c
            .drops()
            .filter(|(_, n)| *n > 0)
            .map(|(d, n)| (d.as_str(), n))
            .collect();
        TunnelStatus {
            endpoint: s.relay.to_string(),
            last_handshake_secs: s.last_handshake.map(|d| d.as_secs()),
            last_rx_secs: s.last_rx.map(|at| at.elapsed().as_secs()),
            rx_bytes: c.rx_bytes,
            tx_bytes: c.tx_bytes,
            rx_packets: c.rx_packets,
            tx_packets: c.tx_packets,
            drops,
            cpu_latency: CpuLatencyStatus {
                mode: s.cpu_latency.to_string(),
                held: s.cpu_latency_held,
                holds: c.cpu_latency_holds,
                relay_rtt_us: s.relay_rtt.map(|d| (d.as_micros() as u64).max(1)),
            },
            transport: s.transport,
            transport_mode: s.transport_mode,
            url: self.target.as_ref().map(|t| t.url.to_string()),
        }
    }
}

/// The data path's buffers, allocated once, and its loop.
///
/// One thread serves both directions: it polls the TUN device, the UDP socket and the
/// stream's queue, and does what the core's `end_turn` says: poll again, busy-poll (an
/// answer usually comes back within `node::tunnel::SPIN`, so it is picked up without the
/// thread, and on a VM the virtual CPU, being put to sleep and woken again), or sleep until
/// readable or the core's next deadline. While packets move it also takes the kernel's
/// CPU-latency request when the core says so, for the hand-overs to the application and, on
/// one host, to the relay (see `overlay_core::node::cpu_latency`). Encryption of a bulk flow and
/// decryption of its acknowledgements fit one core; the relay's work and the peer's run on
/// the other.
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
    /// Where the core writes what it sends on its own.
    scratch: Vec<u8>,
    request: CpuLatencyRequest,
    /// Datagrams the stream task received.
    stream_in: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
}

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
            scratch: vec![0u8; TRANSMIT_BUF],
            request: CpuLatencyRequest::default(),
            stream_in: tunnel
                .stream_in_rx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        }
    }

    fn run(mut self, t: &Arc<Tunnel>, dev: &SyncDevice) -> anyhow::Result<()> {
        let dev: &DeviceImpl = dev;
        let fds = [dev.as_raw_fd(), t.sock.as_raw_fd(), t.wake.fd()];
        loop {
            t.wake.reset();
            self.tun_to_udp(t, dev)?;
            self.udp_to_tun(t, dev);
            self.stream_to_tun(t, dev);
            let now = Instant::now();
            let next = {
                let mut core = t.core();
                core.handle_timeout(now);
                core.end_turn(now)
            };
            t.transmit(&mut self.scratch);
            loop {
                let Some(e) = t.core().poll_event() else {
                    break;
                };
                t.on_event(e, &mut self.request);
            }
            match next {
                Next::Again => {}
                Next::Spin => std::thread::yield_now(),
                Next::Sleep(until) => {
                    // Rounded up: waking a little early would only spin through a turn.
                    let ms = until.saturating_duration_since(now).as_millis() + 1;
                    wait_readable(
                        &fds,
                        i32::try_from(ms).map_or(MAX_SLEEP_MS, |m| m.min(MAX_SLEEP_MS)),
                    );
                }
            }
        }
    }

    /// Reads from the TUN device until it is empty (or its turn is over), encrypts, sends.
    fn tun_to_udp(&mut self, t: &Tunnel, dev: &DeviceImpl) -> anyhow::Result<()> {
        for _ in 0..TUN_READS_PER_TURN {
            let n = match dev.recv_multiple(&mut self.original, &mut self.bufs, &mut self.sizes, 0)
            {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // A super-packet the splitter cannot handle: drop it, keep the device.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Other) => {
                    tracing::debug!("tun read: {e}");
                    t.core().count_drop(Dropped::TunInvalid, 1);
                    continue;
                }
                Err(e) => return Err(anyhow::anyhow!("reading the TUN device failed: {e}")),
            };
            let now = Instant::now();
            let relay = t.core().relay();
            for (buf, &len) in self.bufs.iter().zip(&self.sizes).take(n) {
                let p = &buf[..len];
                let need = (len + SEAL_OVERHEAD).max(MIN_OUT);
                if self.batch.spare(need).is_none() {
                    t.flush(&mut self.batch);
                }
                let Some(space) = self.batch.spare(need) else {
                    continue;
                };
                let sealed = match t.core().send(now, p, space) {
                    Outbound::Datagram(d) => Some(d.len()),
                    Outbound::Held => None,
                    Outbound::Refused => continue,
                };
                if let Some(tap) = t.tap.get() {
                    tap.packet(p, true);
                }
                if let Some(n) = sealed {
                    self.batch.commit(relay, n);
                }
            }
            t.flush(&mut self.batch);
        }
        Ok(())
    }

    /// Receives from the socket until it is empty (or its turn is over), decrypts, and writes
    /// the packets to the TUN device together so GRO can coalesce them.
    fn udp_to_tun(&mut self, t: &Tunnel, dev: &DeviceImpl) {
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
            let now = Instant::now();
            let mut ready = 0;
            for (m, iov) in self.meta.iter().zip(&iovs).take(got) {
                for d in iov[..m.len].chunks(m.stride.max(1)) {
                    if ready == self.pkts.len() {
                        write_tun(dev, &mut self.gro, &mut self.pkts, self.headroom);
                        ready = 0;
                    }
                    if open(
                        t,
                        now,
                        Via::Udp(m.addr),
                        d,
                        &mut self.pkts[ready],
                        self.headroom,
                        &mut self.scratch,
                    ) {
                        ready += 1;
                    }
                }
            }
            if ready > 0 {
                write_tun(dev, &mut self.gro, &mut self.pkts[..ready], self.headroom);
            }
        }
    }

    /// Decrypts what the stream task received and writes it to the TUN device.
    fn stream_to_tun(&mut self, t: &Tunnel, dev: &DeviceImpl) {
        let Some(rx) = &self.stream_in else {
            return;
        };
        let now = Instant::now();
        let mut ready = 0;
        let mut taken = 0;
        for _ in 0..STREAM_READS_PER_TURN {
            let Ok(d) = rx.try_recv() else { break };
            taken += 1;
            if ready == self.pkts.len() {
                write_tun(dev, &mut self.gro, &mut self.pkts, self.headroom);
                ready = 0;
            }
            if open(
                t,
                now,
                Via::Stream,
                &d,
                &mut self.pkts[ready],
                self.headroom,
                &mut self.scratch,
            ) {
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
    }
}

/// Decrypts one datagram from the relay into `pkt` after `headroom` bytes and does what the
/// core says; true when `pkt` holds a packet for the TUN device.
fn open(
    t: &Tunnel,
    now: Instant,
    via: Via,
    d: &[u8],
    pkt: &mut Vec<u8>,
    headroom: usize,
    scratch: &mut [u8],
) -> bool {
    pkt.clear();
    pkt.resize(headroom + d.len().max(MIN_OUT), 0);
    let r = t.core().receive(now, via, d, &mut pkt[headroom..]);
    match r {
        Received::Tun(p) => {
            let len = p.len();
            if let Some(tap) = t.tap.get() {
                tap.packet(p, false);
            }
            pkt.truncate(headroom + len);
            true
        }
        Received::Daemon(p) => {
            t.to_daemon(p);
            false
        }
        Received::Reply(p) => {
            t.send_via(via, p);
            // Packets queued during the handshake go out now, the way in use.
            t.transmit(scratch);
            false
        }
        Received::Nothing => false,
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

//! `--tcp-listen`: the overlay over an HTTP/1.1 WebSocket upgrade, for nodes whose UDP cannot
//! reach the relay (ingresses, proxies, networks that drop UDP).
//!
//! Each accepted stream gets a number and, through it, an address in a range UDP never comes
//! from (`overlay_core::transport::stream::addr`). Its WireGuard datagrams go to the hub thread unchanged,
//! as if they had come over UDP from that address, so every check of the hub applies; what the
//! hub sends to that address comes back here and goes out on the stream. A reader and a writer
//! task per stream; the hub thread is never blocked by a stream (its queues drop when full,
//! like a UDP socket buffer).
//!
//! Bad input: the upgrade endpoint answers nothing but the upgrade (400, 404), a head must
//! arrive within [`HEAD_TIMEOUT`] and fit [`upgrade::MAX_HEAD`], a frame over the limit or of a
//! kind the overlay does not use closes the stream, a stream that completes no frame for
//! [`IDLE`] or cannot take writes for [`WRITE_TIMEOUT`] is closed, and streams are limited per
//! source address and in total.

use overlay_core::transport::stream::upgrade::{self, MAX_HEAD};
use overlay_core::transport::stream::ws::{self, FrameBuffer, Opcode, Role};
use overlay_sys::wake::Wake;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How long a client has to send its upgrade request.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream that completes no frame for this long is closed (nodes send a keepalive every 25 s).
const IDLE: Duration = Duration::from_secs(90);
/// A write that cannot finish in this long closes the stream (the node stopped reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Datagrams queued towards one stream at most; more are dropped, like a full socket buffer.
const OUT_QUEUE: usize = 1024;
/// Bytes the writer gathers into one write.
const WRITE_BATCH: usize = 64 << 10;
/// Datagrams from all streams waiting for the hub thread at most.
pub const IN_QUEUE: usize = 8192;

/// Limits of the stream listener.
#[derive(Clone, Debug)]
pub struct StreamLimits {
    /// Open streams from one source address at most.
    pub per_source: usize,
    /// Open streams at most.
    pub total: usize,
}

/// What the streams tell the hub thread.
pub enum StreamEvent {
    /// A stream is open; datagrams for it go to `out`.
    Open {
        /// Its number.
        id: u64,
        /// Its writer's queue.
        out: mpsc::Sender<Vec<u8>>,
    },
    /// A stream closed.
    Closed {
        /// Its number.
        id: u64,
    },
}

/// A WireGuard datagram that arrived on stream `id`.
pub type StreamDatagram = (u64, Vec<u8>);

/// Counters for `/metrics`.
#[derive(Default, Debug)]
pub struct StreamStats {
    /// Streams open now.
    pub open: AtomicU64,
    /// Streams accepted (upgraded) since start.
    pub accepted: AtomicU64,
    /// Connections refused: over a limit, or not a valid upgrade.
    pub refused: AtomicU64,
    /// Bytes of datagrams received over streams.
    pub rx_bytes: AtomicU64,
    /// Bytes of datagrams sent over streams.
    pub tx_bytes: AtomicU64,
    /// Datagrams dropped because a queue was full.
    pub dropped: AtomicU64,
}

/// What the hub thread receives from the streams.
pub struct StreamInbox {
    /// Opens and closes (at most two per stream, and streams are limited: unbounded is bounded).
    pub events: std::sync::mpsc::Receiver<StreamEvent>,
    /// Datagrams.
    pub datagrams: std::sync::mpsc::Receiver<StreamDatagram>,
    /// Counters.
    pub stats: Arc<StreamStats>,
}

/// Everything a stream task needs.
struct Shared {
    path: String,
    limits: StreamLimits,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    events: std::sync::mpsc::Sender<StreamEvent>,
    datagrams: std::sync::mpsc::SyncSender<StreamDatagram>,
    wake: Arc<Wake>,
    stats: Arc<StreamStats>,
    next_id: AtomicU64,
    tls: Option<crate::serve::tls::Acceptor>,
}

/// Serves upgrades at `path` on `listener` from the runtime; the hub thread reads the inbox.
pub fn start(
    rt: &tokio::runtime::Handle,
    listener: TcpListener,
    path: String,
    limits: StreamLimits,
    tls: Option<crate::serve::tls::Acceptor>,
    wake: Arc<Wake>,
) -> StreamInbox {
    let (ev_tx, ev_rx) = std::sync::mpsc::channel();
    let (dg_tx, dg_rx) = std::sync::mpsc::sync_channel(IN_QUEUE);
    let stats = Arc::new(StreamStats::default());
    let shared = Arc::new(Shared {
        path,
        limits,
        per_source: Mutex::new(HashMap::new()),
        events: ev_tx,
        datagrams: dg_tx,
        wake,
        stats: stats.clone(),
        next_id: AtomicU64::new(1),
        tls,
    });
    rt.spawn(accept_loop(listener, shared));
    StreamInbox {
        events: ev_rx,
        datagrams: dg_rx,
        stats,
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::debug!("tcp accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&shared, peer.ip()) else {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = sock.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let r = match &shared.tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(tls)) => serve(tls, &shared).await,
                        Ok(Err(e)) => Err(format!("tls: {e}")),
                        Err(_) => Err("no TLS handshake in time".into()),
                    }
                }
                None => serve(sock, &shared).await,
            };
            if let Err(e) = r {
                tracing::debug!(%peer, "stream: {e}");
            }
            drop(slot);
        });
    }
}

/// A counted place in the per-source and total limits, given back on drop.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Slot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Slot> {
        let mut m = shared.per_source.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = m.values().sum();
        let mine = m.get(&ip).copied().unwrap_or(0);
        if total >= shared.limits.total || mine >= shared.limits.per_source {
            return None;
        }
        *m.entry(ip).or_insert(0) += 1;
        Some(Slot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self
            .shared
            .per_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Reads the upgrade, answers it, then carries datagrams both ways until either side stops.
async fn serve<S>(mut s: S, shared: &Arc<Shared>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut head = vec![0u8; MAX_HEAD];
    let mut got = 0;
    let end = tokio::time::timeout(HEAD_TIMEOUT, async {
        loop {
            if got == head.len() {
                return Err("request head too long".to_string());
            }
            let n = s.read(&mut head[got..]).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before the request head ended".into());
            }
            got += n;
            if let Some(end) = upgrade::head_end(&head[..got]) {
                return Ok(end);
            }
        }
    })
    .await
    .map_err(|_| "no request head in time".to_string())?;
    let end = match end {
        Ok(e) => e,
        Err(e) => {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            let r = upgrade::UpgradeError::BadRequest("request head too long or incomplete");
            let _ = s.write_all(r.response().as_bytes()).await;
            return Err(e);
        }
    };
    let accepted = match upgrade::accept(&head[..end], &shared.path) {
        Ok(a) => a,
        Err(e) => {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = tokio::time::timeout(WRITE_TIMEOUT, s.write_all(e.response().as_bytes())).await;
            let _ = s.shutdown().await;
            return Err(e.to_string());
        }
    };
    tokio::time::timeout(WRITE_TIMEOUT, s.write_all(accepted.response.as_bytes()))
        .await
        .map_err(|_| "upgrade answer timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    shared
        .events
        .send(StreamEvent::Open { id, out: out_tx })
        .map_err(|_| "the hub stopped".to_string())?;
    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    shared.wake.wake();
    let (r, w) = tokio::io::split(s);
    let mut frames = FrameBuffer::new(Role::Server);
    // Bytes that came right after the head belong to the first frames.
    frames.push(&head[end..got]);
    let stats = shared.stats.clone();
    let mut writer = tokio::spawn(write_loop(w, out_rx, stats));
    let result = tokio::select! {
        r = read_loop(r, frames, id, shared) => r,
        _ = &mut writer => Err("the node stopped taking writes".into()),
    };
    writer.abort();
    let _ = shared.events.send(StreamEvent::Closed { id });
    shared.stats.open.fetch_sub(1, Ordering::Relaxed);
    shared.wake.wake();
    result
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    mut frames: FrameBuffer,
    id: u64,
    shared: &Shared,
) -> Result<(), String> {
    loop {
        // Frames first: the upgrade's leftover bytes may hold some already.
        loop {
            match frames.next_frame() {
                Ok(Some(f)) => match f.opcode {
                    Opcode::Binary => {
                        shared
                            .stats
                            .rx_bytes
                            .fetch_add(f.payload.len() as u64, Ordering::Relaxed);
                        match shared.datagrams.try_send((id, f.payload.to_vec())) {
                            Ok(()) => shared.wake.wake(),
                            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                                shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                                shared.wake.wake();
                            }
                            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                                return Err("the hub stopped".into())
                            }
                        }
                    }
                    Opcode::Close => return Ok(()),
                    // Nodes do not ping; a proxy's ping needs no answer to keep the stream.
                    Opcode::Ping | Opcode::Pong => {}
                },
                Ok(None) => break,
                Err(e) => return Err(format!("closing: {e}")),
            }
        }
        let spare = frames.spare();
        let n = match tokio::time::timeout(IDLE, r.read(spare)).await {
            Err(_) => return Err("idle: no frame in time".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => n,
        };
        frames.filled(n);
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut out: mpsc::Receiver<Vec<u8>>,
    stats: Arc<StreamStats>,
) {
    let mut buf = Vec::with_capacity(WRITE_BATCH + ws::MAX_HEADER + ws::MAX_PAYLOAD);
    while let Some(d) = out.recv().await {
        buf.clear();
        let mut bytes = d.len();
        ws::encode(Opcode::Binary, &d, None, &mut buf);
        // Whatever else is queued goes in the same write.
        while buf.len() < WRITE_BATCH {
            let Ok(d) = out.try_recv() else { break };
            bytes += d.len();
            ws::encode(Opcode::Binary, &d, None, &mut buf);
        }
        match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&buf)).await {
            Ok(Ok(())) => {
                stats.tx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            }
            _ => {
                let _ = w.shutdown().await;
                return;
            }
        }
    }
}

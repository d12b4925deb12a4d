//! Batched UDP for the node's data thread and the relay's hub thread: receives with `recvmmsg`
//! and GRO, sends with GSO (quinn-udp).
//!
//! Both ends forward every datagram they receive, so their cost used to be two system calls per
//! datagram. One `recvmmsg` takes up to [`quinn_udp::BATCH_SIZE`] buffers, each of which may
//! hold many datagrams coalesced by GRO, and outgoing datagrams laid out in a
//! [`SendBatch`] leave as one `sendmsg` per run of equal-sized datagrams to one destination
//! (GSO). [`Udp::send_batch`] is the one GSO sender; [`Sender`] is the relay's queue in front of
//! it, for output whose destinations interleave.

use overlay_core::net::batch::{SendBatch, MAX_RUN_BYTES};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use std::io::{self, ErrorKind, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// Bytes per receive buffer. The kernel stops coalescing a GRO batch at 64 KiB; anything longer
/// would be cut short, and a cut datagram fails WireGuard's check and is counted as rejected.
pub const RECV_BUF: usize = 1 << 16;

/// Bytes of receive buffers to allocate once and hand to [`Receiver::new`].
pub const RECV_STORAGE: usize = RECV_BUF * quinn_udp::BATCH_SIZE;

/// A UDP socket that sends and receives many datagrams per system call. Non-blocking: the
/// caller polls it (`AsRawFd`).
pub struct Udp {
    sock: UdpSocket,
    state: UdpSocketState,
}

impl Udp {
    /// Binds to `bind` and prepares the socket (see [`Udp::from_std`]).
    pub fn bind(bind: SocketAddr) -> io::Result<Udp> {
        // A plain socket, not registered with tokio: a registration would wake a runtime
        // thread for every datagram that the polling thread then reads anyway.
        Udp::from_std(UdpSocket::bind(bind)?)
    }

    /// Prepares a bound socket: large buffers, non-blocking, GRO on, GSO support probed
    /// (quinn-udp), then fragmentation allowed again (see [`crate::sockbuf::allow_fragmentation`]).
    pub fn from_std(sock: UdpSocket) -> io::Result<Udp> {
        crate::sockbuf::enlarge(sock.as_raw_fd());
        let state = UdpSocketState::new(UdpSockRef::from(&sock))?;
        let v6 = matches!(sock.local_addr(), Ok(SocketAddr::V6(_)));
        crate::sockbuf::allow_fragmentation(sock.as_raw_fd(), v6);
        Ok(Udp { sock, state })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Datagrams one GSO send may carry (1 without GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Sends one datagram now; a full socket buffer drops it (WireGuard retransmits
    /// handshakes, and the inner protocols their data).
    pub fn send_now(&self, d: &[u8], to: SocketAddr) {
        if let Err(e) = self.sock.send_to(d, to) {
            tracing::debug!(%to, "udp send: {e}");
        }
    }

    /// Sends every run of `batch`, one system call per run, then clears it and tells it the
    /// socket's current GSO limit. Returns the datagrams that could not be sent.
    ///
    /// A full socket buffer gets up to `wait` to drain, once, before the rest of the batch is
    /// dropped: the node's data thread waits a little (its one peer is the relay), the relay
    /// not at all (waiting would stall every other peer's handshakes and control answers while
    /// the datagrams grow stale; the senders' TCP recovers from a drop). A run the kernel
    /// refuses as one GSO send (EMSGSIZE when the segments do not fit the route's MTU, or GSO
    /// unsupported here, which quinn-udp then stops offering) goes out datagram by datagram.
    /// A destination port of 0 is never sent: the kernel refuses it with EINVAL, which
    /// quinn-udp would take for missing GSO support and turn GSO off for good, and a spoofed
    /// source port must not do that.
    pub fn send_batch(&self, batch: &mut SendBatch, wait: Duration) -> usize {
        let mut lost = 0;
        let mut waited = false;
        let runs = batch.runs();
        let mut i = 0;
        'runs: while i < runs.len() {
            let run = runs[i];
            let contents = batch.bytes(&run);
            if run.to.port() == 0 {
                lost += run.count;
                i += 1;
                continue;
            }
            if run.count > 1 {
                let t = Transmit {
                    destination: run.to,
                    ecn: None,
                    contents,
                    segment_size: Some(run.segment),
                    src_ip: None,
                };
                match self.state.try_send(UdpSockRef::from(&self.sock), &t) {
                    Ok(()) => {
                        i += 1;
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if !waited && !wait.is_zero() {
                            waited = true;
                            wait_writable(self.sock.as_raw_fd(), wait);
                            continue 'runs;
                        }
                        break 'runs;
                    }
                    Err(e) => tracing::trace!(to = %run.to, "gso send: {e}"),
                }
            }
            for seg in contents.chunks(run.segment.max(1)) {
                match self.sock.send_to(seg, run.to) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        if !waited && !wait.is_zero() {
                            waited = true;
                            wait_writable(self.sock.as_raw_fd(), wait);
                            if self.sock.send_to(seg, run.to).is_ok() {
                                continue;
                            }
                        }
                        lost += 1;
                    }
                    Err(e) => {
                        tracing::debug!(to = %run.to, "udp send: {e}");
                        lost += 1;
                    }
                }
            }
            i += 1;
        }
        lost += runs[i..].iter().map(|r| r.count).sum::<usize>();
        batch.clear();
        batch.set_max_segments(self.state.max_gso_segments());
        lost
    }

    /// Receives what is waiting without blocking (possibly GRO-coalesced datagrams; see
    /// `RecvMeta::stride`) into `bufs`; returns how many entries of `meta` are filled.
    pub fn try_recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        self.state.recv(UdpSockRef::from(&self.sock), bufs, meta)
    }
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

fn wait_writable(fd: RawFd, wait: Duration) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// Receive buffers and their metadata, set up once and reused for every batch.
pub struct Receiver<'a> {
    bufs: Vec<IoSliceMut<'a>>,
    meta: Vec<RecvMeta>,
}

impl<'a> Receiver<'a> {
    /// Receives into `storage`, cut into [`quinn_udp::BATCH_SIZE`] buffers of 64 KiB at most.
    pub fn new(storage: &'a mut [u8]) -> Receiver<'a> {
        let per_buf = (storage.len() / quinn_udp::BATCH_SIZE).clamp(1, RECV_BUF);
        let bufs: Vec<_> = storage
            .chunks_mut(per_buf)
            .take(quinn_udp::BATCH_SIZE)
            .map(IoSliceMut::new)
            .collect();
        let meta = vec![RecvMeta::default(); bufs.len()];
        Receiver { bufs, meta }
    }

    /// Receives one batch without blocking and calls `each` on every datagram in it, in order,
    /// GRO trains split; returns how many there were. WouldBlock means the socket is drained.
    pub fn recv(
        &mut self,
        udp: &Udp,
        mut each: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let n = udp.try_recv(&mut self.bufs, &mut self.meta)?;
        let mut datagrams = 0;
        for (buf, meta) in self.bufs.iter().zip(&self.meta).take(n) {
            let data = &buf[..meta.len.min(buf.len())];
            if data.is_empty() {
                // An empty datagram: still the caller's to count as invalid.
                each(meta.addr, data);
                datagrams += 1;
                continue;
            }
            // GRO: datagrams of `stride` bytes back to back, the last possibly shorter.
            let stride = if meta.stride == 0 {
                data.len()
            } else {
                meta.stride
            };
            for d in data.chunks(stride) {
                each(meta.addr, d);
                datagrams += 1;
            }
        }
        Ok(datagrams)
    }
}

/// Staged bytes that force a flush: room for two full GSO sends, so that a bulk flow and its
/// reverse (data one way, acks the other) both fill their sends before the queue is full.
const QUEUE_BYTES: usize = 2 * MAX_RUN_BYTES;

/// Staged datagrams that force a flush (acks are small: bytes alone would let thousands queue).
const QUEUE_DATAGRAMS: usize = 256;

/// The relay's queue in front of [`Udp::send_batch`]: collects what the hub produces for many
/// peers, interleaved, and sends it grouped by destination on [`Sender::flush`] or when full.
/// Order is kept per destination, not across destinations.
pub struct Sender<'a> {
    udp: &'a Udp,
    batch: SendBatch,
    unsent: u64,
}

impl<'a> Sender<'a> {
    /// An empty queue for `udp`, with all its memory allocated up front.
    pub fn new(udp: &'a Udp) -> Sender<'a> {
        Sender {
            udp,
            batch: SendBatch::new(QUEUE_BYTES, udp.max_gso_segments()),
            unsent: 0,
        }
    }

    /// Queues `d` for `to`, flushing first if the queue is full.
    pub fn send(&mut self, to: SocketAddr, d: &[u8]) {
        if self.batch.datagrams() >= QUEUE_DATAGRAMS {
            self.flush();
        }
        if self.batch.push(to, d) {
            return;
        }
        self.flush();
        if !self.batch.push(to, d) {
            // Larger than any UDP datagram: let the kernel say no.
            if let Err(e) = self.udp.sock.send_to(d, to) {
                tracing::debug!(%to, "udp send: {e}");
                self.unsent += 1;
            }
        }
    }

    /// Sends everything queued, grouped by destination (see [`Udp::send_batch`]; the relay
    /// does not wait for a full socket buffer).
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.batch.group_by_destination();
        self.unsent += self.udp.send_batch(&mut self.batch, Duration::ZERO) as u64;
    }

    /// Datagrams dropped since the last call (socket buffer full or a send error).
    pub fn take_unsent(&mut self) -> u64 {
        std::mem::take(&mut self.unsent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn receiver() -> UdpSocket {
        let r = UdpSocket::bind("127.0.0.1:0").expect("bind");
        crate::sockbuf::enlarge(r.as_raw_fd());
        r.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        r
    }

    fn drain(r: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        (0..n)
            .map(|_| {
                let (len, _) = r.recv_from(&mut buf).expect("datagram");
                buf[..len].to_vec()
            })
            .collect()
    }

    fn local() -> Udp {
        Udp::bind("127.0.0.1:0".parse().expect("addr")).expect("bind")
    }

    #[test]
    fn flush_keeps_each_destinations_order_and_contents() {
        let udp = local();
        let (a, b) = (receiver(), receiver());
        let (to_a, to_b) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
        let mut out = Sender::new(&udp);
        let mut want_a = Vec::new();
        let mut want_b = Vec::new();
        // A bulk flow to `a` (equal sizes, one short), interleaved with small acks to `b`.
        for i in 0..40u8 {
            let d = vec![i; if i == 30 { 700 } else { 1200 }];
            out.send(to_a, &d);
            want_a.push(d);
            let ack = vec![i; 60];
            out.send(to_b, &ack);
            want_b.push(ack);
        }
        out.flush();
        assert_eq!(out.take_unsent(), 0);
        assert_eq!(drain(&a, want_a.len()), want_a);
        assert_eq!(drain(&b, want_b.len()), want_b);
    }

    #[test]
    fn a_full_queue_flushes_itself_and_port_zero_is_counted() {
        let udp = local();
        let a = receiver();
        let to = a.local_addr().expect("addr");
        let mut out = Sender::new(&udp);
        let want: Vec<Vec<u8>> = (0..QUEUE_DATAGRAMS + 10)
            .map(|i| (i as u32).to_be_bytes().to_vec())
            .collect();
        for d in &want {
            out.send(to, d);
        }
        assert_eq!(
            out.batch.datagrams(),
            10,
            "the first {QUEUE_DATAGRAMS} went out"
        );
        out.flush();
        out.send(SocketAddr::from(([127, 0, 0, 1], 0)), b"nowhere");
        out.flush();
        assert_eq!(out.take_unsent(), 1, "port 0 is counted, not sent");
        assert_eq!(drain(&a, want.len()), want);
    }

    #[test]
    fn gro_batches_split_into_datagrams() {
        let udp = local();
        let r = local();
        let mut out = Sender::new(&udp);
        let mut want = Vec::new();
        for i in 0..20u8 {
            let d = vec![i; if i == 19 { 300 } else { 1000 }];
            out.send(r.local_addr().expect("addr"), &d);
            want.push(d);
        }
        out.flush();
        let mut storage = vec![0u8; RECV_STORAGE];
        let mut rx = Receiver::new(&mut storage);
        let mut got = Vec::new();
        let from = udp.local_addr().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < want.len() && Instant::now() < deadline {
            match rx.recv(&r, |a, d| {
                assert_eq!(a, from);
                got.push(d.to_vec());
            }) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert_eq!(got, want);
    }
}

//! Batched UDP for the hub thread: receives with `recvmmsg` and GRO, sends with GSO (quinn-udp).
//!
//! The relay forwards every datagram it receives, so its cost used to be two system calls per
//! datagram. Here one `recvmmsg` takes up to [`quinn_udp::BATCH_SIZE`] buffers, each of which
//! may hold many datagrams coalesced by GRO, and what the hub produced in answer goes out as one
//! `sendmsg` per run of equal-sized datagrams to one destination (GSO).

use overlay_core::batch::{Run, MAX_RUN_BYTES};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use std::io::{self, ErrorKind, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Bytes per receive buffer. The kernel stops coalescing a GRO batch at 64 KiB; anything longer
/// would be cut short, and a cut datagram fails WireGuard's check and is counted as rejected.
const RECV_BUF: usize = 1 << 16;

/// Bytes of receive buffers to allocate once and hand to [`Receiver::new`].
pub const RECV_STORAGE: usize = RECV_BUF * quinn_udp::BATCH_SIZE;

/// Staged bytes that force a flush: room for two full GSO sends, so that a bulk flow and its
/// reverse (data one way, acks the other) both fill their sends before the queue is full.
const QUEUE_BYTES: usize = 2 * MAX_RUN_BYTES;

/// Staged datagrams that force a flush (acks are small: bytes alone would let thousands queue).
const QUEUE_DATAGRAMS: usize = 256;

/// Makes `sock` ready for batched I/O: non-blocking, GRO on, GSO support probed (quinn-udp),
/// then fragmentation allowed again (see [`overlay_core::sockbuf::allow_fragmentation`]).
pub fn setup(sock: &UdpSocket) -> io::Result<UdpSocketState> {
    let state = UdpSocketState::new(UdpSockRef::from(sock))?;
    let v6 = matches!(sock.local_addr(), Ok(SocketAddr::V6(_)));
    overlay_core::sockbuf::allow_fragmentation(sock.as_raw_fd(), v6);
    Ok(state)
}

/// Receive buffers and their metadata, set up once and reused for every batch.
pub struct Receiver<'a> {
    bufs: Vec<IoSliceMut<'a>>,
    meta: Vec<RecvMeta>,
}

impl<'a> Receiver<'a> {
    /// Receives into `storage`, cut into [`quinn_udp::BATCH_SIZE`] buffers of 64 KiB at most.
    pub fn new(storage: &'a mut [u8]) -> Receiver<'a> {
        let per_buf = (storage.len() / quinn_udp::BATCH_SIZE).max(1);
        let bufs: Vec<_> = storage.chunks_mut(per_buf).map(IoSliceMut::new).collect();
        let meta = vec![RecvMeta::default(); bufs.len()];
        Receiver { bufs, meta }
    }

    /// Receives one batch without blocking and calls `each` on every datagram in it, in order;
    /// returns how many there were. WouldBlock means the socket is drained.
    pub fn recv(
        &mut self,
        sock: &UdpSocket,
        state: &UdpSocketState,
        mut each: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let n = state.recv(UdpSockRef::from(sock), &mut self.bufs, &mut self.meta)?;
        let mut datagrams = 0;
        for (buf, meta) in self.bufs.iter().zip(&self.meta).take(n) {
            let data = &buf[..meta.len.min(buf.len())];
            if data.is_empty() {
                // An empty datagram: still the hub's to count as invalid.
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

/// A datagram waiting in the queue: its destination and where its bytes are.
#[derive(Clone, Copy, Debug)]
struct Staged {
    to: SocketAddr,
    start: usize,
    len: usize,
}

/// Collects the datagrams the hub produces and sends them in batches on [`Sender::flush`], or
/// when the queue is full. Order is kept per destination, not across destinations.
pub struct Sender<'a> {
    sock: &'a UdpSocket,
    state: &'a UdpSocketState,
    bytes: Vec<u8>,
    items: Vec<Staged>,
    /// Where a run's datagrams are copied when they were not staged back to back.
    gather: Vec<u8>,
    unsent: u64,
}

impl<'a> Sender<'a> {
    /// An empty queue for `sock`, with all its memory allocated up front.
    pub fn new(sock: &'a UdpSocket, state: &'a UdpSocketState) -> Sender<'a> {
        Sender {
            sock,
            state,
            bytes: Vec::with_capacity(QUEUE_BYTES),
            items: Vec::with_capacity(QUEUE_DATAGRAMS),
            gather: Vec::with_capacity(MAX_RUN_BYTES),
            unsent: 0,
        }
    }

    /// Queues `d` for `to`, flushing first if the queue is full.
    pub fn send(&mut self, to: SocketAddr, d: &[u8]) {
        if to.port() == 0 {
            // The kernel refuses it with EINVAL, which quinn-udp would take for missing GSO
            // support and turn GSO off for good: a spoofed source port must not do that.
            self.unsent += 1;
            return;
        }
        if self.items.len() == QUEUE_DATAGRAMS || self.bytes.len() + d.len() > QUEUE_BYTES {
            self.flush();
        }
        if d.len() > QUEUE_BYTES {
            // Larger than any UDP datagram: let the kernel say no.
            self.send_one(to, d);
            return;
        }
        self.items.push(Staged {
            to,
            start: self.bytes.len(),
            len: d.len(),
        });
        self.bytes.extend_from_slice(d);
    }

    /// Sends everything queued. A full socket buffer drops the rest of the queue (counted in
    /// [`Sender::take_unsent`]) instead of waiting: with the buffer enlarged to megabytes, full
    /// means the link is far behind, and waiting would stall handshakes, the control channel and
    /// the admin socket of every peer while the datagrams grow stale; the senders' TCP recovers
    /// from a drop.
    pub fn flush(&mut self) {
        if self.items.is_empty() {
            return;
        }
        // Group by destination; `start` grows with arrival, so each destination keeps its order.
        self.items.sort_unstable_by_key(|s| (s.to, s.start));
        let max_segments = self.state.max_gso_segments().max(1);
        let mut i = 0;
        'runs: while i < self.items.len() {
            let end = i + run_len(&self.items[i..], max_segments);
            let run = &self.items[i..end];
            if let (true, Some(first)) = (run.len() > 1, run.first()) {
                let contents = contiguous(&self.bytes, run, &mut self.gather);
                let t = Transmit {
                    destination: first.to,
                    ecn: None,
                    contents,
                    segment_size: Some(first.len),
                    src_ip: None,
                };
                match self.state.try_send(UdpSockRef::from(self.sock), &t) {
                    Ok(()) => {
                        i = end;
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break 'runs,
                    // EMSGSIZE: the segments do not fit the route's MTU, and a GSO segment is
                    // never fragmented; alone, each datagram may be. Anything else: GSO may be
                    // unsupported here (quinn-udp then stops offering it). Either way, one by one.
                    Err(e) => tracing::trace!(to = %first.to, "gso send: {e}"),
                }
            }
            while i < end {
                let s = self.items[i];
                match self
                    .sock
                    .send_to(&self.bytes[s.start..s.start + s.len], s.to)
                {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break 'runs,
                    Err(e) => {
                        tracing::debug!(to = %s.to, "udp send: {e}");
                        self.unsent += 1;
                    }
                }
                i += 1;
            }
        }
        self.unsent += (self.items.len() - i) as u64;
        self.items.clear();
        self.bytes.clear();
    }

    /// Datagrams dropped since the last call (socket buffer full or a send error).
    pub fn take_unsent(&mut self) -> u64 {
        std::mem::take(&mut self.unsent)
    }

    fn send_one(&mut self, to: SocketAddr, d: &[u8]) {
        if let Err(e) = self.sock.send_to(d, to) {
            tracing::debug!(%to, "udp send: {e}");
            self.unsent += 1;
        }
    }
}

/// How many datagrams from the start of `items` go out as one GSO send (the rule of
/// [`Run::extend`]): one destination, one length (the last may be shorter), at most
/// `max_segments` and [`MAX_RUN_BYTES`] bytes.
fn run_len(items: &[Staged], max_segments: usize) -> usize {
    let Some(first) = items.first() else {
        return 0;
    };
    let mut run = Run::begin(first.to, first.start, first.len);
    1 + items[1..]
        .iter()
        .take_while(|s| run.extend(s.to, s.len, max_segments))
        .count()
}

/// The run's bytes as one slice: straight from the queue when they were staged back to back
/// (one peer's burst), else copied into `scratch`.
fn contiguous<'b>(bytes: &'b [u8], run: &[Staged], scratch: &'b mut Vec<u8>) -> &'b [u8] {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return &[];
    };
    if run.windows(2).all(|w| w[1].start == w[0].start + w[0].len) {
        return &bytes[first.start..last.start + last.len];
    }
    scratch.clear();
    for s in run {
        scratch.extend_from_slice(&bytes[s.start..s.start + s.len]);
    }
    scratch
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn staged(port: u16, lens: &[usize]) -> Vec<Staged> {
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        let mut start = 0;
        lens.iter()
            .map(|&len| {
                start += len;
                Staged {
                    to,
                    start: start - len,
                    len,
                }
            })
            .collect()
    }

    #[test]
    fn runs_are_equal_sized_with_a_shorter_tail() {
        assert_eq!(run_len(&staged(1, &[1400, 1400, 1400]), 64), 3);
        assert_eq!(run_len(&staged(1, &[1400, 1400, 900, 1400]), 64), 3);
        assert_eq!(run_len(&staged(1, &[900, 1400]), 64), 1);
        assert_eq!(run_len(&staged(1, &[1400; 10]), 4), 4);
        assert_eq!(
            run_len(&staged(1, &[1400; 60]), 64),
            46,
            "46 * 1400 <= 65507 < 47 * 1400"
        );
        assert_eq!(run_len(&[], 64), 0);
        let mut two = staged(1, &[100, 100]);
        two[1].to = SocketAddr::from(([127, 0, 0, 1], 2));
        assert_eq!(run_len(&two, 64), 1);
    }

    fn receiver() -> UdpSocket {
        let r = UdpSocket::bind("127.0.0.1:0").expect("bind");
        overlay_core::sockbuf::enlarge(r.as_raw_fd());
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

    #[test]
    fn flush_keeps_each_destinations_order_and_contents() {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let state = setup(&sock).expect("setup");
        let (a, b) = (receiver(), receiver());
        let (to_a, to_b) = (a.local_addr().expect("addr"), b.local_addr().expect("addr"));
        let mut out = Sender::new(&sock, &state);
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
    fn a_full_queue_flushes_itself() {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let state = setup(&sock).expect("setup");
        let a = receiver();
        let to = a.local_addr().expect("addr");
        let mut out = Sender::new(&sock, &state);
        let want: Vec<Vec<u8>> = (0..QUEUE_DATAGRAMS + 10)
            .map(|i| (i as u32).to_be_bytes().to_vec())
            .collect();
        for d in &want {
            out.send(to, d);
        }
        assert_eq!(out.items.len(), 10, "the first {QUEUE_DATAGRAMS} went out");
        out.flush();
        out.send(SocketAddr::from(([127, 0, 0, 1], 0)), b"nowhere");
        assert_eq!(out.take_unsent(), 1, "port 0 is counted, not sent");
        assert_eq!(drain(&a, want.len()), want);
    }

    #[test]
    fn gro_batches_split_into_datagrams() {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let state = setup(&sock).expect("setup");
        let r = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let r_state = setup(&r).expect("setup");
        let mut out = Sender::new(&sock, &state);
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
        let from = sock.local_addr().expect("addr");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while got.len() < want.len() && std::time::Instant::now() < deadline {
            match rx.recv(&r, &r_state, |a, d| {
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

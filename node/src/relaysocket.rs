//! The node's UDP socket to the relay, with batched receive (recvmmsg, UDP GRO) and batched
//! send (UDP GSO) through quinn-udp. Non-blocking; the data thread polls it, the timer task
//! sends the odd handshake or keepalive.

use overlay_core::batch::SendBatch;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// A UDP socket that sends and receives many datagrams per system call.
pub struct Udp {
    sock: UdpSocket,
    state: UdpSocketState,
}

impl Udp {
    /// Binds to `bind` with large buffers; GSO and GRO are used where the kernel has them.
    pub fn bind(bind: SocketAddr) -> io::Result<Udp> {
        // A plain socket, not registered with tokio: a registration would wake a runtime
        // thread for every datagram that the data thread then reads anyway.
        let sock = UdpSocket::bind(bind)?;
        overlay_core::sockbuf::enlarge(sock.as_raw_fd());
        let state = UdpSocketState::new(UdpSockRef::from(&sock))?;
        overlay_core::sockbuf::allow_fragmentation(sock.as_raw_fd(), bind.is_ipv6());
        Ok(Udp { sock, state })
    }

    /// Datagrams one GSO send may carry (1 without GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Sends one datagram now from the data thread; a full socket buffer drops it (WireGuard
    /// retransmits handshakes, and the inner protocols their data).
    pub fn send_now(&self, d: &[u8], to: SocketAddr) {
        if let Err(e) = self.sock.send_to(d, to) {
            tracing::debug!(%to, "udp send: {e}");
        }
    }

    /// Sends every run of `batch`, one system call per run, then clears it. Called from the
    /// data thread: a full socket buffer gets up to [`SEND_WAIT_MS`] to drain before the run
    /// is dropped. A run the kernel refuses as GSO (some drivers do) is sent again datagram by
    /// datagram, and `batch` stops grouping. Returns the datagrams that could not be sent.
    pub fn send_batch(&self, batch: &mut SendBatch) -> usize {
        let mut lost = 0;
        for run in batch.runs() {
            let contents = batch.bytes(run);
            let t = Transmit {
                destination: run.to,
                ecn: None,
                contents,
                segment_size: (run.count > 1).then_some(run.segment),
                src_ip: None,
            };
            let mut sent = self.state.try_send(UdpSockRef::from(&self.sock), &t);
            if matches!(&sent, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                wait_writable(self.sock.as_raw_fd(), SEND_WAIT_MS);
                sent = self.state.try_send(UdpSockRef::from(&self.sock), &t);
            }
            if let Err(e) = sent {
                if run.count > 1 && self.state.max_gso_segments() == 1 {
                    // GSO just turned out not to work here: send the run's datagrams singly.
                    for seg in contents.chunks(run.segment) {
                        if self.sock.send_to(seg, run.to).is_err() {
                            lost += 1;
                        }
                    }
                } else {
                    tracing::debug!(to = %run.to, "udp send: {e}");
                    lost += run.count;
                }
            }
        }
        let segments = self.state.max_gso_segments();
        batch.clear();
        batch.set_max_segments(segments);
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
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

/// How long a send waits for room in a full socket buffer before dropping.
const SEND_WAIT_MS: i32 = 5;

fn wait_writable(fd: std::os::fd::RawFd, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

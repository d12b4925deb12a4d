//! Batched datagrams on a blocking UDP socket: `recvmmsg` and `sendmmsg` (Linux).
//!
//! A DNS answer from the cache costs far less than the two syscalls around it, so under load
//! the server takes every datagram waiting in one call and sends every reply in one call.
//! quinn-udp does the receive half but expects a non-blocking socket and has no `sendmmsg`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Datagrams per call.
pub const BATCH: usize = 32;

/// A peer's address as the kernel gives it, passed back unchanged to reply.
#[derive(Clone, Copy)]
pub struct Peer {
    addr: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl Peer {
    /// The address, for the rare reply that leaves the batch (forwards, lookups).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let family = libc::c_int::from(self.addr.ss_family);
        let len = usize::try_from(self.len).ok()?;
        if family == libc::AF_INET && len >= std::mem::size_of::<libc::sockaddr_in>() {
            // SAFETY: the kernel wrote a sockaddr_in here (family and length checked); the
            // storage is large enough and suitably aligned for every sockaddr type.
            let a = unsafe { &*(&raw const self.addr).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            return Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )));
        }
        if family == libc::AF_INET6 && len >= std::mem::size_of::<libc::sockaddr_in6>() {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(&raw const self.addr).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            return Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )));
        }
        None
    }
}

impl Default for Peer {
    fn default() -> Self {
        Peer {
            // SAFETY: all-zero bytes are a valid sockaddr_storage (family AF_UNSPEC).
            addr: unsafe { std::mem::zeroed() },
            len: 0,
        }
    }
}

/// `BATCH` slots of `SLOT` bytes, each with a length and a peer.
pub struct Slots<const SLOT: usize> {
    bufs: Box<[[u8; SLOT]; BATCH]>,
    lens: [usize; BATCH],
    peers: [Peer; BATCH],
    count: usize,
}

impl<const SLOT: usize> Default for Slots<SLOT> {
    fn default() -> Self {
        Slots {
            bufs: Box::new([[0u8; SLOT]; BATCH]),
            lens: [0; BATCH],
            peers: [Peer::default(); BATCH],
            count: 0,
        }
    }
}

impl<const SLOT: usize> Slots<SLOT> {
    /// Datagrams held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The `i`-th datagram and its peer.
    pub fn get(&self, i: usize) -> Option<(&[u8], &Peer)> {
        if i >= self.count {
            return None;
        }
        let buf = self.bufs.get(i)?.get(..*self.lens.get(i)?)?;
        Some((buf, self.peers.get(i)?))
    }

    /// The buffer of the next free slot, to fill and then [`Slots::push`]; `None` when full.
    pub fn next_buf(&mut self) -> Option<&mut [u8; SLOT]> {
        self.bufs.get_mut(self.count)
    }

    /// Adds the next free slot's first `len` bytes, for `peer`; false when full or too long.
    pub fn push(&mut self, len: usize, peer: &Peer) -> bool {
        if self.count >= BATCH || len > SLOT {
            return false;
        }
        self.lens[self.count] = len;
        self.peers[self.count] = *peer;
        self.count += 1;
        true
    }

    /// Copies `d` into the next free slot, for `peer`; false when full or `d` is too long.
    pub fn copy_in(&mut self, d: &[u8], peer: &Peer) -> bool {
        let Some(buf) = self.next_buf().and_then(|b| b.get_mut(..d.len())) else {
            return false;
        };
        buf.copy_from_slice(d);
        self.push(d.len(), peer)
    }

    /// Waits for at least one datagram, then takes all that are waiting (up to `BATCH`),
    /// replacing what was held. A datagram longer than `SLOT` is cut to `SLOT` bytes.
    pub fn recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        self.count = 0;
        let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: SLOT,
        });
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = (&raw mut self.peers[i].addr).cast();
            h.msg_hdr.msg_namelen = socklen_of_storage();
            h.msg_hdr.msg_iov = &raw mut iov[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        let n = loop {
            // SAFETY: every header points at live buffers of the stated lengths (slots, peers,
            // iovecs on this stack frame) for the duration of the call.
            let r = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                break usize::try_from(r).unwrap_or(0).min(BATCH);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        for (i, h) in hdrs.iter().enumerate().take(n) {
            self.lens[i] = usize::try_from(h.msg_len).unwrap_or(0).min(SLOT);
            self.peers[i].len = h.msg_hdr.msg_namelen;
        }
        self.count = n;
        Ok(n)
    }

    /// Sends every datagram held to its peer and forgets them. A datagram the kernel refuses
    /// is skipped (as a lost datagram would be: clients retry); the first error is returned
    /// after the rest were tried.
    pub fn send(&mut self, sock: &impl AsRawFd) -> io::Result<()> {
        let total = std::mem::take(&mut self.count);
        let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i].as_mut_ptr().cast(),
            iov_len: self.lens[i],
        });
        // SAFETY: as in `recv`.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, h) in hdrs.iter_mut().enumerate().take(total) {
            h.msg_hdr.msg_name = (&raw mut self.peers[i].addr).cast();
            h.msg_hdr.msg_namelen = self.peers[i].len;
            h.msg_hdr.msg_iov = &raw mut iov[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut first_error = None;
        let mut done = 0;
        while done < total {
            let rest = hdrs.get_mut(done..total).unwrap_or_default();
            // SAFETY: as in `recv`; `rest` holds `rest.len()` initialized headers.
            let r = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    0,
                )
            };
            if r > 0 {
                done += usize::try_from(r).unwrap_or(1);
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The datagram at `done` failed: skip it.
            first_error.get_or_insert(e);
            done += 1;
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn socklen_of_storage() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_batch_is_received_and_answered_in_order() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = server.local_addr().expect("addr");
        for i in 0..40u8 {
            client.send_to(&[i; 3], to).expect("send");
        }
        let mut inbox = Slots::<16>::default();
        let mut outbox = Slots::<16>::default();
        let mut seen = Vec::new();
        while seen.len() < 40 {
            let n = inbox.recv(&server).expect("recv");
            assert!((1..=BATCH).contains(&n));
            for i in 0..n {
                let (q, peer) = inbox.get(i).expect("slot");
                assert_eq!(peer.socket_addr(), client.local_addr().ok());
                seen.push(q[0]);
                let buf = outbox.next_buf().expect("room");
                buf[..2].copy_from_slice(&[q[0], 0xaa]);
                assert!(outbox.push(2, peer));
            }
            outbox.send(&server).expect("send");
            assert_eq!(outbox.len(), 0);
        }
        assert_eq!(seen, (0..40).collect::<Vec<u8>>());
        let mut buf = [0u8; 8];
        for i in 0..40u8 {
            let (n, from) = client.recv_from(&mut buf).expect("reply");
            assert_eq!((&buf[..n], from), (&[i, 0xaa][..], to));
        }
    }

    #[test]
    fn long_datagrams_are_cut_to_the_slot() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .send_to(&[7; 100], server.local_addr().expect("addr"))
            .expect("send");
        let mut inbox = Slots::<16>::default();
        assert_eq!(inbox.recv(&server).expect("recv"), 1);
        assert_eq!(inbox.get(0).map(|(q, _)| q.len()), Some(16));
        assert!(inbox.get(1).is_none());
    }
}

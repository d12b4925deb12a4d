//! Interface addresses through rtnetlink: what `ip addr replace` and `ip addr del` do, without a
//! process; and which socket is one end of a TCP connection, through sock_diag.
//!
//! A node adds a /32 to its TUN device for every service it registers and removes it when the
//! service goes. Running `ip` for that forked and exec'd a program per registration (a few
//! milliseconds of CPU each, on the cores that forward packets) and blocked the async worker
//! that waited for it. One request and its acknowledgement on a netlink socket take
//! microseconds.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Why an address change failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The interface does not exist.
    #[error("no interface named {0}")]
    NoInterface(String),
    /// The netlink socket could not be opened or used.
    #[error("netlink: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused the change.
    #[error("the kernel refused to {what} {addr} on {dev}: {err}")]
    Refused {
        /// "add" or "remove".
        what: &'static str,
        /// The address.
        addr: Ipv4Addr,
        /// The interface.
        dev: String,
        /// The kernel's error.
        err: io::Error,
    },
    /// The kernel's answer was not an acknowledgement of our request.
    #[error("netlink: an unexpected answer from the kernel")]
    Unexpected,
}

/// Adds `addr/32` to `dev`, replacing it if it is there (`ip addr replace addr/32 dev dev`).
pub fn add_address(dev: &str, addr: Ipv4Addr) -> Result<(), NetlinkError> {
    let flags = libc::NLM_F_CREATE | libc::NLM_F_REPLACE;
    change(dev, addr, libc::RTM_NEWADDR, flags, "add").map(|_| ())
}

/// Removes `addr/32` from `dev`; true if it was there (`ip addr del addr/32 dev dev`).
pub fn remove_address(dev: &str, addr: Ipv4Addr) -> Result<bool, NetlinkError> {
    match change(dev, addr, libc::RTM_DELADDR, 0, "remove") {
        Ok(()) => Ok(true),
        Err(NetlinkError::Refused { err, .. })
            if err.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The request: nlmsghdr, ifaddrmsg, then IFA_LOCAL and IFA_ADDRESS (4 bytes each).
const LEN: usize = 16 + 8 + 2 * 8;

/// Builds the request for `addr/32` on interface `index` (native byte order, as netlink wants).
fn request(kind: u16, flags: i32, seq: u32, index: u32, addr: Ipv4Addr) -> [u8; LEN] {
    let mut m = [0u8; LEN];
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | flags) as u16;
    m[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&kind.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0: the kernel fills in our port.
    // ifaddrmsg: family, prefix length, flags, scope (universe), interface index.
    m[16] = libc::AF_INET as u8;
    m[17] = 32;
    m[20..24].copy_from_slice(&index.to_ne_bytes());
    for (at, ty) in [(24, libc::IFA_LOCAL), (32, libc::IFA_ADDRESS)] {
        m[at..at + 2].copy_from_slice(&8u16.to_ne_bytes());
        m[at + 2..at + 4].copy_from_slice(&ty.to_ne_bytes());
        m[at + 4..at + 8].copy_from_slice(&addr.octets());
    }
    m
}

/// The errno of the kernel's acknowledgement of request `seq` (0: done); `None` if `answer` is
/// not one.
fn ack_errno(answer: &[u8], seq: u32) -> Option<i32> {
    let word = |at: usize| -> Option<[u8; 4]> { answer.get(at..at + 4)?.try_into().ok() };
    let len = u32::from_ne_bytes(word(0)?) as usize;
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    // NLMSG_ERROR carries the errno (negative, or 0 for an ack) and our header back.
    if kind != libc::NLMSG_ERROR as u16 || len < 16 + 4 + 16 || answer.len() < len {
        return None;
    }
    let errno = i32::from_ne_bytes(word(16)?);
    let echoed_seq = u32::from_ne_bytes(word(20 + 8)?);
    (echoed_seq == seq).then_some(-errno)
}

fn change(
    dev: &str,
    addr: Ipv4Addr,
    kind: u16,
    flags: i32,
    what: &'static str,
) -> Result<(), NetlinkError> {
    let name = std::ffi::CString::new(dev).map_err(|_| NetlinkError::NoInterface(dev.into()))?;
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(NetlinkError::NoInterface(dev.into()));
    }
    let sock = open(libc::NETLINK_ROUTE)?;
    // A fresh socket per change: one request is in flight, so any sequence number will do.
    let seq = 1;
    send(&sock, &request(kind, flags, seq, index, addr))?;
    match answer(&sock, |m| ack_errno(m, seq))? {
        Some(0) => Ok(()),
        Some(errno) => Err(NetlinkError::Refused {
            what,
            addr,
            dev: dev.into(),
            err: io::Error::from_raw_os_error(errno),
        }),
        None => Err(NetlinkError::Unexpected),
    }
}

/// The first of the next few messages from the kernel that `read` makes sense of (a message
/// answering an earlier request is passed over); `None` when none of them does. A page holds
/// any answer ours get: an acknowledgement echoes the request after its errno and may carry
/// the kernel's message, and a sock_diag answer is one socket's.
fn answer<T>(sock: &OwnedFd, mut read: impl FnMut(&[u8]) -> Option<T>) -> io::Result<Option<T>> {
    let mut buf = [0u8; 4096];
    // A few messages at most (the kernel sends one answer to a unicast request).
    for _ in 0..8 {
        if let Some(t) = read(recv(sock, &mut buf)?) {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

/// A netlink socket of `protocol`, talking to the kernel.
fn open(protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `msg` to the kernel.
fn send(sock: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr_nl is the kernel's address (pid 0, no groups).
    let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: msg and to outlive the call; the lengths are theirs.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            std::ptr::addr_of!(to).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The next message from the kernel, in `buf`.
fn recv<'a>(sock: &OwnedFd, buf: &'a mut [u8]) -> io::Result<&'a [u8]> {
    loop {
        // SAFETY: buf outlives the call and its length is given.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(buf.get(..n as usize).unwrap_or_default());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// nlmsghdr, then inet_diag_req_v2: family, protocol, extensions, pad, states (u32), then the
/// socket's id (48 bytes).
const DIAG_LEN: usize = 16 + 8 + 48;
/// Where `idiag_uid` and `idiag_inode` lie in an answer (after the nlmsghdr, in
/// inet_diag_msg).
const DIAG_UID: usize = 16 + 64;
const DIAG_INODE: usize = 16 + 68;

/// A sock_diag socket, kept for many lookups (opening one per lookup doubled its cost).
pub struct SockDiag {
    sock: OwnedFd,
    seq: u32,
}

impl SockDiag {
    /// Opens one.
    pub fn open() -> io::Result<SockDiag> {
        let sock = open(libc::NETLINK_SOCK_DIAG)?;
        // The kernel answers at once; a second without one fails the lookup instead of
        // stalling every later one behind it.
        let limit = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: a timeval for SO_RCVTIMEO, its size given; it outlives the call.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(limit).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SockDiag { sock, seq: 0 })
    }

    /// The `(inode, uid)` of the TCP socket whose own end is `local` and whose peer is
    /// `remote`: `None` when there is none (it closed). One exact lookup in the kernel's
    /// socket table, where reading `/proc/net/tcp` walks all of it (10 ms per lookup on a
    /// 24 GiB machine, against 10 µs).
    pub fn tcp_socket(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> io::Result<Option<(u64, u32)>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        send(&self.sock, &diag_request(seq, local, remote))?;
        // The answer, or an error (ENOENT: no such socket). An answer to an earlier request
        // (its reader gave up on an error) is skipped by its sequence number.
        match answer(&self.sock, |m| diag_answer(m, seq))? {
            Some(Ok(found)) => Ok(Some(found)),
            Some(Err(libc::ENOENT)) => Ok(None),
            Some(Err(errno)) => Err(io::Error::from_raw_os_error(errno)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "sock_diag: no answer to the lookup",
            )),
        }
    }
}

/// The exact lookup of one IPv4 TCP socket, by its own end and its peer (network byte order
/// for addresses and ports, native for the rest, as the kernel reads them).
fn diag_request(seq: u32, local: SocketAddrV4, remote: SocketAddrV4) -> [u8; DIAG_LEN] {
    let mut m = [0u8; DIAG_LEN];
    m[0..4].copy_from_slice(&(DIAG_LEN as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    // No NLM_F_DUMP: the kernel looks the one socket up instead of walking them all.
    m[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m[16] = libc::AF_INET as u8;
    m[17] = libc::IPPROTO_TCP as u8;
    // Every state.
    m[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid: sport, dport, src[4], dst[4], interface, cookie[2].
    m[24..26].copy_from_slice(&local.port().to_be_bytes());
    m[26..28].copy_from_slice(&remote.port().to_be_bytes());
    m[28..32].copy_from_slice(&local.ip().octets());
    m[44..48].copy_from_slice(&remote.ip().octets());
    // No cookie (INET_DIAG_NOCOOKIE, all ones): any socket with these ends.
    m[64..72].copy_from_slice(&[0xff; 8]);
    m
}

/// The `(inode, uid)` an answer to request `seq` carries, or the kernel's errno; `None` for
/// anything else.
fn diag_answer(answer: &[u8], seq: u32) -> Option<Result<(u64, u32), i32>> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(answer.get(at..at + 4)?.try_into().ok()?))
    };
    let len = word(0)? as usize;
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    if answer.len() < len || word(8)? != seq {
        return None;
    }
    if kind == libc::NLMSG_ERROR as u16 {
        return ack_errno(answer, seq).map(Err);
    }
    if kind != SOCK_DIAG_BY_FAMILY || len < DIAG_INODE + 4 {
        return None;
    }
    Some(Ok((u64::from(word(DIAG_INODE)?), word(DIAG_UID)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_is_what_ip_sends() {
        let m = request(
            libc::RTM_NEWADDR,
            libc::NLM_F_CREATE,
            7,
            3,
            Ipv4Addr::new(100, 64, 1, 2),
        );
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), LEN as u32);
        assert_eq!(
            u16::from_ne_bytes(m[4..6].try_into().unwrap()),
            libc::RTM_NEWADDR
        );
        let flags = u16::from_ne_bytes(m[6..8].try_into().unwrap());
        assert_eq!(
            i32::from(flags),
            libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE
        );
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(m[17], 32);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 3);
        assert_eq!(&m[28..32], &[100, 64, 1, 2]);
        assert_eq!(&m[36..40], &[100, 64, 1, 2]);
    }

    #[test]
    fn acks_are_matched_by_sequence_and_carry_the_errno() {
        let mut a = [0u8; 36];
        a[0..4].copy_from_slice(&36u32.to_ne_bytes());
        a[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        a[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        a[28..32].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(ack_errno(&a, 9), Some(libc::EEXIST));
        assert_eq!(ack_errno(&a, 8), None);
        assert_eq!(ack_errno(&a[..20], 9), None);
        a[4] = 0;
        a[5] = 0;
        assert_eq!(ack_errno(&a, 9), None);
    }

    #[test]
    fn a_socket_lookup_names_both_ends_and_reads_inode_and_uid() {
        let local = SocketAddrV4::new(Ipv4Addr::new(100, 64, 1, 2), 40000);
        let remote = SocketAddrV4::new(Ipv4Addr::new(100, 64, 3, 4), 8080);
        let m = diag_request(5, local, remote);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()),
            DIAG_LEN as u32
        );
        assert_eq!(
            u16::from_ne_bytes(m[6..8].try_into().unwrap()),
            1,
            "no dump"
        );
        assert_eq!(
            (m[16], m[17]),
            (libc::AF_INET as u8, libc::IPPROTO_TCP as u8)
        );
        assert_eq!(&m[24..28], &[0x9c, 0x40, 0x1f, 0x90]);
        assert_eq!(
            (&m[28..32], &m[44..48]),
            (&[100, 64, 1, 2][..], &[100, 64, 3, 4][..])
        );
        assert_eq!(&m[64..72], &[0xff; 8]);

        let mut a = vec![0u8; 16 + 72];
        let len = a.len() as u32;
        a[0..4].copy_from_slice(&len.to_ne_bytes());
        a[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        a[8..12].copy_from_slice(&5u32.to_ne_bytes());
        a[DIAG_UID..DIAG_UID + 4].copy_from_slice(&1000u32.to_ne_bytes());
        a[DIAG_INODE..DIAG_INODE + 4].copy_from_slice(&4242u32.to_ne_bytes());
        assert_eq!(diag_answer(&a, 5), Some(Ok((4242, 1000))));
        assert_eq!(diag_answer(&a, 6), None, "another request's");
        assert_eq!(diag_answer(&a[..60], 5), None, "cut short");
        let mut e = [0u8; 36];
        e[0..4].copy_from_slice(&36u32.to_ne_bytes());
        e[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        e[8..12].copy_from_slice(&5u32.to_ne_bytes());
        e[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        e[28..32].copy_from_slice(&5u32.to_ne_bytes());
        assert_eq!(diag_answer(&e, 5), Some(Err(libc::ENOENT)));
    }

    /// Against the kernel: this test's own connection is found, with its socket's inode and
    /// this process's uid; a closed one is not.
    #[test]
    fn finds_the_socket_of_a_live_connection_and_not_of_a_closed_one() {
        use std::os::unix::fs::MetadataExt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let v4 = |a: std::net::SocketAddr| match a {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("not IPv4: {other}"),
        };
        let (ours, theirs) = (v4(c.local_addr().unwrap()), v4(c.peer_addr().unwrap()));
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", c.as_raw_fd()))
            .unwrap()
            .ino();
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let mut diag = SockDiag::open().unwrap();
        assert_eq!(diag.tcp_socket(ours, theirs).unwrap(), Some((inode, uid)));
        // The other end is another socket.
        let other = diag.tcp_socket(theirs, ours).unwrap().map(|(i, _)| i);
        assert!(other.is_some_and(|i| i != inode), "{other:?}");
        drop((c, s));
        let gone = SocketAddrV4::new(*ours.ip(), 1);
        assert_eq!(diag.tcp_socket(gone, theirs).unwrap(), None);
    }

    /// Against the kernel: a dummy interface in a fresh network namespace (needs root; skipped
    /// without it).
    #[test]
    fn adds_and_removes_an_address_in_a_namespace() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        // A thread of its own: unshare(CLONE_NEWNET) changes the calling thread's namespace.
        let r = std::thread::spawn(|| -> Result<(), String> {
            // SAFETY: unshare on this thread only; it never goes back.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Ok(()); // no namespaces here: nothing to test against
            }
            let lo = "lo";
            let a = Ipv4Addr::new(100, 64, 9, 9);
            let has = || {
                std::process::Command::new("ip")
                    .args(["-4", "-o", "addr", "show", "dev", lo])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("100.64.9.9/32"))
                    .unwrap_or(false)
            };
            add_address(lo, a).map_err(|e| e.to_string())?;
            add_address(lo, a).map_err(|e| format!("replace: {e}"))?;
            if !has() {
                return Err("the address is not on the interface".into());
            }
            if !remove_address(lo, a).map_err(|e| e.to_string())? {
                return Err("remove said the address was not there".into());
            }
            if has() {
                return Err("the address is still there".into());
            }
            if remove_address(lo, a).map_err(|e| e.to_string())? {
                return Err("a second remove found it".into());
            }
            match add_address("nosuch0", a) {
                Err(NetlinkError::NoInterface(_)) => Ok(()),
                other => Err(format!("unknown interface: {other:?}")),
            }
        })
        .join();
        assert_eq!(r.ok(), Some(Ok(())));
    }
}

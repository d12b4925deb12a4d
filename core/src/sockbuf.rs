//! UDP socket buffer sizing, shared by relay and node (the one socket option both need).
//!
//! A fast TCP flow through the tunnel arrives in bursts; a default-sized receive buffer drops
//! them and every drop costs the inner TCP a retransmit. Measured: 360 -> 1010 Mbit/s node to
//! node through the relay on the 2-core test machine.

use std::os::fd::RawFd;

/// The buffer size asked for.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Enlarges a socket's receive and send buffers to [`SOCKET_BUFFER`]: forced past the system
/// maximum with CAP_NET_ADMIN (SO_*BUFFORCE), else as far as the system allows.
pub fn enlarge(fd: RawFd) {
    let size = SOCKET_BUFFER as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for opt in [force, plain] {
            // SAFETY: setsockopt reads `size` (a c_int) for the given length; a bad fd only
            // makes it fail, which we ignore (the buffers stay at their defaults).
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
        }
    }
}

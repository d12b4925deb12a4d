//! UDP socket options shared by relay and node: buffer sizes and fragmentation.
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
        // A failure of both leaves the buffers at their defaults.
        for opt in [force, plain] {
            if set_option(fd, libc::SOL_SOCKET, opt, size).is_ok() {
                break;
            }
        }
    }
}

/// Undoes quinn-udp's ban on fragmentation (`IP_PMTUDISC_PROBE`, `IPV6_DONTFRAG`), which suits
/// QUIC because QUIC sizes its own packets. WireGuard does not: a node behind a path with a
/// smaller MTU than the tunnel assumes still gets its packets if they may be fragmented, as with
/// kernel WireGuard and wireguard-go. GSO keeps working: segments are sized to fit the device
/// MTU, and a run that does not fit the route fails with EMSGSIZE and goes out datagram by
/// datagram, which the kernel may then fragment. Also turns off the receive timestamps
/// quinn-udp asks for, which nothing here reads.
pub fn allow_fragmentation(fd: RawFd, v6: bool) {
    // IP_MTU_DISCOVER also applies to IPv4-mapped peers of an IPv6 socket, so it is set on both.
    let v4_opts = [(
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    )];
    let v6_opts = [
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DONT,
        ),
        (libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0),
    ];
    let opts = v4_opts.iter().chain(if v6 { &v6_opts[..] } else { &[] });
    for &(level, name, value) in opts {
        if let Err(e) = set_option(fd, level, name, value) {
            tracing::warn!(
                "cannot allow fragmentation ({e}): datagrams larger than a path's MTU will be lost"
            );
        }
    }
    if let Err(e) = set_option(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0) {
        tracing::debug!("cannot turn receive timestamps off: {e}");
    }
}

fn set_option(fd: RawFd, level: i32, name: i32, value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: setsockopt reads one c_int from a live local for the length given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

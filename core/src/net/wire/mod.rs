//! Packet views: IPv4 with TCP, UDP and ICMP inside, read and written one way in the whole
//! workspace.
//!
//! The views are smoltcp's (`smoltcp::wire`, re-exported here): a `Packet<T: AsRef<[u8]>>`
//! wraps a buffer, `new_checked` checks untrusted bytes, and a `Repr` is parsed from a packet
//! and emitted into one. Their contract: once `new_checked` (or `check_len`) passed, no
//! accessor panics. Setters and `emit` are for buffers this code sized itself.
//!
//! Why smoltcp's types and not our own: the relay's gateway already runs smoltcp's stack on
//! them, so this is the only way to have one set of views rather than two; they are tested
//! and fuzzed upstream; and with only the `proto-ipv4` feature they bring no new crate into
//! the lock file. What they lack is added here: a typed [`WireError`] (smoltcp's error says
//! nothing), the version check that smoltcp's `check_len` leaves to `Repr::parse` ([`ipv4`]),
//! transport views that refuse fragments ([`udp`], [`tcp`]), the relay's ICMP echo reply
//! ([`echo_reply`]) and packet builders for the control channel, the gateway, tests and
//! tools. Under `cfg(fuzzing)` smoltcp's `verify_checksum` always says yes; nothing here
//! relies on it for safety.
//!
//! Fuzzed by `fuzz/fuzz_targets/wire.rs`.

mod icmp;
mod ipv4;
mod tcp;
mod udp;

/// Packets the views' tests share.
#[cfg(test)]
mod fixtures {
    use std::net::Ipv4Addr;

    /// A node's address.
    pub(super) const A: Ipv4Addr = Ipv4Addr::new(100, 64, 4, 1);
    /// The relay's address.
    pub(super) const R: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

    /// UDP 100.64.4.1:4000 -> 100.64.0.1:4100, "ping" (checksums computed independently).
    pub(super) static UDP_PING: [u8; 32] = [
        0x45, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x6e, 0x4b, 0x64, 0x40, 0x04,
        0x01, 0x64, 0x40, 0x00, 0x01, 0x0f, 0xa0, 0x10, 0x04, 0x00, 0x0c, 0x34, 0xdf, 0x70, 0x69,
        0x6e, 0x67,
    ];
}

pub use icmp::{build_echo_request, echo_reply};
pub use ipv4::{addresses, build_ipv4, ipv4, is_fragment};
pub use tcp::{build_tcp, build_tcp_with, flags as tcp_flags, tcp};
pub use udp::{build_udp, udp};

pub use smoltcp::phy::ChecksumCapabilities;
pub use smoltcp::wire::{
    checksum, Icmpv4Message, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket,
    TcpSeqNumber, UdpPacket, UdpRepr, IPV4_HEADER_LEN, TCP_HEADER_LEN, UDP_HEADER_LEN,
};

/// Why bytes are not the packet a caller looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than 20 bytes, or than the header says.
    #[error("truncated IP packet")]
    Truncated,
    /// IP version other than 4.
    #[error("not an IPv4 packet")]
    NotIpv4,
    /// Header length below 20 bytes.
    #[error("bad IPv4 header length")]
    BadHeader,
    /// A fragment: only a whole packet has a transport header to trust.
    #[error("an IPv4 fragment")]
    Fragment,
    /// Another transport protocol than the one asked for.
    #[error("another transport protocol")]
    OtherProtocol,
    /// The transport header is cut short or its length fields disagree.
    #[error("malformed transport header")]
    BadTransport,
}

//! The gateway's look at a packet from a node: endpoints, and whether a TCP segment opens a
//! connection. Read through the `wire` views.

use crate::net::wire::{self, IpProtocol};
use std::net::SocketAddrV4;

/// The transport of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp {
        /// SYN without ACK nor RST: the first segment of a connection.
        opens: bool,
    },
    /// UDP.
    Udp,
}

/// Endpoints and transport of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// TCP or UDP.
    pub transport: Transport,
}

impl Segment {
    /// Reads the IPv4 packet `buf`; `None` for anything but well-formed, unfragmented TCP/UDP.
    pub fn parse(buf: &[u8]) -> Option<Segment> {
        let p = wire::ipv4(buf).ok()?;
        let (transport, sp, dp) = match p.next_header() {
            IpProtocol::Tcp => {
                let t = wire::tcp(&p).ok()?;
                let opens = t.syn() && !t.ack() && !t.rst();
                (Transport::Tcp { opens }, t.src_port(), t.dst_port())
            }
            IpProtocol::Udp => {
                let u = wire::udp(&p).ok()?;
                (Transport::Udp, u.src_port(), u.dst_port())
            }
            _ => return None,
        };
        Some(Segment {
            src: SocketAddrV4::new(p.src_addr(), sp),
            dst: SocketAddrV4::new(p.dst_addr(), dp),
            transport,
        })
    }

    /// A TCP segment that opens a connection: SYN without ACK (nor RST).
    pub fn is_syn(&self) -> bool {
        self.transport == Transport::Tcp { opens: true }
    }

    /// A TCP segment.
    pub fn is_tcp(&self) -> bool {
        matches!(self.transport, Transport::Tcp { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::wire::{build_echo_request, build_tcp, build_udp, tcp_flags as flags};
    use std::net::Ipv4Addr;

    const A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 64, 4, 1), 40000);
    const S: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 2), 8080);

    fn tcp(flags: u8) -> Vec<u8> {
        build_tcp(A, S, 1, flags, b"")
    }

    #[test]
    fn parses_tcp_and_flags() {
        let s = Segment::parse(&tcp(flags::SYN)).unwrap();
        assert_eq!((s.src, s.dst), (A, S));
        assert!(s.is_syn() && s.is_tcp());
        for f in [flags::SYN | flags::ACK, flags::ACK, flags::SYN | flags::RST] {
            let s = Segment::parse(&tcp(f)).unwrap();
            assert!(s.is_tcp() && !s.is_syn(), "{f:#x}");
        }
    }

    #[test]
    fn parses_udp() {
        let s = Segment::parse(&build_udp(*A.ip(), 5353, *S.ip(), 53, b"q")).unwrap();
        assert_eq!(s.transport, Transport::Udp);
        assert_eq!(s.dst.port(), 53);
        assert!(!s.is_syn() && !s.is_tcp());
    }

    #[test]
    fn refuses_short_fragments_and_other_protocols() {
        let p = tcp(flags::SYN);
        for n in 0..p.len() {
            // Truncated packets fail the IPv4 check or the transport length check.
            assert_eq!(Segment::parse(&p[..n]), None, "len {n}");
        }
        let mut frag = p.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(Segment::parse(&frag), None);
        let ping = build_echo_request(*A.ip(), *S.ip(), 1, 1, b"");
        assert_eq!(Segment::parse(&ping), None);
    }
}

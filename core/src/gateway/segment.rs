//! A checked look at the transport header of an IPv4 packet: endpoints and TCP flags.

use crate::packet::{proto, Ipv4Packet};
use std::net::SocketAddrV4;

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// The transport of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP with its flag byte.
    Tcp {
        /// The flags (see [`flags`]).
        flags: u8,
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
    /// TCP (with flags) or UDP.
    pub transport: Transport,
}

impl Segment {
    /// Parses the IPv4 packet `buf`; `None` for anything but well-formed, unfragmented TCP/UDP.
    pub fn parse(buf: &[u8]) -> Option<Segment> {
        let p = Ipv4Packet::new_checked(buf).ok()?;
        // Fragments other than the first carry no transport header; the first one is not whole.
        let frag = u16::from_be_bytes([buf[6], buf[7]]);
        if frag & 0x3fff != 0 {
            return None;
        }
        let t = p.payload();
        let (transport, min) = match p.protocol() {
            proto::TCP => {
                let f = *t.get(13)?;
                (Transport::Tcp { flags: f }, 20)
            }
            proto::UDP => (Transport::Udp, 8),
            _ => return None,
        };
        if t.len() < min {
            return None;
        }
        let sp = u16::from_be_bytes([t[0], t[1]]);
        let dp = u16::from_be_bytes([t[2], t[3]]);
        Some(Segment {
            src: SocketAddrV4::new(p.src(), sp),
            dst: SocketAddrV4::new(p.dst(), dp),
            transport,
        })
    }

    /// A TCP segment that opens a connection: SYN without ACK (nor RST).
    pub fn is_syn(&self) -> bool {
        matches!(self.transport, Transport::Tcp { flags: f } if f & (flags::SYN | flags::ACK | flags::RST) == flags::SYN)
    }

    /// A TCP segment.
    pub fn is_tcp(&self) -> bool {
        matches!(self.transport, Transport::Tcp { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{build_ipv4, build_udp};
    use std::net::Ipv4Addr;

    const A: Ipv4Addr = Ipv4Addr::new(100, 64, 4, 1);
    const S: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);

    fn tcp(flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&8080u16.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        build_ipv4(A, S, proto::TCP, &t)
    }

    #[test]
    fn parses_tcp_and_flags() {
        let s = Segment::parse(&tcp(flags::SYN)).unwrap();
        assert_eq!(s.src, SocketAddrV4::new(A, 40000));
        assert_eq!(s.dst, SocketAddrV4::new(S, 8080));
        assert!(s.is_syn() && s.is_tcp());
        assert!(!Segment::parse(&tcp(flags::SYN | flags::ACK))
            .unwrap()
            .is_syn());
        assert!(!Segment::parse(&tcp(flags::ACK)).unwrap().is_syn());
        assert!(!Segment::parse(&tcp(flags::SYN | flags::RST))
            .unwrap()
            .is_syn());
    }

    #[test]
    fn parses_udp() {
        let s = Segment::parse(&build_udp(A, 5353, S, 53, b"q")).unwrap();
        assert_eq!(s.transport, Transport::Udp);
        assert_eq!(s.dst.port(), 53);
        assert!(!s.is_syn());
    }

    #[test]
    fn refuses_short_and_fragments() {
        let p = tcp(flags::SYN);
        for n in 0..p.len() {
            // Truncated packets fail the IPv4 check or the transport length check.
            assert_eq!(Segment::parse(&p[..n]), None, "len {n}");
        }
        let mut frag = p.clone();
        frag[6] = 0x20; // more fragments
        assert_eq!(Segment::parse(&frag), None);
        assert_eq!(Segment::parse(&build_ipv4(A, S, 1, &[8, 0, 0, 0])), None);
    }
}

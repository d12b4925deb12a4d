//! Just enough IPv4 to route: a checked view of the header, and ICMP echo replies.
//!
//! Once [`Ipv4Packet::new_checked`] succeeded, no accessor panics.

use std::net::Ipv4Addr;

/// IP protocol numbers we look at.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: std::ops::Range<usize> = 2..4;
    pub const FLAGS_FRAG: std::ops::Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: std::ops::Range<usize> = 10..12;
    pub const SRC: std::ops::Range<usize> = 12..16;
    pub const DST: std::ops::Range<usize> = 16..20;
}

/// Why bytes are not a usable IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than the header says, or than 20 bytes.
    #[error("truncated IP packet")]
    Truncated,
    /// IP version other than 4.
    #[error("not an IPv4 packet")]
    NotIpv4,
    /// Header length below 20 bytes.
    #[error("bad IPv4 header length")]
    BadHeader,
}

/// A read-only view of an IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<'a> {
    buf: &'a [u8],
}

impl<'a> Ipv4Packet<'a> {
    /// Checks lengths and version; after this no accessor panics.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, PacketError> {
        if buf.len() < 20 {
            return Err(PacketError::Truncated);
        }
        if buf[field::VER_IHL] >> 4 != 4 {
            return Err(PacketError::NotIpv4);
        }
        let ihl = usize::from(buf[field::VER_IHL] & 0x0f) * 4;
        if ihl < 20 {
            return Err(PacketError::BadHeader);
        }
        let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if total < ihl || buf.len() < total {
            return Err(PacketError::Truncated);
        }
        Ok(Ipv4Packet { buf: &buf[..total] })
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        ip_at(self.buf, field::SRC.start)
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        ip_at(self.buf, field::DST.start)
    }

    /// The protocol number (see [`proto`]).
    pub fn protocol(&self) -> u8 {
        self.buf[field::PROTO]
    }

    /// Whether this is a fragment (more fragments follow, or it is not the first): only the
    /// first one has the transport header, so a later one's payload may look like any header.
    pub fn is_fragment(&self) -> bool {
        let f = u16::from_be_bytes([
            self.buf[field::FLAGS_FRAG.start],
            self.buf[field::FLAGS_FRAG.start + 1],
        ]);
        f & 0x3fff != 0
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.buf[field::VER_IHL] & 0x0f) * 4
    }

    /// The payload after the header.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len()..]
    }

    /// The whole packet, trimmed to its total length.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
}

fn ip_at(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3])
}

/// The source and destination of an IPv4 packet, or an error; the cheapest check on the hot path.
pub fn addresses(buf: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr), PacketError> {
    let p = Ipv4Packet::new_checked(buf)?;
    Ok((p.src(), p.dst()))
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// If `request` is an ICMP echo request, writes the echo reply into `out` and returns its length.
///
/// `out` must be at least as long as the request; otherwise (or for anything that is not a well
/// formed echo request) nothing is written and `None` comes back.
pub fn icmp_echo_reply(request: &[u8], out: &mut [u8]) -> Option<usize> {
    let p = Ipv4Packet::new_checked(request).ok()?;
    if p.protocol() != proto::ICMP {
        return None;
    }
    let icmp = p.payload();
    if icmp.len() < 8 || icmp[0] != 8 || icmp[1] != 0 || checksum(icmp) != 0 {
        return None;
    }
    let total = p.as_bytes().len();
    if out.len() < total {
        return None;
    }
    let hl = p.header_len();
    let out = &mut out[..total];
    out.copy_from_slice(p.as_bytes());
    out[field::SRC].copy_from_slice(&request[field::DST]);
    out[field::DST].copy_from_slice(&request[field::SRC]);
    out[field::TTL] = 64;
    out[field::CHECKSUM].copy_from_slice(&[0, 0]);
    let hsum = checksum(&out[..hl]);
    out[field::CHECKSUM].copy_from_slice(&hsum.to_be_bytes());
    let icmp = &mut out[hl..];
    icmp[0] = 0; // echo reply
    icmp[2] = 0;
    icmp[3] = 0;
    let isum = checksum(icmp);
    icmp[2..4].copy_from_slice(&isum.to_be_bytes());
    Some(total)
}

/// Builds a minimal IPv4 packet (for tests and tools): 20-byte header, given protocol and payload.
pub fn build_ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[field::TOTAL_LEN].copy_from_slice(&(total as u16).to_be_bytes());
    p[field::TTL] = 64;
    p[field::PROTO] = protocol;
    p[field::SRC].copy_from_slice(&src.octets());
    p[field::DST].copy_from_slice(&dst.octets());
    let sum = checksum(&p[..20]);
    p[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    p[20..].copy_from_slice(payload);
    p
}

/// Builds an ICMP echo request packet (for tests and tools).
pub fn build_echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut icmp = vec![8u8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(data);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    build_ipv4(src, dst, proto::ICMP, &icmp)
}

/// A UDP datagram inside an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpView<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The payload.
    pub payload: &'a [u8],
}

/// The UDP datagram in `p`, if it is one and its length field is consistent.
pub fn udp<'a>(p: &Ipv4Packet<'a>) -> Option<UdpView<'a>> {
    if p.protocol() != proto::UDP {
        return None;
    }
    let u = p.payload();
    if u.len() < 8 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if len < 8 || len > u.len() {
        return None;
    }
    Some(UdpView {
        src_port: u16::from_be_bytes([u[0], u[1]]),
        dst_port: u16::from_be_bytes([u[2], u[3]]),
        payload: &u[8..len],
    })
}

/// Builds an IPv4/UDP packet with correct checksums.
pub fn build_udp(
    src: Ipv4Addr,
    src_port: u16,
    dst: Ipv4Addr,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&src_port.to_be_bytes());
    u.extend_from_slice(&dst_port.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12 + len);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto::UDP]);
    pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    pseudo.extend_from_slice(&u);
    let sum = match checksum(&pseudo) {
        0 => 0xffff,
        s => s,
    };
    u[6..8].copy_from_slice(&sum.to_be_bytes());
    build_ipv4(src, dst, proto::UDP, &u)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(100, 64, 4, 1);
    const R: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

    #[test]
    fn parse_header() {
        let p = build_ipv4(A, R, proto::UDP, b"hello");
        let v = Ipv4Packet::new_checked(&p).unwrap();
        assert_eq!(v.src(), A);
        assert_eq!(v.dst(), R);
        assert_eq!(v.protocol(), proto::UDP);
        assert_eq!(v.payload(), b"hello");
        assert_eq!(checksum(&p[..20]), 0);
    }

    #[test]
    fn rejects_malformed() {
        let p = build_ipv4(A, R, proto::UDP, b"hello");
        for n in 0..p.len() {
            assert!(Ipv4Packet::new_checked(&p[..n]).is_err(), "len {n}");
        }
        let mut v6 = p.clone();
        v6[0] = 0x60;
        assert_eq!(
            Ipv4Packet::new_checked(&v6).unwrap_err(),
            PacketError::NotIpv4
        );
        let mut short_ihl = p.clone();
        short_ihl[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&short_ihl).unwrap_err(),
            PacketError::BadHeader
        );
        // Trailing bytes beyond the total length are ignored.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 7]);
        assert_eq!(
            Ipv4Packet::new_checked(&padded).unwrap().as_bytes().len(),
            p.len()
        );
    }

    #[test]
    fn fragments_are_told_apart() {
        let mut p = build_ipv4(A, R, proto::UDP, b"hello");
        assert!(!Ipv4Packet::new_checked(&p).unwrap().is_fragment());
        p[6] = 0x40; // don't fragment: still whole
        assert!(!Ipv4Packet::new_checked(&p).unwrap().is_fragment());
        p[6] = 0x20; // more fragments follow
        assert!(Ipv4Packet::new_checked(&p).unwrap().is_fragment());
        p[6] = 0x00;
        p[7] = 0xb9; // a later fragment (offset 185 * 8)
        assert!(Ipv4Packet::new_checked(&p).unwrap().is_fragment());
    }

    #[test]
    fn udp_roundtrip() {
        let p = build_udp(A, 4000, R, 53, b"query");
        let v = Ipv4Packet::new_checked(&p).unwrap();
        let u = udp(&v).unwrap();
        assert_eq!(
            (u.src_port, u.dst_port, u.payload),
            (4000, 53, &b"query"[..])
        );
        // The checksum over the pseudo header verifies to zero.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&A.octets());
        pseudo.extend_from_slice(&R.octets());
        pseudo.extend_from_slice(&[0, proto::UDP, 0, 13]);
        pseudo.extend_from_slice(v.payload());
        assert_eq!(checksum(&pseudo), 0);
        let mut bad_len = p.clone();
        bad_len[24..26].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(udp(&Ipv4Packet::new_checked(&bad_len).unwrap()), None);
    }

    #[test]
    fn echo_reply() {
        let req = build_echo_request(A, R, 7, 1, b"ping-data");
        let mut out = [0u8; 128];
        let n = icmp_echo_reply(&req, &mut out).unwrap();
        let rep = Ipv4Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(rep.src(), R);
        assert_eq!(rep.dst(), A);
        assert_eq!(rep.payload()[0], 0);
        assert_eq!(checksum(rep.payload()), 0);
        assert_eq!(checksum(&out[..20]), 0);
        assert_eq!(&rep.payload()[8..], b"ping-data");
    }

    #[test]
    fn echo_reply_refuses_non_requests() {
        let mut out = [0u8; 128];
        let udp = build_ipv4(A, R, proto::UDP, b"x");
        assert_eq!(icmp_echo_reply(&udp, &mut out), None);
        let mut bad = build_echo_request(A, R, 7, 1, b"x");
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // breaks the ICMP checksum
        assert_eq!(icmp_echo_reply(&bad, &mut out), None);
        let req = build_echo_request(A, R, 7, 1, b"x");
        assert_eq!(icmp_echo_reply(&req, &mut out[..10]), None);
    }
}

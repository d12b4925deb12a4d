//! The IPv4 check every inner packet gets, and a builder.

use super::{ChecksumCapabilities, IpProtocol, Ipv4Packet, Ipv4Repr, WireError, IPV4_HEADER_LEN};
use std::net::Ipv4Addr;

/// The IPv4 packet in `buf`, trimmed to its total length (trailing bytes are ignored).
///
/// Checks the version and smoltcp's `check_len` (header and total length against the buffer);
/// after this no accessor of the view panics. The header checksum is not verified: the packet
/// came through an authenticated tunnel or from the local kernel.
pub fn ipv4(buf: &[u8]) -> Result<Ipv4Packet<&[u8]>, WireError> {
    let first = match buf.first() {
        Some(&b) if buf.len() >= IPV4_HEADER_LEN => b,
        _ => return Err(WireError::Truncated),
    };
    if first >> 4 != 4 {
        return Err(WireError::NotIpv4);
    }
    let p = Ipv4Packet::new_checked(buf).map_err(|_| {
        if usize::from(first & 0x0f) * 4 < IPV4_HEADER_LEN {
            WireError::BadHeader
        } else {
            WireError::Truncated
        }
    })?;
    let whole = buf
        .get(..usize::from(p.total_len()))
        .ok_or(WireError::Truncated)?;
    Ok(Ipv4Packet::new_unchecked(whole))
}

/// The source and destination of an IPv4 packet: the cheapest check on the hot path.
pub fn addresses(buf: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr), WireError> {
    let p = ipv4(buf)?;
    Ok((p.src_addr(), p.dst_addr()))
}

/// Whether `p` is a fragment (more follow, or it is not the first): only the first one has
/// the transport header, and not its whole payload; a later one's payload may look like any
/// header.
pub fn is_fragment<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> bool {
    p.more_frags() || p.frag_offset() != 0
}

/// Builds an IPv4 packet with a 20-byte header (don't fragment, TTL 64, checksum filled) around
/// `payload`, which must leave the total within 65,535 bytes. For the control channel, the
/// gateway, tests and tools.
pub fn build_ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; IPV4_HEADER_LEN + payload.len()];
    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
    header(src, dst, protocol, payload.len()).emit(&mut p, &ChecksumCapabilities::default());
    p.payload_mut().copy_from_slice(payload);
    buf
}

/// The header [`build_ipv4`] and the other builders write.
pub(super) fn header(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, len: usize) -> Ipv4Repr {
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len: len.min(usize::from(u16::MAX) - IPV4_HEADER_LEN),
        hop_limit: 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::net::wire::fixtures::{A, R, UDP_PING as PACKET_BYTES};
    static PAYLOAD_BYTES: [u8; 12] = [
        0x0f, 0xa0, 0x10, 0x04, 0x00, 0x0c, 0x34, 0xdf, 0x70, 0x69, 0x6e, 0x67,
    ];

    #[test]
    fn test_parse() {
        let p = ipv4(&PACKET_BYTES).unwrap();
        assert_eq!((p.src_addr(), p.dst_addr()), (A, R));
        assert_eq!(p.next_header(), IpProtocol::Udp);
        assert_eq!((p.header_len(), p.total_len(), p.hop_limit()), (20, 32, 64));
        assert!(p.verify_checksum());
        assert!(!is_fragment(&p));
        assert_eq!(p.payload(), &PAYLOAD_BYTES[..]);
        assert_eq!(addresses(&PACKET_BYTES), Ok((A, R)));
    }

    #[test]
    fn test_emit() {
        assert_eq!(
            build_ipv4(A, R, IpProtocol::Udp, &PAYLOAD_BYTES),
            &PACKET_BYTES[..]
        );
    }

    #[test]
    fn rejects_malformed() {
        for n in 0..PACKET_BYTES.len() {
            assert!(ipv4(&PACKET_BYTES[..n]).is_err(), "len {n}");
        }
        assert_eq!(ipv4(&PACKET_BYTES[..19]).unwrap_err(), WireError::Truncated);
        let mut v6 = PACKET_BYTES;
        v6[0] = 0x60;
        assert_eq!(ipv4(&v6).unwrap_err(), WireError::NotIpv4);
        let mut short_ihl = PACKET_BYTES;
        short_ihl[0] = 0x44;
        assert_eq!(ipv4(&short_ihl).unwrap_err(), WireError::BadHeader);
        let mut long_ihl = PACKET_BYTES;
        long_ihl[0] = 0x4f; // 60 bytes of header in a 32-byte packet
        assert_eq!(ipv4(&long_ihl).unwrap_err(), WireError::Truncated);
        let mut total_below_header = PACKET_BYTES;
        total_below_header[3] = 19;
        assert!(ipv4(&total_below_header).is_err());
        // Trailing bytes beyond the total length are ignored.
        let mut padded = PACKET_BYTES.to_vec();
        padded.extend_from_slice(&[0; 7]);
        assert_eq!(ipv4(&padded).unwrap().into_inner(), &PACKET_BYTES[..]);
    }

    #[test]
    fn fragments_are_told_apart() {
        let mut p = PACKET_BYTES;
        p[6] = 0x00; // may fragment, but is whole
        assert!(!is_fragment(&ipv4(&p).unwrap()));
        p[6] = 0x20; // more fragments follow
        assert!(is_fragment(&ipv4(&p).unwrap()));
        p[6] = 0x00;
        p[7] = 0xb9; // a later fragment (offset 185 * 8)
        assert!(is_fragment(&ipv4(&p).unwrap()));
    }
}

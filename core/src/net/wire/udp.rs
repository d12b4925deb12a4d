//! UDP inside IPv4: the view of a whole datagram, and a builder.

use super::ipv4::header;
use super::{
    is_fragment, ChecksumCapabilities, IpProtocol, Ipv4Packet, UdpPacket, UdpRepr, WireError,
    IPV4_HEADER_LEN, UDP_HEADER_LEN,
};
use std::net::Ipv4Addr;

/// The UDP datagram in `p`: UDP, not a fragment, and a length field within the packet (the
/// view's `payload` ends where that field says).
pub fn udp<'a>(p: &Ipv4Packet<&'a [u8]>) -> Result<UdpPacket<&'a [u8]>, WireError> {
    if p.next_header() != IpProtocol::Udp {
        return Err(WireError::OtherProtocol);
    }
    if is_fragment(p) {
        return Err(WireError::Fragment);
    }
    UdpPacket::new_checked(p.payload()).map_err(|_| WireError::BadTransport)
}

/// Builds an IPv4/UDP packet with both checksums filled; `payload` must leave the packet
/// within 65,535 bytes.
pub fn build_udp(
    src: Ipv4Addr,
    src_port: u16,
    dst: Ipv4Addr,
    dst_port: u16,
    payload: &[u8],
) -> Vec<u8> {
    let len = UDP_HEADER_LEN + payload.len();
    let mut buf = vec![0u8; IPV4_HEADER_LEN + len];
    let caps = ChecksumCapabilities::default();
    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
    header(src, dst, IpProtocol::Udp, len).emit(&mut p, &caps);
    let repr = UdpRepr { src_port, dst_port };
    repr.emit(
        &mut UdpPacket::new_unchecked(p.payload_mut()),
        &src.into(),
        &dst.into(),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::wire::ipv4;

    use crate::net::wire::fixtures::{A, R, UDP_PING as PACKET_BYTES};

    #[test]
    fn test_parse() {
        let p = ipv4(&PACKET_BYTES).unwrap();
        let u = udp(&p).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (4000, 4100, 12));
        assert_eq!(u.payload(), b"ping");
        assert!(u.verify_checksum(&A.into(), &R.into()));
    }

    #[test]
    fn test_emit() {
        assert_eq!(build_udp(A, 4000, R, 4100, b"ping"), &PACKET_BYTES[..]);
    }

    #[test]
    fn refuses_other_protocols_fragments_and_bad_lengths() {
        let mut tcp = PACKET_BYTES;
        tcp[9] = 6;
        assert_eq!(
            udp(&ipv4(&tcp).unwrap()).unwrap_err(),
            WireError::OtherProtocol
        );
        let mut frag = PACKET_BYTES;
        frag[6] = 0x20;
        assert_eq!(udp(&ipv4(&frag).unwrap()).unwrap_err(), WireError::Fragment);
        for bad_len in [0u16, 7, 13, 200] {
            let mut b = PACKET_BYTES;
            b[24..26].copy_from_slice(&bad_len.to_be_bytes());
            assert_eq!(
                udp(&ipv4(&b).unwrap()).unwrap_err(),
                WireError::BadTransport,
                "{bad_len}"
            );
        }
        // A shorter length field cuts the payload.
        let mut short = PACKET_BYTES;
        short[24..26].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(udp(&ipv4(&short).unwrap()).unwrap().payload(), b"pi");
    }
}

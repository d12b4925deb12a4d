//! ICMP echo: the relay answers pings on its own address.

use super::ipv4::header;
use super::{
    is_fragment, ChecksumCapabilities, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet,
    IPV4_HEADER_LEN,
};
use std::net::Ipv4Addr;

/// If `request` is a whole ICMP echo request with a valid checksum, writes the echo reply
/// (addresses swapped, a fresh 20-byte header, TTL 64) into `out` and returns its length.
///
/// The reply is never longer than the request. When `out` is too short nothing is written and
/// `None` comes back, as for anything that is not such a request.
pub fn echo_reply(request: &Ipv4Packet<&[u8]>, out: &mut [u8]) -> Option<usize> {
    if request.next_header() != IpProtocol::Icmp || is_fragment(request) {
        return None;
    }
    let icmp = Icmpv4Packet::new_checked(request.payload()).ok()?;
    let caps = ChecksumCapabilities::default();
    let Ok(Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    }) = Icmpv4Repr::parse(&icmp, &caps)
    else {
        return None;
    };
    let reply = Icmpv4Repr::EchoReply {
        ident,
        seq_no,
        data,
    };
    let ip = header(
        request.dst_addr(),
        request.src_addr(),
        IpProtocol::Icmp,
        reply.buffer_len(),
    );
    let total = IPV4_HEADER_LEN + reply.buffer_len();
    let out = out.get_mut(..total)?;
    let mut p = Ipv4Packet::new_unchecked(out);
    ip.emit(&mut p, &caps);
    reply.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &caps);
    Some(total)
}

/// Builds an ICMP echo request packet (for tests and tools).
pub fn build_echo_request(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    seq_no: u16,
    data: &[u8],
) -> Vec<u8> {
    let repr = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    let mut buf = vec![0u8; IPV4_HEADER_LEN + repr.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
    header(src, dst, IpProtocol::Icmp, repr.buffer_len()).emit(&mut p, &caps);
    repr.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &caps);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::wire::ipv4;

    const A: Ipv4Addr = Ipv4Addr::new(100, 64, 4, 1);
    const R: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

    /// Echo request 100.64.4.1 -> 100.64.0.1, id 0x1234, seq 1, "ping".
    static REQUEST_BYTES: [u8; 32] = [
        0x45, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01, 0x6e, 0x5b, 0x64, 0x40, 0x04,
        0x01, 0x64, 0x40, 0x00, 0x01, 0x08, 0x00, 0x06, 0xfa, 0x12, 0x34, 0x00, 0x01, 0x70, 0x69,
        0x6e, 0x67,
    ];
    /// Its reply.
    static REPLY_BYTES: [u8; 32] = [
        0x45, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01, 0x6e, 0x5b, 0x64, 0x40, 0x00,
        0x01, 0x64, 0x40, 0x04, 0x01, 0x00, 0x00, 0x0e, 0xfa, 0x12, 0x34, 0x00, 0x01, 0x70, 0x69,
        0x6e, 0x67,
    ];

    #[test]
    fn test_parse() {
        let p = ipv4(&REQUEST_BYTES).unwrap();
        let icmp = Icmpv4Packet::new_checked(p.payload()).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap(),
            Icmpv4Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1,
                data: b"ping"
            }
        );
    }

    #[test]
    fn test_emit() {
        assert_eq!(
            build_echo_request(A, R, 0x1234, 1, b"ping"),
            &REQUEST_BYTES[..]
        );
        let mut out = [0u8; 64];
        let n = echo_reply(&ipv4(&REQUEST_BYTES).unwrap(), &mut out).unwrap();
        assert_eq!(&out[..n], &REPLY_BYTES[..]);
    }

    #[test]
    fn answers_options_with_a_plain_header() {
        // A request with 4 bytes of IP options (a no-op and three end-of-list bytes).
        let mut req = REQUEST_BYTES[..20].to_vec();
        req.extend_from_slice(&[1, 0, 0, 0]);
        req.extend_from_slice(&REQUEST_BYTES[20..]);
        req[0] = 0x46;
        req[3] = 36;
        let mut out = [0u8; 64];
        let n = echo_reply(&ipv4(&req).unwrap(), &mut out).unwrap();
        assert_eq!(&out[..n], &REPLY_BYTES[..]);
    }

    #[test]
    fn refuses_non_requests_bad_checksums_fragments_and_short_buffers() {
        let mut out = [0u8; 64];
        let reply = ipv4(&REPLY_BYTES).unwrap();
        assert_eq!(echo_reply(&reply, &mut out), None);
        let mut bad = REQUEST_BYTES;
        bad[31] ^= 0xff;
        assert_eq!(echo_reply(&ipv4(&bad).unwrap(), &mut out), None);
        let mut frag = REQUEST_BYTES;
        frag[6] = 0x20;
        assert_eq!(echo_reply(&ipv4(&frag).unwrap(), &mut out), None);
        let mut udp = REQUEST_BYTES;
        udp[9] = 17;
        assert_eq!(echo_reply(&ipv4(&udp).unwrap(), &mut out), None);
        let req = ipv4(&REQUEST_BYTES).unwrap();
        assert_eq!(echo_reply(&req, &mut out[..31]), None);
        assert_eq!(out, [0u8; 64], "nothing written");
    }
}

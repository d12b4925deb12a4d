//! TCP inside IPv4: the view of a whole segment, and a builder for tests and tools.

use super::ipv4::header;
use super::{
    is_fragment, ChecksumCapabilities, IpProtocol, Ipv4Packet, TcpPacket, TcpSeqNumber, WireError,
    IPV4_HEADER_LEN, TCP_HEADER_LEN,
};
use std::net::SocketAddrV4;

/// TCP flag bits, for [`build_tcp`].
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// The TCP segment in `p`: TCP, not a fragment, and a data offset within the packet.
pub fn tcp<'a>(p: &Ipv4Packet<&'a [u8]>) -> Result<TcpPacket<&'a [u8]>, WireError> {
    if p.next_header() != IpProtocol::Tcp {
        return Err(WireError::OtherProtocol);
    }
    if is_fragment(p) {
        return Err(WireError::Fragment);
    }
    TcpPacket::new_checked(p.payload()).map_err(|_| WireError::BadTransport)
}

/// Builds an IPv4/TCP segment with a 20-byte header, the given flags ([`flags`]), an
/// acknowledgement number of 0, a window of 65,535 and both checksums filled.
pub fn build_tcp(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    flag_bits: u8,
    payload: &[u8],
) -> Vec<u8> {
    build_tcp_with(src, dst, seq, 0, flag_bits, 0, payload)
}

/// [`build_tcp`] with an acknowledgement number and an IPv4 identification of the caller's
/// (the pcap made up from a listener's bytes numbers its packets like a real stack).
pub fn build_tcp_with(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flag_bits: u8,
    ip_id: u16,
    payload: &[u8],
) -> Vec<u8> {
    let len = TCP_HEADER_LEN + payload.len();
    let mut buf = vec![0u8; IPV4_HEADER_LEN + len];
    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
    header(*src.ip(), *dst.ip(), IpProtocol::Tcp, len)
        .emit(&mut p, &ChecksumCapabilities::default());
    if ip_id != 0 {
        p.set_ident(ip_id);
        p.fill_checksum();
    }
    let mut t = TcpPacket::new_unchecked(p.payload_mut());
    t.set_src_port(src.port());
    t.set_dst_port(dst.port());
    // The sequence space wraps: the bits are the same.
    t.set_seq_number(TcpSeqNumber(seq as i32));
    t.set_ack_number(TcpSeqNumber(ack as i32));
    t.set_header_len(TCP_HEADER_LEN as u8);
    t.clear_flags();
    t.set_fin(flag_bits & flags::FIN != 0);
    t.set_syn(flag_bits & flags::SYN != 0);
    t.set_rst(flag_bits & flags::RST != 0);
    t.set_psh(flag_bits & flags::PSH != 0);
    t.set_ack(flag_bits & flags::ACK != 0);
    t.set_window_len(u16::MAX);
    t.set_urgent_at(0);
    t.payload_mut().copy_from_slice(payload);
    t.fill_checksum(&(*src.ip()).into(), &(*dst.ip()).into());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::wire::ipv4;
    use std::net::Ipv4Addr;

    const A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 64, 4, 1), 40000);
    const S: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 2), 8080);

    /// A SYN 100.64.4.1:40000 -> 100.64.0.2:8080, seq 0x01020304, carrying "hi".
    static PACKET_BYTES: [u8; 42] = [
        0x45, 0x00, 0x00, 0x2a, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x6e, 0x4b, 0x64, 0x40, 0x04,
        0x01, 0x64, 0x40, 0x00, 0x02, 0x9c, 0x40, 0x1f, 0x90, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00,
        0x00, 0x00, 0x50, 0x02, 0xff, 0xff, 0xbb, 0x1d, 0x00, 0x00, 0x68, 0x69,
    ];

    #[test]
    fn test_parse() {
        let p = ipv4(&PACKET_BYTES).unwrap();
        let t = tcp(&p).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (40000, 8080));
        assert_eq!(t.seq_number(), TcpSeqNumber(0x01020304));
        assert!(t.syn() && !t.ack() && !t.rst() && !t.fin());
        assert_eq!((t.header_len(), t.window_len()), (20, 0xffff));
        assert_eq!(t.payload(), b"hi");
        assert!(t.verify_checksum(&(*A.ip()).into(), &(*S.ip()).into()));
    }

    #[test]
    fn test_emit() {
        assert_eq!(
            build_tcp(A, S, 0x01020304, flags::SYN, b"hi"),
            &PACKET_BYTES[..]
        );
    }

    #[test]
    fn refuses_short_bad_offsets_and_fragments() {
        let whole = ipv4(&PACKET_BYTES).unwrap();
        assert!(tcp(&whole).is_ok());
        for n in 20..40 {
            let mut b = PACKET_BYTES[..n].to_vec();
            b[3] = n as u8;
            assert_eq!(
                tcp(&ipv4(&b).unwrap()).unwrap_err(),
                WireError::BadTransport,
                "len {n}"
            );
        }
        for offset in [0u8, 4, 6, 15] {
            let mut b = PACKET_BYTES;
            b[32] = offset << 4;
            assert_eq!(
                tcp(&ipv4(&b).unwrap()).unwrap_err(),
                WireError::BadTransport,
                "offset {offset}"
            );
        }
        let mut frag = PACKET_BYTES;
        frag[6] = 0x20;
        assert_eq!(tcp(&ipv4(&frag).unwrap()).unwrap_err(), WireError::Fragment);
        let mut udp = PACKET_BYTES;
        udp[9] = 17;
        assert_eq!(
            tcp(&ipv4(&udp).unwrap()).unwrap_err(),
            WireError::OtherProtocol
        );
    }

    #[test]
    fn sequence_numbers_keep_their_bits() {
        let b = build_tcp(A, S, u32::MAX - 2, flags::ACK | flags::FIN, b"");
        let p = ipv4(&b).unwrap();
        let t = tcp(&p).unwrap();
        assert_eq!(t.seq_number().0 as u32, u32::MAX - 2);
        assert!(t.ack() && t.fin() && !t.syn());
    }
}

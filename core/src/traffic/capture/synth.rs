//! A TCP conversation made up from a connection's bytes, for the pcap of connections that never
//! cross the TUN (a laptop program calling a local service through its listener): a handshake,
//! data segments with the right sequence and acknowledgement numbers, an acknowledgement for
//! each, and the close, as IPv4 packets with valid checksums, so `tshark -r` follows the stream
//! and decodes HTTP from it.
//!
//! The handshake is made the first time packets are asked for, so a capture that starts in the
//! middle of a connection still gets a conversation tshark can follow. Bytes that were not
//! captured advance the sequence numbers without a segment (tshark reports them missing).

use crate::traffic::http1::Side;
use std::net::SocketAddrV4;

/// The largest payload put in one segment.
pub const MAX_SEGMENT: usize = 32 * 1024;

use crate::net::wire::tcp_flags::{ACK, FIN, PSH, RST, SYN};

/// One connection's made-up packets.
#[derive(Debug, Clone)]
pub struct TcpSynth {
    ends: [SocketAddrV4; 2],
    /// The next sequence number of each side.
    seq: [u32; 2],
    opened: bool,
    closed: bool,
    ip_id: u16,
}

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

impl TcpSynth {
    /// The conversation between `client` and `server`.
    pub fn new(client: SocketAddrV4, server: SocketAddrV4) -> TcpSynth {
        // Initial sequence numbers: any will do; these differ per connection.
        let isn = |a: &SocketAddrV4, b: &SocketAddrV4| {
            u32::from(*a.ip())
                .rotate_left(7)
                .wrapping_mul(2_654_435_761)
                ^ (u32::from(a.port()) << 16 | u32::from(b.port()))
        };
        TcpSynth {
            ends: [client, server],
            seq: [isn(&client, &server), isn(&server, &client)],
            opened: false,
            closed: false,
            ip_id: 1,
        }
    }

    fn packet(&mut self, from: usize, flags: u8, payload: &[u8], out: &mut Vec<Vec<u8>>) {
        let to = 1 - from;
        let (Some(src), Some(dst)) = (self.ends.get(from), self.ends.get(to)) else {
            return;
        };
        let (Some(&seq), Some(&ack)) = (self.seq.get(from), self.seq.get(to)) else {
            return;
        };
        out.push(segment(*src, *dst, seq, ack, flags, self.ip_id, payload));
        self.ip_id = self.ip_id.wrapping_add(1);
    }

    fn open(&mut self, out: &mut Vec<Vec<u8>>) {
        if self.opened {
            return;
        }
        self.opened = true;
        // The SYNs take one sequence number each, before the current ones.
        self.seq[0] = self.seq[0].wrapping_sub(1);
        self.seq[1] = self.seq[1].wrapping_sub(1);
        let (c, s) = (self.seq[0], self.seq[1]);
        out.push(segment(
            self.ends[0],
            self.ends[1],
            c,
            0,
            SYN,
            self.ip_id,
            &[],
        ));
        out.push(segment(
            self.ends[1],
            self.ends[0],
            s,
            c.wrapping_add(1),
            SYN | ACK,
            self.ip_id,
            &[],
        ));
        self.seq = [c.wrapping_add(1), s.wrapping_add(1)];
        self.packet(0, ACK, &[], out);
    }

    /// Packets for `data` sent by `from` (and the other side's acknowledgements).
    pub fn data(&mut self, from: Side, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if self.closed || data.is_empty() {
            return out;
        }
        self.open(&mut out);
        let i = idx(from);
        for chunk in data.chunks(MAX_SEGMENT) {
            self.packet(i, PSH | ACK, chunk, &mut out);
            if let Some(s) = self.seq.get_mut(i) {
                *s = s.wrapping_add(chunk.len() as u32);
            }
            self.packet(1 - i, ACK, &[], &mut out);
        }
        out
    }

    /// `len` bytes of `from` were not captured: the sequence moves on without them.
    pub fn gap(&mut self, from: Side, len: u64) {
        if let Some(s) = self.seq.get_mut(idx(from)) {
            *s = s.wrapping_add(len as u32);
        }
    }

    /// The close: FINs both ways (or a reset).
    pub fn close(&mut self, reset: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if self.closed {
            return out;
        }
        self.open(&mut out);
        self.closed = true;
        if reset {
            self.packet(1, RST | ACK, &[], &mut out);
            return out;
        }
        self.packet(0, FIN | ACK, &[], &mut out);
        self.seq[0] = self.seq[0].wrapping_add(1);
        self.packet(1, FIN | ACK, &[], &mut out);
        self.seq[1] = self.seq[1].wrapping_add(1);
        self.packet(0, ACK, &[], &mut out);
        out
    }
}

/// One IPv4/TCP packet with valid checksums (the acknowledgement number only with ACK).
pub fn segment(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    ip_id: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ack = if flags & ACK != 0 { ack } else { 0 };
    crate::net::wire::build_tcp_with(src, dst, seq, ack, flags, ip_id, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::capture::tcp::{TcpEvent, TcpLimits, Tracker};

    #[test]
    fn test_emit_a_conversation_our_own_reassembly_follows() {
        let c: SocketAddrV4 = "100.64.0.66:40000".parse().unwrap();
        let s: SocketAddrV4 = "100.64.0.67:8080".parse().unwrap();
        let mut syn = TcpSynth::new(c, s);
        let mut pkts = syn.data(Side::Client, b"GET / HTTP/1.1\r\n\r\n");
        pkts.extend(syn.data(Side::Server, &vec![b'x'; 70_000]));
        syn.gap(Side::Server, 10);
        pkts.extend(syn.data(Side::Server, b"end"));
        pkts.extend(syn.close(false));
        // Checksums: the IPv4 header and TCP (with its pseudo-header) verify.
        for p in &pkts {
            let ip = crate::net::wire::ipv4(p).unwrap();
            assert!(ip.verify_checksum());
            let t = crate::net::wire::tcp(&ip).unwrap();
            assert!(t.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
        }
        let mut t = Tracker::new(TcpLimits::default());
        let mut up = Vec::new();
        let mut down = Vec::new();
        let mut gaps = 0;
        let mut closed = false;
        for p in &pkts {
            t.packet(p, 0, |_| true);
            while let Some(ev) = t.poll() {
                match ev {
                    TcpEvent::Data(_, Side::Client, d) => up.extend(d),
                    TcpEvent::Data(_, Side::Server, d) => down.extend(d),
                    TcpEvent::Gap(_, _, n) => gaps += n,
                    TcpEvent::Close(..) => closed = true,
                    TcpEvent::Open(_) => {}
                }
            }
        }
        assert_eq!(up, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(down.len(), 70_003);
        assert_eq!(gaps, 10);
        assert!(closed);
    }
}

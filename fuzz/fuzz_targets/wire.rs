//! The packet views (`overlay_core::net::wire`) and everything that reads packets through them, on
//! arbitrary bytes taken as an IPv4 packet: `wire::ipv4` and every accessor of the view,
//! `wire::addresses`, the transport views `wire::udp` and `wire::tcp` with their accessors,
//! `wire::echo_reply` into a 64 KiB buffer, the gateway's `gateway::Segment::parse`, and the
//! capture's TCP reassembly (`capture::tcp::Tracker`) fed the packet as both directions of a
//! followed connection. Also the builders: a UDP and a TCP packet around the input parse back
//! to the same fields.
//!
//! Properties: never panics. A checked packet lies within the input and its header within the
//! packet; `addresses` agrees with it. A transport view exists only for a whole packet of its
//! protocol, and its payload lies within the IP payload. `Segment::parse` succeeds exactly when
//! the transport view does, with the same endpoints, and `opens` means SYN without ACK or RST.
//! An echo reply is a valid packet with the addresses swapped, correct checksums (computed here,
//! not with smoltcp's `verify_checksum`, which always says yes under `cfg(fuzzing)`) and the id,
//! sequence and data echoed; a buffer one byte short gets `None`.
#![no_main]

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use overlay_core::net::wire::{self, checksum, IpProtocol, WireError};
use overlay_core::relay::gateway::{Segment, Transport};
use overlay_core::traffic::capture::tcp::{TcpLimits, Tracker};

thread_local! {
    /// Output buffer for echo replies, reused (zeroing 64 KiB per input would dominate).
    static OUT: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 65536]);
}

/// The Internet checksum verifies: the folded sum of the bytes is all ones.
fn sums_to_ones(data: &[u8]) -> bool {
    checksum::data(data) == !0
}

fn check_ipv4(data: &[u8]) {
    let checked = wire::ipv4(data);
    assert_eq!(
        wire::addresses(data),
        checked
            .as_ref()
            .map(|p| (p.src_addr(), p.dst_addr()))
            .map_err(|e| *e)
    );
    let p = match checked {
        Ok(p) => p,
        Err(WireError::NotIpv4) => {
            assert!(data.len() >= 20 && data[0] >> 4 != 4);
            return;
        }
        Err(e) => {
            assert!(
                matches!(e, WireError::Truncated | WireError::BadHeader),
                "{e:?}"
            );
            return;
        }
    };
    let bytes: &[u8] = p.as_ref();
    assert!(bytes.len() >= 20 && bytes.len() <= data.len());
    assert_eq!(bytes, &data[..bytes.len()]);
    assert_eq!(usize::from(p.total_len()), bytes.len());
    let hl = usize::from(p.header_len());
    assert!((20..=60).contains(&hl) && hl <= bytes.len());
    assert_eq!(p.payload(), &bytes[hl..]);
    assert_eq!(p.version(), 4);
    // Every other accessor, for the no-panic contract.
    let _ = (p.dscp(), p.ecn(), p.ident(), p.dont_frag(), p.hop_limit());
    let _ = (p.checksum(), p.verify_checksum(), wire::is_fragment(&p));
    let _ = p.next_header();

    check_transport(&p);
    check_echo_reply(&p);
}

fn check_transport(p: &wire::Ipv4Packet<&[u8]>) {
    let whole = !wire::is_fragment(p);
    let seg = Segment::parse(p.as_ref());
    let src = p.src_addr();
    let dst = p.dst_addr();
    match wire::udp(p) {
        Ok(u) => {
            assert!(whole && p.next_header() == IpProtocol::Udp);
            assert!(usize::from(u.len()) >= 8 && usize::from(u.len()) <= p.payload().len());
            assert_eq!(u.payload(), &p.payload()[8..usize::from(u.len())]);
            let _ = (u.checksum(), u.verify_checksum(&src.into(), &dst.into()));
            let s = seg.expect("a UDP view is a segment");
            assert_eq!(s.transport, Transport::Udp);
            assert_eq!(s.src, SocketAddrV4::new(src, u.src_port()));
            assert_eq!(s.dst, SocketAddrV4::new(dst, u.dst_port()));
        }
        Err(e) => assert!(
            !whole || p.next_header() != IpProtocol::Udp || e == WireError::BadTransport,
            "{e:?}"
        ),
    }
    match wire::tcp(p) {
        Ok(t) => {
            assert!(whole && p.next_header() == IpProtocol::Tcp);
            let hl = usize::from(t.header_len());
            assert!(hl >= 20 && hl <= p.payload().len());
            assert_eq!(t.payload(), &p.payload()[hl..]);
            let _ = (
                t.seq_number(),
                t.ack_number(),
                t.window_len(),
                t.urgent_at(),
            );
            let _ = (t.psh(), t.urg(), t.ece(), t.cwr(), t.ns(), t.options());
            let _ = (t.checksum(), t.verify_checksum(&src.into(), &dst.into()));
            let s = seg.expect("a TCP view is a segment");
            let opens = t.syn() && !t.ack() && !t.rst();
            assert_eq!(s.transport, Transport::Tcp { opens });
            assert_eq!(s.is_syn(), opens);
            assert_eq!(s.src, SocketAddrV4::new(src, t.src_port()));
            assert_eq!(s.dst, SocketAddrV4::new(dst, t.dst_port()));
        }
        Err(_) => {
            if p.next_header() == IpProtocol::Tcp {
                assert_eq!(seg, None);
            }
        }
    }
    if !matches!(p.next_header(), IpProtocol::Tcp | IpProtocol::Udp) {
        assert_eq!(seg, None);
    }
}

fn check_echo_reply(req: &wire::Ipv4Packet<&[u8]>) {
    OUT.with(|out| {
        let mut out = out.borrow_mut();
        let Some(n) = wire::echo_reply(req, &mut out[..]) else {
            return;
        };
        assert!(n <= req.as_ref().len());
        let rep = wire::ipv4(&out[..n]).expect("the echo reply is a valid packet");
        assert_eq!(usize::from(rep.total_len()), n);
        assert_eq!(
            (rep.src_addr(), rep.dst_addr()),
            (req.dst_addr(), req.src_addr())
        );
        assert_eq!(rep.next_header(), IpProtocol::Icmp);
        assert!(!wire::is_fragment(&rep));
        assert!(
            sums_to_ones(&out[..usize::from(rep.header_len())]),
            "IP header checksum"
        );
        let icmp = rep.payload();
        assert_eq!((icmp[0], icmp[1]), (0, 0), "echo reply type and code");
        assert!(sums_to_ones(icmp), "ICMP checksum");
        assert_eq!(
            &icmp[4..],
            &req.payload()[4..],
            "id, sequence and data are echoed"
        );
        // An output buffer one byte short is refused, not overrun.
        assert_eq!(wire::echo_reply(req, &mut out[..n - 1]), None);
    });
}

/// The capture's reassembly, following whatever connection the packet belongs to, fed the
/// packet, then the same bytes with the addresses swapped (the other direction).
fn check_tracker(data: &[u8]) {
    let mut t = Tracker::new(TcpLimits {
        max_connections: 2,
        max_out_of_order: 64,
        idle_ms: 10,
    });
    t.packet(data, 0, |_| true);
    if data.len() >= 20 {
        let mut rev = data.to_vec();
        rev.copy_within(12..16, 16);
        rev[12..16].copy_from_slice(&data[16..20]);
        t.packet(&rev, 1, |_| true);
        t.packet(data, 2, |_| true);
    }
    t.expire(100);
    while t.poll().is_some() {}
    assert!(t.is_empty());
}

fn check_builders(data: &[u8]) {
    let (a, b) = (Ipv4Addr::new(100, 64, 4, 1), Ipv4Addr::new(100, 64, 0, 2));
    let payload = &data[..data.len().min(1400)];
    let u = wire::build_udp(a, 4000, b, 53, payload);
    let p = wire::ipv4(&u).expect("a built UDP packet parses");
    assert!(sums_to_ones(&u[..20]));
    let v = wire::udp(&p).expect("its UDP view parses");
    assert_eq!(
        (v.src_port(), v.dst_port(), v.payload()),
        (4000, 53, payload)
    );
    let flags = data.first().copied().unwrap_or(0) & 0x1f;
    let seq = data
        .get(1..5)
        .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
    let (sa, sb) = (SocketAddrV4::new(a, 40000), SocketAddrV4::new(b, 8080));
    let t = wire::build_tcp(sa, sb, seq, flags, payload);
    let p = wire::ipv4(&t).expect("a built TCP packet parses");
    let v = wire::tcp(&p).expect("its TCP view parses");
    assert_eq!((v.seq_number().0 as u32, v.payload()), (seq, payload));
    assert_eq!(v.syn(), flags & wire::tcp_flags::SYN != 0);
    assert_eq!(Segment::parse(&t).map(|s| (s.src, s.dst)), Some((sa, sb)));
}

fuzz_target!(|data: &[u8]| {
    check_ipv4(data);
    check_tracker(data);
    check_builders(data);
});

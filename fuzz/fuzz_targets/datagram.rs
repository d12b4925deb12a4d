//! Everything the relay does with an untrusted datagram or decrypted packet before any state
//! changes: `datagram::classify` (the raw UDP payload on the one port), the IPv4 view
//! `packet::Ipv4Packet::new_checked` and its accessors, `packet::icmp_echo_reply`, and
//! `PeerTable::route` on a small fixed table. Properties: never panics, and the answers agree
//! with each other (see the asserts).
#![no_main]

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use overlay_core::counters::DropReason;
use overlay_core::datagram::{self, Datagram};
use overlay_core::packet::{self, Ipv4Packet, PacketError};
use overlay_core::peers::{PeerId, PeerTable, Route, MAX_PEER_ID};

const RELAY: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// An id that is not in the table.
const UNKNOWN: PeerId = 99;

struct Table {
    table: PeerTable,
    a: PeerId,
    b: PeerId,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut table = PeerTable::new();
        let a = table
            .insert("a", [1; 32], "100.64.4.0/26".parse().unwrap())
            .unwrap();
        let b = table
            .insert("b", [2; 32], "100.64.4.64/26".parse().unwrap())
            .unwrap();
        Table { table, a, b }
    })
}

thread_local! {
    /// Output buffer for echo replies, reused (zeroing 64 KiB per input would dominate).
    static OUT: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 65536]);
}

fn check_classify(data: &[u8]) {
    match datagram::classify(data) {
        Datagram::HandshakeInit => {
            assert_eq!(data.len(), datagram::HANDSHAKE_INIT_LEN);
            assert_eq!(&data[..4], &[1, 0, 0, 0]);
        }
        Datagram::ForPeer(id) => {
            assert!(id <= MAX_PEER_ID, "peer id {id} above 24 bits");
            assert!(matches!(data[0], 2..=4) && data[1..4] == [0, 0, 0]);
            assert!(data.len() >= datagram::COOKIE_REPLY_LEN.min(datagram::DATA_MIN_LEN));
            assert!(data.len() <= datagram::MAX_DATAGRAM_LEN);
        }
        Datagram::Join => assert!(data.starts_with(b"OVJ") && data.len() >= 4),
        Datagram::Invalid => {}
    }
}

fn check_packet(data: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let checked = Ipv4Packet::new_checked(data);
    assert_eq!(
        packet::addresses(data),
        checked.map(|p| (p.src(), p.dst()))
    );
    let p = checked.ok()?;
    let bytes = p.as_bytes();
    assert!(bytes.len() >= 20 && bytes.len() <= data.len());
    assert_eq!(bytes, &data[..bytes.len()]);
    let hl = p.header_len();
    assert!((20..=60).contains(&hl) && hl <= bytes.len());
    assert_eq!(p.payload(), &bytes[hl..]);
    let _ = p.protocol();
    Some((p.src(), p.dst()))
}

fn check_echo_reply(data: &[u8]) {
    OUT.with(|out| {
        let mut out = out.borrow_mut();
        let Some(n) = packet::icmp_echo_reply(data, &mut out[..]) else {
            return;
        };
        let req = Ipv4Packet::new_checked(data).expect("an echo reply answers a valid packet");
        assert_eq!(n, req.as_bytes().len());
        let rep = Ipv4Packet::new_checked(&out[..n]).expect("the echo reply is a valid packet");
        assert_eq!((rep.src(), rep.dst()), (req.dst(), req.src()));
        assert_eq!(rep.protocol(), packet::proto::ICMP);
        assert_eq!(rep.header_len(), req.header_len());
        assert_eq!(packet::checksum(&out[..rep.header_len()]), 0, "IP header checksum");
        let icmp = rep.payload();
        assert_eq!((icmp[0], icmp[1]), (0, 0), "echo reply type and code");
        assert_eq!(packet::checksum(icmp), 0, "ICMP checksum");
        assert_eq!(&icmp[4..], &req.payload()[4..], "id, sequence and data are echoed");
        // An output buffer one byte short is refused, not overrun.
        assert_eq!(packet::icmp_echo_reply(data, &mut out[..n - 1]), None);
    });
}

fn check_route(data: &[u8], addrs: Option<(Ipv4Addr, Ipv4Addr)>) {
    let t = table();
    for from in [t.a, t.b, UNKNOWN] {
        let route = t.table.route(from, RELAY, data);
        let Some(sender) = t.table.get(from) else {
            assert_eq!(route, Route::Drop(DropReason::UnknownPeer));
            continue;
        };
        let Some((src, dst)) = addrs else {
            assert!(
                matches!(route, Route::Drop(DropReason::NotIpv4 | DropReason::Malformed)),
                "{route:?} for a packet that does not parse"
            );
            if matches!(Ipv4Packet::new_checked(data), Err(PacketError::NotIpv4)) {
                assert_eq!(route, Route::Drop(DropReason::NotIpv4));
            }
            continue;
        };
        match route {
            Route::Relay => {
                assert!(sender.prefix.contains(src));
                assert_eq!(dst, RELAY);
            }
            Route::Peer(to) => {
                assert!(sender.prefix.contains(src), "spoofed source routed");
                assert_ne!(to, from, "a packet routed back to its sender");
                let owner = t.table.get(to).expect("routed to a peer that exists");
                assert!(owner.prefix.contains(dst));
            }
            Route::Drop(DropReason::Spoofed) => assert!(!sender.prefix.contains(src)),
            Route::Drop(DropReason::Loop) => assert!(sender.prefix.contains(dst)),
            Route::Drop(DropReason::NoRoute) => {
                assert_eq!(t.table.owner_of(dst), None);
                assert_ne!(dst, RELAY);
            }
            Route::Gateway => panic!("routed to a gateway the table does not have"),
            Route::Drop(other) => panic!("{other:?} for a well-formed packet"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_classify(data);
    let addrs = check_packet(data);
    check_echo_reply(data);
    check_route(data, addrs);
});

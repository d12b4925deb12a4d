//! Everything the relay decides about an untrusted datagram or decrypted packet before any
//! state changes: `datagram::classify` (the raw UDP payload on the one port) and
//! `PeerTable::route` on a small fixed table. Properties: never panics, and the answers agree
//! with each other (see the asserts). The packet views themselves are the `wire` target's.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use overlay_core::net::counters::DropReason;
use overlay_core::net::wire::{self, WireError};
use overlay_core::relay::datagram::{self, Datagram};
use overlay_core::relay::peers::{PeerId, PeerTable, Route, MAX_PEER_ID};

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
                matches!(
                    route,
                    Route::Drop(DropReason::NotIpv4 | DropReason::Malformed)
                ),
                "{route:?} for a packet that does not parse"
            );
            if matches!(wire::ipv4(data), Err(WireError::NotIpv4)) {
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
    check_route(data, wire::addresses(data).ok());
});

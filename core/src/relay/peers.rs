//! The relay's peer table and the routing decision for every decrypted packet.
//!
//! Every peer owns one prefix of the network. A packet a peer sends must come from its own prefix
//! (anti-spoofing); it goes to the relay itself, to the peer that owns the destination, or nowhere.

use crate::net::addressing::NODE_PREFIX_LEN;
use crate::net::counters::DropReason;
use crate::net::prefix::Ipv4Prefix;
use crate::net::wire::{self, WireError};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// A peer's index on the relay; also its boringtun `Tunn` index (24 bits).
pub type PeerId = u32;

/// The largest peer id boringtun can carry (its index is shifted left by 8).
pub const MAX_PEER_ID: PeerId = (1 << 24) - 1;

/// One registered peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    /// Index on this relay.
    pub id: PeerId,
    /// Node name, unique in the network.
    pub name: String,
    /// WireGuard public key: the identity.
    pub public_key: [u8; 32],
    /// The prefix this peer owns and may send from.
    pub prefix: Ipv4Prefix,
}

/// Why a peer could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    /// The name is taken by another key.
    #[error("the name '{0}' is already used by another node")]
    NameTaken(String),
    /// The key is already registered.
    #[error("this public key is already registered as '{0}'")]
    KeyTaken(String),
    /// The prefix overlaps one that is taken.
    #[error("prefix {0} is already assigned to '{1}'")]
    PrefixTaken(Ipv4Prefix, String),
    /// The prefix is not a node prefix.
    #[error("prefix {0} is not a /{NODE_PREFIX_LEN} node prefix")]
    BadPrefix(Ipv4Prefix),
    /// No more ids.
    #[error("the relay has no room for more peers")]
    Full,
}

/// Where a decrypted packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To the relay's own address (ICMP, control, gateway).
    Relay,
    /// To another peer.
    Peer(PeerId),
    /// To a remote service's address: the relay's userspace gateway.
    Gateway,
    /// Nowhere, for this reason.
    Drop(DropReason),
}

/// All peers of a relay, indexed by id, key, name and prefix.
#[derive(Debug, Default)]
pub struct PeerTable {
    by_id: HashMap<PeerId, PeerEntry>,
    by_key: HashMap<[u8; 32], PeerId>,
    by_name: HashMap<String, PeerId>,
    by_prefix: HashMap<Ipv4Prefix, PeerId>,
    next_id: PeerId,
    /// Addresses served by the gateway (remote services), if there is one.
    gateway: Option<Ipv4Prefix>,
}

impl PeerTable {
    /// An empty table.
    pub fn new() -> Self {
        PeerTable {
            next_id: 1,
            ..Default::default()
        }
    }

    /// Sends packets for addresses in `block` (other than the relay's own) to the gateway.
    pub fn with_gateway(mut self, block: Ipv4Prefix) -> Self {
        self.gateway = Some(block);
        self
    }

    /// Adds a peer and returns its id; names, keys and prefixes stay unique.
    pub fn insert(
        &mut self,
        name: &str,
        public_key: [u8; 32],
        prefix: Ipv4Prefix,
    ) -> Result<PeerId, PeerError> {
        if prefix.len() != NODE_PREFIX_LEN {
            return Err(PeerError::BadPrefix(prefix));
        }
        if let Some(id) = self.by_key.get(&public_key) {
            return Err(PeerError::KeyTaken(self.name_of(*id)));
        }
        if self.by_name.contains_key(name) {
            return Err(PeerError::NameTaken(name.to_string()));
        }
        if let Some(id) = self.by_prefix.get(&prefix) {
            return Err(PeerError::PrefixTaken(prefix, self.name_of(*id)));
        }
        if self.next_id > MAX_PEER_ID {
            return Err(PeerError::Full);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.by_key.insert(public_key, id);
        self.by_name.insert(name.to_string(), id);
        self.by_prefix.insert(prefix, id);
        self.by_id.insert(
            id,
            PeerEntry {
                id,
                name: name.to_string(),
                public_key,
                prefix,
            },
        );
        Ok(id)
    }

    /// Removes a peer; returns it if it was there.
    pub fn remove(&mut self, id: PeerId) -> Option<PeerEntry> {
        let e = self.by_id.remove(&id)?;
        self.by_key.remove(&e.public_key);
        self.by_name.remove(&e.name);
        self.by_prefix.remove(&e.prefix);
        Some(e)
    }

    fn name_of(&self, id: PeerId) -> String {
        self.by_id
            .get(&id)
            .map(|e| e.name.clone())
            .unwrap_or_default()
    }

    /// The peer with this id.
    pub fn get(&self, id: PeerId) -> Option<&PeerEntry> {
        self.by_id.get(&id)
    }

    /// The peer with this public key.
    pub fn by_key(&self, key: &[u8; 32]) -> Option<&PeerEntry> {
        self.by_key.get(key).and_then(|id| self.by_id.get(id))
    }

    /// The peer with this name.
    pub fn by_name(&self, name: &str) -> Option<&PeerEntry> {
        self.by_name.get(name).and_then(|id| self.by_id.get(id))
    }

    /// The peer whose prefix contains `ip`.
    pub fn owner_of(&self, ip: Ipv4Addr) -> Option<PeerId> {
        self.by_prefix
            .get(&Ipv4Prefix::containing(ip, NODE_PREFIX_LEN))
            .copied()
    }

    /// Whether a prefix is taken.
    pub fn prefix_taken(&self, prefix: &Ipv4Prefix) -> bool {
        self.by_prefix.contains_key(prefix)
    }

    /// All peers, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &PeerEntry> {
        let mut v: Vec<_> = self.by_id.values().collect();
        v.sort_by_key(|e| e.id);
        v.into_iter()
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are no peers.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Decides where a packet that `from` sent (already decrypted) goes.
    ///
    /// `relay_addr` is the relay's own overlay address.
    pub fn route(&self, from: PeerId, relay_addr: Ipv4Addr, ip_packet: &[u8]) -> Route {
        let Some(sender) = self.by_id.get(&from) else {
            return Route::Drop(DropReason::UnknownPeer);
        };
        let (src, dst) = match wire::addresses(ip_packet) {
            Ok(a) => a,
            Err(WireError::NotIpv4) => return Route::Drop(DropReason::NotIpv4),
            Err(_) => return Route::Drop(DropReason::Malformed),
        };
        if !sender.prefix.contains(src) {
            return Route::Drop(DropReason::Spoofed);
        }
        if dst == relay_addr {
            return Route::Relay;
        }
        if self.gateway.is_some_and(|g| g.contains(dst)) {
            return Route::Gateway;
        }
        match self.owner_of(dst) {
            Some(id) if id == from => Route::Drop(DropReason::Loop),
            Some(id) => Route::Peer(id),
            None => Route::Drop(DropReason::NoRoute),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::wire::{build_ipv4, IpProtocol};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn table() -> (PeerTable, PeerId, PeerId) {
        let mut t = PeerTable::new();
        let a = t
            .insert("a", [1; 32], "100.64.4.0/26".parse().unwrap())
            .unwrap();
        let b = t
            .insert("b", [2; 32], "100.64.4.64/26".parse().unwrap())
            .unwrap();
        (t, a, b)
    }

    const RELAY: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

    #[test]
    fn routes_between_peers_and_to_relay() {
        let (t, a, b) = table();
        let p = build_ipv4(
            ip("100.64.4.1"),
            ip("100.64.4.65"),
            IpProtocol::Tcp,
            &[0; 20],
        );
        assert_eq!(t.route(a, RELAY, &p), Route::Peer(b));
        let p = build_ipv4(ip("100.64.4.9"), RELAY, IpProtocol::Icmp, &[0; 8]);
        assert_eq!(t.route(a, RELAY, &p), Route::Relay);
        // Services inside a peer's prefix are reachable too.
        let p = build_ipv4(
            ip("100.64.4.66"),
            ip("100.64.4.2"),
            IpProtocol::Udp,
            &[0; 8],
        );
        assert_eq!(t.route(b, RELAY, &p), Route::Peer(a));
    }

    #[test]
    fn remote_addresses_go_to_the_gateway() {
        let (t, a, _) = table();
        let t = PeerTable {
            gateway: Some("100.64.0.0/22".parse().unwrap()),
            ..t
        };
        let p = build_ipv4(
            ip("100.64.4.1"),
            ip("100.64.0.9"),
            IpProtocol::Tcp,
            &[0; 20],
        );
        assert_eq!(t.route(a, RELAY, &p), Route::Gateway);
        let p = build_ipv4(ip("100.64.4.1"), RELAY, IpProtocol::Icmp, &[0; 8]);
        assert_eq!(t.route(a, RELAY, &p), Route::Relay);
        // Without a gateway the same packet has no route.
        let (plain, a, _) = table();
        let p = build_ipv4(
            ip("100.64.4.1"),
            ip("100.64.0.9"),
            IpProtocol::Tcp,
            &[0; 20],
        );
        assert_eq!(plain.route(a, RELAY, &p), Route::Drop(DropReason::NoRoute));
    }

    #[test]
    fn drops_spoofed_sources() {
        let (t, a, _) = table();
        // a claims b's address
        let p = build_ipv4(ip("100.64.4.65"), RELAY, IpProtocol::Icmp, &[0; 8]);
        assert_eq!(t.route(a, RELAY, &p), Route::Drop(DropReason::Spoofed));
        // a claims an address outside the network
        let p = build_ipv4(ip("10.0.0.1"), ip("100.64.4.65"), IpProtocol::Icmp, &[0; 8]);
        assert_eq!(t.route(a, RELAY, &p), Route::Drop(DropReason::Spoofed));
        // a claims the relay's address
        let p = build_ipv4(RELAY, ip("100.64.4.65"), IpProtocol::Icmp, &[0; 8]);
        assert_eq!(t.route(a, RELAY, &p), Route::Drop(DropReason::Spoofed));
    }

    #[test]
    fn drops_unroutable_and_malformed() {
        let (t, a, _) = table();
        let p = build_ipv4(
            ip("100.64.4.1"),
            ip("100.64.9.1"),
            IpProtocol::Tcp,
            &[0; 20],
        );
        assert_eq!(t.route(a, RELAY, &p), Route::Drop(DropReason::NoRoute));
        let p = build_ipv4(
            ip("100.64.4.1"),
            ip("100.64.4.2"),
            IpProtocol::Tcp,
            &[0; 20],
        );
        assert_eq!(t.route(a, RELAY, &p), Route::Drop(DropReason::Loop));
        assert_eq!(
            t.route(a, RELAY, &[0x45, 0, 0]),
            Route::Drop(DropReason::Malformed)
        );
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        assert_eq!(t.route(a, RELAY, &v6), Route::Drop(DropReason::NotIpv4));
        assert_eq!(
            t.route(99, RELAY, &[0; 40]),
            Route::Drop(DropReason::UnknownPeer)
        );
    }

    #[test]
    fn uniqueness() {
        let (mut t, a, _) = table();
        let p: Ipv4Prefix = "100.64.5.0/26".parse().unwrap();
        assert_eq!(
            t.insert("a", [3; 32], p),
            Err(PeerError::NameTaken("a".into()))
        );
        assert_eq!(
            t.insert("c", [1; 32], p),
            Err(PeerError::KeyTaken("a".into()))
        );
        assert!(matches!(
            t.insert("c", [3; 32], "100.64.4.0/26".parse().unwrap()),
            Err(PeerError::PrefixTaken(..))
        ));
        assert!(matches!(
            t.insert("c", [3; 32], "100.64.8.0/24".parse().unwrap()),
            Err(PeerError::BadPrefix(..))
        ));
        let removed = t.remove(a).unwrap();
        assert_eq!(removed.name, "a");
        assert!(t.by_name("a").is_none());
        assert!(t.by_key(&[1; 32]).is_none());
        assert_eq!(t.owner_of(ip("100.64.4.1")), None);
        let c = t
            .insert("a", [1; 32], "100.64.4.0/26".parse().unwrap())
            .unwrap();
        assert_ne!(c, a, "ids are never reused");
        assert_eq!(t.len(), 2);
    }
}

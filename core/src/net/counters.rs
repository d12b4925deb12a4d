//! Traffic counters and the reasons a packet is dropped.

use serde::Serialize;

/// Why a packet or datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The datagram is not a WireGuard or overlay message, or is cut short.
    InvalidDatagram,
    /// WireGuard refused it (bad MAC, replay, unknown session, decryption failure).
    Rejected,
    /// A handshake from a key that is not registered.
    UnknownPeer,
    /// Too many handshakes: answered with a cookie instead.
    RateLimited,
    /// The inner packet is not a well-formed IP packet.
    Malformed,
    /// The inner packet is IPv6 (not routed yet).
    NotIpv4,
    /// The inner source address is outside the sender's prefix.
    Spoofed,
    /// No peer owns the destination address.
    NoRoute,
    /// The destination is the sender itself.
    Loop,
    /// The relay does not serve this protocol on its own address.
    Unsupported,
    /// The destination peer has no session yet and its queue is full, or sending failed.
    Undeliverable,
    /// A handshake initiation not newer than the newest accepted from its peer (a replay).
    Replayed,
}

impl DropReason {
    /// Every reason, in a fixed order (the order of [`Counters::drops`]).
    pub const ALL: [DropReason; 12] = [
        DropReason::InvalidDatagram,
        DropReason::Rejected,
        DropReason::UnknownPeer,
        DropReason::RateLimited,
        DropReason::Malformed,
        DropReason::NotIpv4,
        DropReason::Spoofed,
        DropReason::NoRoute,
        DropReason::Loop,
        DropReason::Unsupported,
        DropReason::Undeliverable,
        DropReason::Replayed,
    ];

    /// The reason's name in output and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::InvalidDatagram => "invalid_datagram",
            DropReason::Rejected => "rejected",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::RateLimited => "rate_limited",
            DropReason::Malformed => "malformed",
            DropReason::NotIpv4 => "not_ipv4",
            DropReason::Spoofed => "spoofed",
            DropReason::NoRoute => "no_route",
            DropReason::Loop => "loop",
            DropReason::Unsupported => "unsupported",
            DropReason::Undeliverable => "undeliverable",
            DropReason::Replayed => "replayed",
        }
    }

    fn index(&self) -> usize {
        Self::ALL.iter().position(|r| r == self).unwrap_or(0)
    }
}

/// Bytes and packets each way, and drops by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes of inner packets received.
    pub rx_bytes: u64,
    /// Inner packets received.
    pub rx_packets: u64,
    /// Bytes of inner packets sent.
    pub tx_bytes: u64,
    /// Inner packets sent.
    pub tx_packets: u64,
    /// Drops, indexed like [`DropReason::ALL`].
    pub drops: [u64; DropReason::ALL.len()],
}

impl Counters {
    /// Counts a received inner packet.
    pub fn rx(&mut self, bytes: usize) {
        self.rx_bytes += bytes as u64;
        self.rx_packets += 1;
    }

    /// Counts a sent inner packet.
    pub fn tx(&mut self, bytes: usize) {
        self.tx_bytes += bytes as u64;
        self.tx_packets += 1;
    }

    /// Counts a drop.
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// Counts `n` drops for one reason at once.
    pub fn drop_many(&mut self, reason: DropReason, n: u64) {
        self.drops[reason.index()] += n;
    }

    /// Drops for one reason.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// A JSON-friendly view with named drop counters (zero counters left out).
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            rx_bytes: self.rx_bytes,
            rx_packets: self.rx_packets,
            tx_bytes: self.tx_bytes,
            tx_packets: self.tx_packets,
            drops: DropReason::ALL
                .iter()
                .filter(|r| self.drops_for(**r) > 0)
                .map(|r| (r.as_str().to_string(), self.drops_for(*r)))
                .collect(),
        }
    }
}

/// Counters as they appear in JSON output.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq, Default)]
pub struct CountersSnapshot {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Drops by reason name.
    pub drops: std::collections::BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let mut c = Counters::default();
        c.rx(100);
        c.tx(50);
        c.drop(DropReason::Spoofed);
        c.drop(DropReason::Spoofed);
        let s = c.snapshot();
        assert_eq!((s.rx_bytes, s.rx_packets, s.tx_bytes), (100, 1, 50));
        assert_eq!(s.drops.get("spoofed"), Some(&2));
        assert_eq!(s.drops.len(), 1);
        for r in DropReason::ALL {
            assert_eq!(DropReason::ALL[r.index()], r);
        }
    }
}

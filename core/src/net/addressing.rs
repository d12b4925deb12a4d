//! The address plan: where the relay, remote services and node prefixes live in the network.
//!
//! With the default network `100.64.0.0/10`: the relay is `100.64.0.1`, remote services get
//! addresses from `100.64.0.0/22`, and every node gets a `/26` after that, the first address of
//! which (`.1` of the block) is the node itself. `100.100.100.100` (the node DNS address) is inside
//! the default network and is never handed out.

use crate::net::prefix::Ipv4Prefix;
use std::net::Ipv4Addr;

/// The node-local DNS address; never allocated, never routed.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);

/// Length of each node's prefix.
pub const NODE_PREFIX_LEN: u8 = 26;

/// Length of the block reserved for the relay and remote services.
pub const REMOTE_PREFIX_LEN: u8 = 22;

/// Why a network cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The network is too small to hold the remote block and at least one node.
    #[error("network {0} is too small: it must be /21 or larger to hold the relay, remote services and nodes")]
    TooSmall(Ipv4Prefix),
}

/// The address plan of one overlay network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPlan {
    network: Ipv4Prefix,
}

impl AddressPlan {
    /// The plan for `network`; it must have room for the remote block and node prefixes.
    pub fn new(network: Ipv4Prefix) -> Result<Self, PlanError> {
        if network.len() > 21 {
            return Err(PlanError::TooSmall(network));
        }
        Ok(AddressPlan { network })
    }

    /// The whole overlay network.
    pub fn network(&self) -> Ipv4Prefix {
        self.network
    }

    /// The relay's own overlay address (the first host of the network).
    pub fn relay_addr(&self) -> Ipv4Addr {
        self.network.nth(1).unwrap_or(self.network.addr())
    }

    /// The block of the relay and remote services.
    pub fn remote_block(&self) -> Ipv4Prefix {
        Ipv4Prefix::containing(self.network.addr(), REMOTE_PREFIX_LEN)
    }

    /// The number of node prefixes the network has room for (including skipped ones).
    pub fn node_slots(&self) -> u32 {
        let total = 1u64 << (NODE_PREFIX_LEN - self.network.len());
        total.min(u64::from(u32::MAX)) as u32
    }

    /// The node prefix in slot `n`, or `None` when that slot is reserved or out of range.
    ///
    /// Slots overlapping the remote block or holding [`DNS_ADDR`] are reserved.
    pub fn node_prefix(&self, n: u32) -> Option<Ipv4Prefix> {
        let p = self.network.subnet(NODE_PREFIX_LEN, n)?;
        if self.remote_block().covers(&p) || p.contains(DNS_ADDR) {
            return None;
        }
        Some(p)
    }

    /// The first unreserved slot that `taken` does not contain.
    pub fn next_free_prefix(&self, taken: impl Fn(&Ipv4Prefix) -> bool) -> Option<Ipv4Prefix> {
        (0..self.node_slots())
            .filter_map(|n| self.node_prefix(n))
            .find(|p| !taken(p))
    }

    /// The node's own address inside its prefix.
    pub fn node_addr(prefix: &Ipv4Prefix) -> Ipv4Addr {
        prefix.nth(1).unwrap_or(prefix.addr())
    }

    /// The node prefix that `ip` belongs to, if it is inside the network and outside the remote block.
    pub fn node_prefix_of(&self, ip: Ipv4Addr) -> Option<Ipv4Prefix> {
        if !self.network.contains(ip) || self.remote_block().contains(ip) {
            return None;
        }
        Some(Ipv4Prefix::containing(ip, NODE_PREFIX_LEN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> AddressPlan {
        AddressPlan::new("100.64.0.0/10".parse().unwrap()).unwrap()
    }

    #[test]
    fn default_plan() {
        let p = plan();
        assert_eq!(p.relay_addr(), Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(p.remote_block().to_string(), "100.64.0.0/22");
        let first = p.next_free_prefix(|_| false).unwrap();
        assert_eq!(first.to_string(), "100.64.4.0/26");
        assert_eq!(AddressPlan::node_addr(&first), Ipv4Addr::new(100, 64, 4, 1));
        let second = p.next_free_prefix(|q| *q == first).unwrap();
        assert_eq!(second.to_string(), "100.64.4.64/26");
    }

    #[test]
    fn never_allocates_dns_or_remote() {
        let p = plan();
        for n in 0..p.node_slots() {
            if let Some(q) = p.node_prefix(n) {
                assert!(!q.contains(DNS_ADDR));
                assert!(!p.remote_block().covers(&q));
            }
        }
        assert_eq!(p.node_prefix_of(Ipv4Addr::new(100, 64, 1, 9)), None);
        assert_eq!(
            p.node_prefix_of(Ipv4Addr::new(100, 64, 4, 70))
                .unwrap()
                .to_string(),
            "100.64.4.64/26"
        );
        assert_eq!(p.node_prefix_of(Ipv4Addr::new(10, 0, 0, 1)), None);
    }

    #[test]
    fn small_networks() {
        assert!(AddressPlan::new("10.0.0.0/24".parse().unwrap()).is_err());
        let p = AddressPlan::new("10.0.0.0/21".parse().unwrap()).unwrap();
        let mut taken = Vec::new();
        while let Some(q) = p.next_free_prefix(|q| taken.contains(q)) {
            taken.push(q);
        }
        assert_eq!(taken.len(), 16);
    }
}

//! Stable address allocation: one address per service key, remembered after the service goes.

use super::ServiceKey;
use crate::net::prefix::Ipv4Prefix;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The allocation table: key to address (with the sequence number it was last used at) and back.
#[derive(Clone, Debug, Default)]
pub(crate) struct Allocator {
    by_key: BTreeMap<ServiceKey, (Ipv4Addr, u64)>,
    by_addr: BTreeMap<Ipv4Addr, ServiceKey>,
}

impl Allocator {
    /// The address remembered for `key`.
    pub(crate) fn get(&self, key: &ServiceKey) -> Option<Ipv4Addr> {
        self.by_key.get(key).map(|(a, _)| *a)
    }

    /// All allocations as (key, address, last used).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ServiceKey, Ipv4Addr, u64)> {
        self.by_key.iter().map(|(k, (a, s))| (k, *a, *s))
    }

    /// Records an allocation; fails if the address or key is already allocated.
    pub(crate) fn insert(&mut self, key: ServiceKey, addr: Ipv4Addr, used: u64) -> bool {
        if self.by_addr.contains_key(&addr) || self.by_key.contains_key(&key) {
            return false;
        }
        self.by_addr.insert(addr, key.clone());
        self.by_key.insert(key, (addr, used));
        true
    }

    /// Marks `key`'s allocation as used at `stamp`.
    pub(crate) fn touch(&mut self, key: &ServiceKey, stamp: u64) {
        if let Some((_, s)) = self.by_key.get_mut(key) {
            *s = stamp;
        }
    }

    fn remove(&mut self, key: &ServiceKey) {
        if let Some((addr, _)) = self.by_key.remove(key) {
            self.by_addr.remove(&addr);
        }
    }

    /// The address for `key` among the hosts of `prefix` from index `first` on, excluding
    /// `reserved`: its remembered one if still inside, else a never-used one, else the least
    /// recently used one whose key is not live. `None` when every candidate is live.
    pub(crate) fn allocate(
        &mut self,
        key: &ServiceKey,
        prefix: Ipv4Prefix,
        first: u32,
        reserved: &BTreeSet<Ipv4Addr>,
        is_live: impl Fn(&ServiceKey) -> bool,
        stamp: u64,
    ) -> Option<Ipv4Addr> {
        let size = u32::try_from(prefix.size()).unwrap_or(u32::MAX);
        let candidate = |a: Ipv4Addr| {
            prefix.contains(a)
                && u32::from(a).wrapping_sub(u32::from(prefix.addr())) >= first
                && !reserved.contains(&a)
        };
        if let Some(addr) = self.get(key) {
            if candidate(addr) {
                self.touch(key, stamp);
                return Some(addr);
            }
            self.remove(key);
        }
        let hosts = (first..size).filter_map(|n| prefix.nth(n));
        let mut oldest: Option<(u64, Ipv4Addr)> = None;
        let mut free = None;
        for addr in hosts.filter(|a| candidate(*a)) {
            match self.by_addr.get(&addr) {
                None => {
                    free = Some(addr);
                    break;
                }
                Some(owner) if !is_live(owner) => {
                    let used = self.by_key.get(owner).map_or(0, |(_, s)| *s);
                    if oldest.is_none_or(|(s, _)| used < s) {
                        oldest = Some((used, addr));
                    }
                }
                Some(_) => {}
            }
        }
        let addr = match free {
            Some(a) => a,
            None => {
                let (_, a) = oldest?;
                if let Some(owner) = self.by_addr.get(&a).cloned() {
                    self.remove(&owner);
                }
                a
            }
        };
        self.by_addr.insert(addr, key.clone());
        self.by_key.insert(key.clone(), (addr, stamp));
        Some(addr)
    }
}

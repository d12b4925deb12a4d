//! The gateway's flow table: admission with limits per node and in total, and idle expiry.
//!
//! Keys are whatever identifies a flow to the caller (a socket handle, a 4-tuple); time is
//! milliseconds on the caller's monotonic clock.

use std::collections::HashMap;
use std::hash::Hash;

/// How many flows may exist at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowLimits {
    /// Flows one node may have open.
    pub per_node: usize,
    /// Flows in total.
    pub total: usize,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            per_node: 1024,
            total: 8192,
        }
    }
}

/// Why a flow was not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The node has as many flows as it may.
    #[error("node {node} already has {max} flows open, the most it may")]
    NodeLimit {
        /// The node.
        node: String,
        /// The limit.
        max: usize,
    },
    /// The gateway has as many flows as it may.
    #[error("the gateway already has {0} flows open, the most it may")]
    TotalLimit(usize),
    /// The key is already in the table.
    #[error("the flow exists already")]
    Exists,
}

#[derive(Clone, Debug)]
struct Entry {
    node: String,
    last_active: u64,
}

/// Open flows by key, with their owner and last activity.
#[derive(Clone, Debug)]
pub struct FlowTable<K> {
    limits: FlowLimits,
    flows: HashMap<K, Entry>,
    per_node: HashMap<String, usize>,
}

impl<K: Hash + Eq + Clone> FlowTable<K> {
    /// An empty table with `limits`.
    pub fn new(limits: FlowLimits) -> Self {
        FlowTable {
            limits,
            flows: HashMap::new(),
            per_node: HashMap::new(),
        }
    }

    /// Admits a new flow of `node`, or says which limit it hits.
    pub fn admit(&mut self, key: K, node: &str, now: u64) -> Result<(), FlowError> {
        if self.flows.contains_key(&key) {
            return Err(FlowError::Exists);
        }
        if self.flows.len() >= self.limits.total {
            return Err(FlowError::TotalLimit(self.limits.total));
        }
        let n = self.per_node.get(node).copied().unwrap_or(0);
        if n >= self.limits.per_node {
            return Err(FlowError::NodeLimit {
                node: node.to_string(),
                max: self.limits.per_node,
            });
        }
        self.per_node.insert(node.to_string(), n + 1);
        self.flows.insert(
            key,
            Entry {
                node: node.to_string(),
                last_active: now,
            },
        );
        Ok(())
    }

    /// Records activity on a flow.
    pub fn touch(&mut self, key: &K, now: u64) {
        if let Some(e) = self.flows.get_mut(key) {
            e.last_active = e.last_active.max(now);
        }
    }

    /// Removes a flow; returns whether it was there.
    pub fn remove(&mut self, key: &K) -> bool {
        let Some(e) = self.flows.remove(key) else {
            return false;
        };
        if let Some(n) = self.per_node.get_mut(&e.node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_node.remove(&e.node);
            }
        }
        true
    }

    /// Whether `key` is in the table.
    pub fn contains(&self, key: &K) -> bool {
        self.flows.contains_key(key)
    }

    /// The flows idle for `timeout` ms or longer at `now`.
    pub fn idle(&self, now: u64, timeout: u64) -> Vec<K> {
        self.flows
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.last_active) >= timeout)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Open flows in total.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is open.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Open flows of `node`.
    pub fn node_count(&self, node: &str) -> usize {
        self.per_node.get(node).copied().unwrap_or(0)
    }

    /// The node owning a flow.
    pub fn node_of(&self, key: &K) -> Option<&str> {
        self.flows.get(key).map(|e| e.node.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_node_and_total() {
        let mut t = FlowTable::new(FlowLimits {
            per_node: 2,
            total: 3,
        });
        t.admit(1, "a", 0).unwrap();
        t.admit(2, "a", 0).unwrap();
        assert_eq!(
            t.admit(3, "a", 0),
            Err(FlowError::NodeLimit {
                node: "a".into(),
                max: 2
            })
        );
        t.admit(3, "b", 0).unwrap();
        assert_eq!(t.admit(4, "c", 0), Err(FlowError::TotalLimit(3)));
        assert_eq!(t.admit(3, "c", 0), Err(FlowError::Exists));
        assert!(t.remove(&1));
        assert!(!t.remove(&1));
        assert_eq!(t.node_count("a"), 1);
        t.admit(4, "a", 0).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.node_of(&4), Some("a"));
    }

    #[test]
    fn idle_flows_expire_unless_touched() {
        let mut t = FlowTable::new(FlowLimits::default());
        t.admit("x", "a", 1000).unwrap();
        t.admit("y", "a", 1000).unwrap();
        t.touch(&"y", 5000);
        assert_eq!(t.idle(5999, 5000), Vec::<&str>::new());
        assert_eq!(t.idle(6000, 5000), vec!["x"]);
        // Time going backwards never makes a flow younger.
        t.touch(&"y", 10);
        let mut both = t.idle(20_000, 5000);
        both.sort();
        assert_eq!(both, vec!["x", "y"]);
        t.remove(&"x");
        t.remove(&"y");
        assert!(t.is_empty());
        assert_eq!(t.node_count("a"), 0);
    }
}

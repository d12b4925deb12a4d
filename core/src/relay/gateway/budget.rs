//! The gateway's memory budget: how large the userspace stack's buffers of a new TCP flow may
//! be, so that one node (careless or hostile) cannot take the relay's memory.
//!
//! Every proxied TCP connection has one buffer each way, of a size fixed when it opens (the
//! stack cannot resize them). The budget charges both at their full size from open to close,
//! so the sum of what it granted bounds what the buffers can ever occupy, whatever the peers do.
//! - Relay-wide: the charges never exceed [`BudgetConfig::total`].
//! - Per node: a fair share, `total / (active nodes + 1)` (at least
//!   [`BudgetConfig::node_floor`]), where active nodes hold at least one charge. The `+ 1`
//!   keeps room for a node that has nothing yet, so a newcomer is served while another node
//!   sits on its share.
//! - Buffers shrink before flows are refused: a flow gets the full
//!   [`BudgetConfig::max_buffer`] while its node is far from its share, smaller powers of two
//!   as it nears it, and the node keeps [`BudgetConfig::min_buffer`] in reserve for each of its
//!   remaining flow slots. A flow is refused only when even the smallest buffers do not fit.

use serde::Serialize;
use std::collections::HashMap;

/// Limits of the budget, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Buffer bytes of all flows together.
    pub total: usize,
    /// A node's share is never below this (unless `total` is).
    pub node_floor: usize,
    /// Smallest buffer one way of a flow.
    pub min_buffer: usize,
    /// Largest buffer one way of a flow.
    pub max_buffer: usize,
    /// Flows a node may have open (its flow limit), to reserve minimum buffers for.
    pub flows_per_node: usize,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            total: 256 << 20,
            node_floor: 8 << 20,
            min_buffer: 4 << 10,
            max_buffer: 256 << 10,
            flows_per_node: 1024,
        }
    }
}

/// Why a flow was not given buffers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The node's buffers fill its fair share.
    #[error("node {node} holds {used} bytes of gateway buffers, its share is {share}")]
    NodeShare {
        /// The node.
        node: String,
        /// Bytes it holds.
        used: usize,
        /// Its share now.
        share: usize,
    },
    /// All buffers together fill the budget.
    #[error("the gateway's buffers hold {used} of their {total} bytes")]
    Total {
        /// Bytes held.
        used: usize,
        /// The budget.
        total: usize,
    },
}

#[derive(Clone, Debug, Default)]
struct NodeUse {
    bytes: usize,
    flows: usize,
    refused: u64,
}

/// Buffer bytes charged per node and in total.
#[derive(Clone, Debug)]
pub struct BufferBudget {
    cfg: BudgetConfig,
    used: usize,
    nodes: HashMap<String, NodeUse>,
    /// Refusals of nodes that hold nothing now (their entry is gone).
    refused_gone: u64,
}

/// One node's use in [`BufferStats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NodeBuffers {
    /// The node.
    pub node: String,
    /// Buffer bytes its flows hold.
    pub bytes: u64,
    /// Its flows with buffers.
    pub flows: u64,
    /// Its share now.
    pub share: u64,
}

/// What the budget shows in `overlay-relay stats` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BufferStats {
    /// Buffer bytes held by all flows.
    pub bytes: u64,
    /// The budget.
    pub budget: u64,
    /// Nodes holding buffers.
    pub nodes: u64,
    /// Flows refused because their node's share or the budget was full, ever.
    pub refused: u64,
    /// The nodes holding most, largest first.
    pub top: Vec<NodeBuffers>,
}

impl BufferBudget {
    /// An empty budget; sizes are made consistent (`0 < min <= max`, and `total` holds at least
    /// one flow of a lone node).
    pub fn new(cfg: BudgetConfig) -> Self {
        let max_buffer = cfg.max_buffer.max(1);
        let min_buffer = cfg.min_buffer.clamp(1, max_buffer);
        BufferBudget {
            cfg: BudgetConfig {
                min_buffer,
                max_buffer,
                total: cfg.total.max(4 * min_buffer),
                ..cfg
            },
            used: 0,
            nodes: HashMap::new(),
            refused_gone: 0,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &BudgetConfig {
        &self.cfg
    }

    /// The fair share of `node` now: the budget split among the active nodes (with `node`
    /// among them) and one more.
    pub fn share(&self, node: &str) -> usize {
        let others = self.nodes.len() - usize::from(self.nodes.contains_key(node));
        (self.cfg.total / (others + 2))
            .max(self.cfg.node_floor)
            .min(self.cfg.total)
    }

    /// Grants a new flow of `node` a buffer size for each direction and charges both, or says
    /// which limit refuses it. Give the size back with [`BufferBudget::release`].
    pub fn admit(&mut self, node: &str) -> Result<usize, BudgetError> {
        let (bytes, flows) = self
            .nodes
            .get(node)
            .map(|u| (u.bytes, u.flows))
            .unwrap_or((0, 0));
        let share = self.share(node);
        let room_node = share.saturating_sub(bytes);
        let room_total = self.cfg.total.saturating_sub(self.used);
        let least = 2 * self.cfg.min_buffer;
        if room_node.min(room_total) < least {
            let err = if room_node < least {
                BudgetError::NodeShare {
                    node: node.to_string(),
                    used: bytes,
                    share,
                }
            } else {
                BudgetError::Total {
                    used: self.used,
                    total: self.cfg.total,
                }
            };
            match self.nodes.get_mut(node) {
                Some(u) => u.refused += 1,
                None => self.refused_gone += 1,
            }
            return Err(err);
        }
        // Minimum buffers stay reserved for the node's other flow slots.
        let slots = self.cfg.flows_per_node.saturating_sub(flows + 1);
        let spare = room_node
            .saturating_sub(slots.saturating_mul(least))
            .min(room_total);
        let each = pow2_floor(spare / 2)
            .min(self.cfg.max_buffer)
            .max(self.cfg.min_buffer);
        let u = self.nodes.entry(node.to_string()).or_default();
        u.bytes += 2 * each;
        u.flows += 1;
        self.used += 2 * each;
        Ok(each)
    }

    /// Gives back a flow's buffers of `each` bytes per direction, as [`BufferBudget::admit`]
    /// granted them.
    pub fn release(&mut self, node: &str, each: usize) {
        let Some(u) = self.nodes.get_mut(node) else {
            return;
        };
        let b = (2 * each).min(u.bytes);
        u.bytes -= b;
        u.flows = u.flows.saturating_sub(1);
        self.used = self.used.saturating_sub(b);
        if u.flows == 0 {
            self.refused_gone += u.refused;
            self.nodes.remove(node);
        }
    }

    /// Buffer bytes charged in total.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Buffer bytes charged to `node`.
    pub fn node_used(&self, node: &str) -> usize {
        self.nodes.get(node).map(|u| u.bytes).unwrap_or(0)
    }

    /// The figures, with the `top` nodes holding most.
    pub fn stats(&self, top: usize) -> BufferStats {
        let mut list: Vec<NodeBuffers> = self
            .nodes
            .iter()
            .map(|(n, u)| NodeBuffers {
                node: n.clone(),
                bytes: u.bytes as u64,
                flows: u.flows as u64,
                share: self.share(n) as u64,
            })
            .collect();
        list.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.node.cmp(&b.node)));
        list.truncate(top);
        BufferStats {
            bytes: self.used as u64,
            budget: self.cfg.total as u64,
            nodes: self.nodes.len() as u64,
            refused: self.refused_gone + self.nodes.values().map(|u| u.refused).sum::<u64>(),
            top: list,
        }
    }
}

/// The largest power of two not above `n` (0 for 0).
fn pow2_floor(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;

    fn budget(total: usize, floor: usize, flows: usize) -> BufferBudget {
        BufferBudget::new(BudgetConfig {
            total,
            node_floor: floor,
            min_buffer: 4 * KIB,
            max_buffer: 256 * KIB,
            flows_per_node: flows,
        })
    }

    #[test]
    fn a_lone_node_gets_full_buffers_then_smaller_then_refusals() {
        let mut b = budget(256 * MIB, 8 * MIB, 1024);
        // Alone, a node may take half: the other half waits for newcomers.
        assert_eq!(b.share("a"), 128 * MIB);
        assert_eq!(b.admit("a"), Ok(256 * KIB));
        let mut sizes = vec![256 * KIB];
        for _ in 1..1024 {
            sizes.push(
                b.admit("a")
                    .expect("every slot of the flow limit gets buffers"),
            );
        }
        // Sizes never grow, and the last slots get the minimum.
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        assert_eq!(sizes[1023], 4 * KIB);
        let full = sizes.iter().filter(|&&s| s == 256 * KIB).count();
        assert!(full > 200, "{full} full-size flows");
        // Past the flow limit (which the flow table enforces) the share still holds.
        while b.admit("a").is_ok() {}
        assert!(b.node_used("a") <= 128 * MIB);
        assert!(matches!(b.admit("a"), Err(BudgetError::NodeShare { .. })));
        assert_eq!(b.stats(5).refused, 2);
    }

    #[test]
    fn a_newcomer_is_served_while_another_node_sits_on_its_share() {
        let mut b = budget(256 * MIB, 8 * MIB, 1024);
        while b.admit("hog").is_ok() {}
        assert_eq!(b.admit("new"), Ok(256 * KIB));
        // With two active nodes each may hold a third; the hog holds more and gets nothing.
        assert_eq!(b.share("hog"), 256 * MIB / 3);
        assert!(b.admit("hog").is_err());
        for _ in 0..50 {
            assert_eq!(b.admit("new"), Ok(256 * KIB));
        }
        assert!(b.used() <= 256 * MIB);
    }

    #[test]
    fn the_total_holds_even_when_floors_add_up_to_more() {
        let mut b = budget(32 * MIB, 8 * MIB, 4);
        let mut nodes = 0;
        for n in 0..20 {
            let name = format!("n{n}");
            while b.admit(&name).is_ok() {}
            nodes += usize::from(b.node_used(&name) > 0);
            assert!(b.used() <= 32 * MIB);
        }
        assert!(nodes >= 3, "{nodes}");
        assert!(matches!(b.admit("late"), Err(BudgetError::Total { .. })));
    }

    #[test]
    fn release_gives_everything_back_and_keeps_the_refusal_count() {
        let mut b = budget(4 * MIB, MIB, 8);
        let granted: Vec<usize> = std::iter::from_fn(|| b.admit("a").ok()).collect();
        assert!(!granted.is_empty());
        let s = b.stats(1);
        assert_eq!(s.nodes, 1);
        assert_eq!(s.top[0].flows, granted.len() as u64);
        assert_eq!(s.top[0].bytes, b.used() as u64);
        for each in &granted {
            b.release("a", *each);
        }
        assert_eq!(b.used(), 0);
        assert_eq!(b.node_used("a"), 0);
        let s = b.stats(5);
        assert_eq!((s.bytes, s.nodes, s.refused), (0, 0, 1));
        assert!(s.top.is_empty());
        // Releasing what is not charged changes nothing.
        b.release("a", 256 * KIB);
        b.release("b", 256 * KIB);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn stats_list_the_largest_users_first() {
        let mut b = budget(256 * MIB, 8 * MIB, 1024);
        for _ in 0..3 {
            b.admit("small").unwrap();
        }
        for _ in 0..10 {
            b.admit("big").unwrap();
        }
        b.admit("tiny").unwrap();
        let s = b.stats(2);
        let names: Vec<&str> = s.top.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["big", "small"]);
        assert_eq!(s.top[0].bytes, 10 * 2 * 256 * KIB as u64);
        assert_eq!(s.top[0].share, 256 * MIB as u64 / 4);
        assert_eq!(s.nodes, 3);
        assert_eq!(s.budget, 256 * MIB as u64);
    }

    #[test]
    fn odd_sizes_are_made_consistent() {
        let mut b = BufferBudget::new(BudgetConfig {
            total: 0,
            node_floor: 0,
            min_buffer: 1 << 20,
            max_buffer: 100,
            flows_per_node: 0,
        });
        assert_eq!(b.config().min_buffer, 100);
        assert_eq!(b.admit("a"), Ok(100));
        assert!(b.admit("a").is_err());
        assert_eq!(pow2_floor(0), 0);
        assert_eq!(pow2_floor(1), 1);
        assert_eq!(pow2_floor(3 << 10), 2 << 10);
    }
}

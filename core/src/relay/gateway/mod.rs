//! The decisions of the relay's userspace gateway, without sockets or clocks.
//!
//! The relay terminates overlay TCP and UDP flows to remote-service addresses in a userspace
//! stack and splices them to real sockets in the remote environment; in the other direction it
//! accepts real connections on callback ports (or HTTP by `Host`) and opens overlay connections
//! to node services. What can be decided without IO lives here:
//! - [`segment`]: the few TCP/UDP header fields the gateway looks at before its stack does;
//! - [`flows`]: the flow table with per-node and total limits and idle expiry;
//! - [`budget`]: buffer sizes of new TCP flows within a relay-wide memory budget, fair per node;
//! - [`target`]: which `host:port` an overlay destination maps to;
//! - [`callback`]: stable callback ports, `Host` routing and the callback URL.

pub mod budget;
pub mod callback;
pub mod flows;
pub mod segment;
pub mod target;

pub use budget::{BudgetConfig, BudgetError, BufferBudget, BufferStats, NodeBuffers};
pub use callback::{CallbackPlan, CallbackPortRecord, HostRoute, PortRange};
pub use flows::{FlowError, FlowLimits, FlowTable};
pub use segment::{Segment, Transport};
pub use target::effective_target;

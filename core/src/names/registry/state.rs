//! The registry's configuration, inputs and persisted state.

use super::{RegistryError, ServiceInstance, ServiceKey, MAX_PER_NODE};
use crate::net::prefix::Ipv4Prefix;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Limits and address pools of a [`Registry`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Where remote services get addresses (the relay's `/22`); `.0` and `.1` are never used.
    pub remote_pool: Ipv4Prefix,
    /// Addresses never handed out (e.g. the node DNS address).
    pub reserved: Vec<Ipv4Addr>,
    /// Most services one node may register.
    pub max_per_node: usize,
    /// Most services (node and remote) in the registry.
    pub max_total: usize,
    /// Most changes kept in the log; older positions get a snapshot.
    pub log_capacity: usize,
}

impl RegistryConfig {
    /// Default limits for the remote pool `remote_pool`.
    pub fn new(remote_pool: Ipv4Prefix) -> Self {
        RegistryConfig {
            remote_pool,
            reserved: vec![crate::net::addressing::DNS_ADDR],
            max_per_node: MAX_PER_NODE,
            max_total: 16_384,
            log_capacity: 4096,
        }
    }
}

/// One remote service from the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEntry {
    /// The service name.
    pub name: String,
    /// The port callers use on the overlay name.
    pub port: u16,
    /// `host:port` as seen from the relay.
    pub target: String,
}

/// What [`super::Registry::set_remote`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteUpdate {
    /// Changes recorded (upserts and removals).
    pub changes: usize,
    /// Entries that were not applied, with the reason.
    pub rejected: Vec<RegistryError>,
}

/// A persisted allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRecord {
    /// Whose address.
    pub key: ServiceKey,
    /// The address.
    pub address: Ipv4Addr,
    /// The sequence number at which it was last registered or unregistered.
    #[serde(default)]
    pub last_used: u64,
}

/// A persisted on-demand remote service (remote instances without one come from the catalog).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnDemandRecord {
    /// The service name.
    pub name: String,
    /// Unix time at which it expires.
    pub expires: u64,
}

/// Everything the registry must not forget across relay restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryState {
    /// The last sequence number.
    #[serde(default)]
    pub seq: u64,
    /// The live instances.
    #[serde(default)]
    pub instances: Vec<ServiceInstance>,
    /// Every allocation, live or remembered.
    #[serde(default)]
    pub allocations: Vec<AllocationRecord>,
    /// Which remote instances were resolved on demand, and until when.
    #[serde(default)]
    pub on_demand: Vec<OnDemandRecord>,
}

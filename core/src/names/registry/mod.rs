//! The service registry: which services exist, where they run and at which overlay address.
//!
//! The relay owns the authoritative [`Registry`]: node services (registered by the node that runs
//! them, addressed inside that node's `/26`) and remote services (from the catalog or resolved on
//! demand, addressed from the relay's remote pool). Addresses are stable: the same
//! (node, name, tag) gets the same address again after unregistering, rejoining and relay
//! restarts, because the allocation table is part of the persisted [`RegistryState`].
//!
//! Every change bumps a sequence number and is kept in a bounded change log. Nodes keep a
//! [`RegistryView`] and pull [`Delta`]s sized to fit one control datagram; see [`sync`] for the
//! protocol. Nothing here does IO or reads the clock.

mod alloc;
mod state;
pub mod sync;
mod table;
#[cfg(test)]
mod tests;

pub use state::{
    AllocationRecord, OnDemandRecord, RegistryConfig, RegistryState, RemoteEntry, RemoteUpdate,
};
pub use sync::{Applied, Change, Delta, Position, Pull, RegistryView, ViewError};
pub use table::Registry;

use crate::net::prefix::Ipv4Prefix;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// Most service addresses a `/26` node prefix holds (64 minus network and node address).
pub const MAX_PER_NODE: usize = 62;

/// Longest accepted remote target (`host:port`).
pub const MAX_TARGET_LEN: usize = 200;

/// Longest accepted callback URL.
pub const MAX_CALLBACK_URL_LEN: usize = 200;

/// Transport protocol of a service.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The lowercase name, as in SRV labels (`tcp`, `udp`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What identifies a service instance: node (or remote), name and tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    /// The node that runs it; `None` for remote services (catalog or on demand).
    pub node: Option<String>,
    /// The service name.
    pub name: String,
    /// The variant tag, e.g. `v2`.
    pub tag: Option<String>,
}

impl ServiceKey {
    /// The key of a remote service.
    pub fn remote(name: &str) -> Self {
        ServiceKey {
            node: None,
            name: name.to_string(),
            tag: None,
        }
    }

    /// The key of a node service.
    pub fn node(node: &str, name: &str, tag: Option<&str>) -> Self {
        ServiceKey {
            node: Some(node.to_string()),
            name: name.to_string(),
            tag: tag.map(str::to_string),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(tag) = &self.tag {
            write!(f, "{tag}.")?;
        }
        f.write_str(&self.name)?;
        match &self.node {
            Some(node) => write!(f, " on node {node}"),
            None => f.write_str(" (remote)"),
        }
    }
}

/// One service instance with its overlay address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceInstance {
    /// The service name (a DNS label).
    pub name: String,
    /// The variant tag, if any.
    pub tag: Option<String>,
    /// The node that runs it; `None` for remote services.
    pub node: Option<String>,
    /// Its overlay address.
    pub address: Ipv4Addr,
    /// The port callers use; 0 for a name found on demand, which has none (see
    /// [`ServiceInstance::known_port`]).
    pub port: u16,
    /// TCP or UDP.
    #[serde(default)]
    pub protocol: Protocol,
    /// Where the remote environment can call it back, for node services.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// For remote services: `host:port` as seen from the relay.
    #[serde(default)]
    pub target: Option<String>,
    /// The registry's sequence number when this instance was registered; it keeps it while it
    /// stays registered, so peers are preferred first-registered first (0: from before the field).
    #[serde(default)]
    pub registered: u64,
}

impl ServiceInstance {
    /// The key identifying this instance.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            node: self.node.clone(),
            name: self.name.clone(),
            tag: self.tag.clone(),
        }
    }

    /// Whether this is a remote service.
    pub fn is_remote(&self) -> bool {
        self.node.is_none()
    }

    /// The port callers use, if it has one: a name found on demand stands for a host, whatever
    /// the port (its `port` is 0).
    pub fn known_port(&self) -> Option<u16> {
        (self.port != 0).then_some(self.port)
    }

    /// The instance's own DNS name without the trailing dot: `[tag.]name[.node].domain`.
    pub fn hostname(&self, domain: &str) -> String {
        let mut s = String::new();
        if let Some(tag) = &self.tag {
            s.push_str(tag);
            s.push('.');
        }
        s.push_str(&self.name);
        if let Some(node) = &self.node {
            s.push('.');
            s.push_str(node);
        }
        let domain = domain.trim_end_matches('.');
        if !domain.is_empty() {
            s.push('.');
            s.push_str(domain);
        }
        s
    }
}

/// Whether `s` is a DNS label as overlay uses them: 1 to 63 of `a-z`, `0-9`, `-`, no `-` at the ends.
pub fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Labels no service or node may take: the DNS server's own name under the domain, and the
/// label that names remote instances (`orders.remote.<domain>`).
pub const RESERVED_NAMES: &[&str] = &[
    crate::names::dns::NS_LABEL,
    crate::names::resolver::REMOTE_LABEL,
];

/// Who holds a name in the one namespace of node and service names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameOwner {
    /// A joined node of that name.
    Node(String),
    /// A live service of that name (the first one, by key).
    Service(ServiceKey),
    /// A label the overlay's DNS uses itself.
    Reserved,
}

impl fmt::Display for NameOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameOwner::Node(n) => write!(f, "node {n}"),
            NameOwner::Service(k) => write!(f, "the service {k}"),
            NameOwner::Reserved => f.write_str("the overlay's DNS server"),
        }
    }
}

/// Whether `s` is a `host:port` target the relay can connect to.
pub fn valid_target(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    s.len() <= MAX_TARGET_LEN && host_ok && matches!(port.parse::<u16>(), Ok(p) if p != 0)
}

/// Whether `s` is acceptable as a callback URL: printable ASCII, no quotes or backslashes.
pub fn valid_callback_url(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CALLBACK_URL_LEN
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// Why a registry operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The service name is not a DNS label.
    #[error("'{0}' is not a valid service name: use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'")]
    InvalidName(String),
    /// The tag is not a DNS label.
    #[error("'{0}' is not a valid tag: use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'")]
    InvalidTag(String),
    /// The node name is not a DNS label.
    #[error("'{0}' is not a valid node name: use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'")]
    InvalidNode(String),
    /// Port 0.
    #[error("service {0} needs a port between 1 and 65535")]
    InvalidPort(String),
    /// The remote target is not `host:port`.
    #[error(
        "remote target '{0}' of service {1} is not host:port (at most {MAX_TARGET_LEN} characters)"
    )]
    InvalidTarget(String, String),
    /// The callback URL has characters or a length overlay does not accept.
    #[error(
        "callback URL '{0}' is not printable ASCII of at most {MAX_CALLBACK_URL_LEN} characters"
    )]
    InvalidCallbackUrl(String),
    /// The service name is a joined node's name, or reserved.
    #[error("the name '{name}' belongs to {owner}, and node and service names share one namespace: give the service another name")]
    NameTaken {
        /// The name asked for.
        name: String,
        /// Who holds it.
        owner: NameOwner,
    },
    /// The catalog names a service twice.
    #[error("remote service {0} is listed twice")]
    DuplicateRemote(String),
    /// The node prefix has no room for service addresses at all.
    #[error("prefix {0} is too small to hold service addresses")]
    PrefixTooSmall(Ipv4Prefix),
    /// Every service address of the node's prefix is taken by a registered service.
    #[error("all service addresses of node {node}'s prefix {prefix} are in use")]
    PrefixFull {
        /// The node.
        node: String,
        /// Its prefix.
        prefix: Ipv4Prefix,
    },
    /// Every address of the remote pool is taken by a live remote service.
    #[error("all addresses of the remote service pool {0} are in use")]
    RemotePoolFull(Ipv4Prefix),
    /// The node already has as many services as it may.
    #[error("node {node} already has {max} services registered, the most it may")]
    NodeLimit {
        /// The node.
        node: String,
        /// The limit.
        max: usize,
    },
    /// The registry holds as many services as it may.
    #[error("the registry already holds {0} services, the most it may")]
    GlobalLimit(usize),
    /// The service is not registered.
    #[error("service {0} is not registered")]
    NotRegistered(ServiceKey),
    /// A persisted state that contradicts itself.
    #[error("the saved registry is inconsistent: {0}")]
    CorruptState(String),
}

/// Validates the labels of a node service key.
pub(crate) fn check_key(node: &str, name: &str, tag: Option<&str>) -> Result<(), RegistryError> {
    if !valid_label(node) {
        return Err(RegistryError::InvalidNode(node.to_string()));
    }
    if !valid_label(name) {
        return Err(RegistryError::InvalidName(name.to_string()));
    }
    if let Some(tag) = tag {
        if !valid_label(tag) {
            return Err(RegistryError::InvalidTag(tag.to_string()));
        }
    }
    Ok(())
}

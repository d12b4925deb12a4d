//! The relay's admin API: what `overlay-relay token|peer|nodes|services|stats` and the
//! metrics endpoint ask the running relay, and what it answers. The `--json` listings print
//! these replies.

use super::requests;
use crate::names::registry::ServiceInstance;
use crate::relay::state::TokenRecord;
use crate::relay::{NodeInfo, PeerAdded, RelayStats, TokenCreated};
use serde::{Deserialize, Serialize};

/// A request to the relay, as it goes on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum AdminRequest {
    /// See [`PeerAdd`].
    PeerAdd(PeerAdd),
    /// See [`PeerRemove`].
    PeerRemove(PeerRemove),
    /// See [`Nodes`].
    Nodes(Nodes),
    /// See [`Stats`].
    Stats(Stats),
    /// See [`TokenCreate`].
    TokenCreate(TokenCreate),
    /// See [`TokenList`].
    TokenList(TokenList),
    /// See [`Services`].
    Services(Services),
    /// See [`TokenRevoke`].
    TokenRevoke(TokenRevoke),
}

requests!(AdminRequest {
    PeerAdd => PeerAdded,
    PeerRemove => PeerRemoved,
    Nodes => Vec<NodeInfo>,
    Stats => RelayStats,
    TokenCreate => TokenCreated,
    TokenList => Vec<TokenRecord>,
    Services => Vec<ServiceInstance>,
    TokenRevoke => TokenRevoked,
});

/// Register a plain WireGuard peer with this name and public key (`overlay-relay peer add`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAdd {
    /// Unique name.
    pub name: String,
    /// Base64 public key.
    pub public_key: String,
}

/// Remove a peer by name (`overlay-relay peer remove`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRemove {
    /// Its name.
    pub name: String,
}

/// Every peer with its counters (`overlay-relay nodes`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nodes {}

/// Relay-wide figures (`overlay-relay stats`, `/metrics`, `/healthz`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {}

/// Create a join token (`overlay-relay token create`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreate {
    /// Joins it allows.
    pub uses: u32,
    /// Lifetime in seconds.
    pub ttl_secs: u64,
    /// Prefix for node names.
    #[serde(default)]
    pub name_prefix: Option<String>,
}

/// Every token, secrets hashed (`overlay-relay token list`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {}

/// Every service instance (`overlay-relay services`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {}

/// Revoke a token (`overlay-relay token revoke`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoke {
    /// Its id.
    pub id: String,
}

/// The answer to [`PeerRemove`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRemoved {
    /// The peer removed.
    pub removed: String,
}

/// The answer to [`TokenRevoke`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoked {
    /// The token revoked.
    pub revoked: String,
}

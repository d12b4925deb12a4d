//! Operator and node-lifecycle operations: peers, tokens, listings.

use super::state::{hex, PeerRecord, TokenRecord};
use super::{valid_name, Hub, HubError, Now};
use crate::identity::key;
use crate::identity::token::{self, Token};
use crate::net::addressing::AddressPlan;
use crate::net::prefix::Ipv4Prefix;
use crate::relay::peers::PeerId;
use serde::{Deserialize, Serialize};

/// Most tokens kept; expired ones are pruned first.
pub const MAX_TOKENS: usize = 10_000;

/// The result of registering a peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerAdded {
    /// Its name.
    pub name: String,
    /// Its overlay address.
    pub address: String,
    /// Its prefix.
    pub prefix: String,
    /// The network.
    pub network: String,
    /// The domain.
    pub domain: String,
    /// The relay's overlay address.
    pub relay_address: String,
    /// The relay's public key.
    pub relay_public_key: String,
    /// Where to reach the relay.
    pub endpoint: String,
    /// Inner MTU.
    pub mtu: u16,
}

/// A freshly created token: the line to hand out and its record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenCreated {
    /// The token a person pastes.
    pub token: String,
    /// Its id.
    pub id: String,
    /// Expiry, unix seconds.
    pub expires: u64,
    /// Uses.
    pub uses: u32,
}

/// One node in `overlay-relay nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeInfo {
    /// Name.
    pub name: String,
    /// Public key.
    pub public_key: String,
    /// Overlay address.
    pub address: String,
    /// Prefix.
    pub prefix: String,
    /// Last outer address.
    pub endpoint: Option<String>,
    /// Seconds since the last handshake.
    pub last_handshake_secs: Option<u64>,
    /// Counters.
    pub counters: crate::net::counters::CountersSnapshot,
}

/// Relay-wide figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RelayStats {
    /// Registered peers.
    pub peers: usize,
    /// Peers with a handshake in the last 3 minutes.
    pub connected: usize,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The relay's public key.
    pub relay_public_key: String,
    /// Drops not attributable to a peer.
    pub global: crate::net::counters::CountersSnapshot,
    /// Join requests: load and drops by reason.
    pub joins: super::JoinStats,
    /// The gateway's TCP buffers against their budget (filled in by the relay's gateway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_buffers: Option<crate::relay::gateway::BufferStats>,
}

impl Hub {
    pub(super) fn peer_added(&self, rec: &PeerRecord) -> PeerAdded {
        PeerAdded {
            name: rec.name.clone(),
            address: AddressPlan::node_addr(&rec.prefix).to_string(),
            prefix: rec.prefix.to_string(),
            network: self.cfg.plan.network().to_string(),
            domain: self.cfg.domain.clone(),
            relay_address: self.cfg.plan.relay_addr().to_string(),
            relay_public_key: key::encode(&self.public_key()),
            endpoint: self.cfg.endpoints.first().cloned().unwrap_or_default(),
            mtu: self.cfg.mtu,
        }
    }

    /// A free prefix, or an error when the network is full.
    pub(super) fn free_prefix(&self) -> Result<Ipv4Prefix, HubError> {
        self.cfg
            .plan
            .next_free_prefix(|p| self.table.prefix_taken(p))
            .ok_or_else(|| HubError::NetworkFull(self.cfg.plan.network().to_string()))
    }

    /// Registers `rec` and activates it; the change is written with the next write.
    pub(super) fn register(
        &mut self,
        rec: PeerRecord,
        token_update: Option<TokenRecord>,
    ) -> Result<PeerId, HubError> {
        // Into the table first: if that fails, nothing changed.
        let id = self.activate(&rec)?;
        self.registry.add_node(&rec.name);
        if let Some(t) = token_update {
            if let Some(slot) = self.state.tokens.iter_mut().find(|x| x.id == t.id) {
                *slot = t;
            }
        }
        self.state.peers.push(rec);
        self.changed();
        Ok(id)
    }

    /// Registers a plain WireGuard peer (`overlay-relay peer add`). Like every operator's
    /// change, it takes effect at once and is durable once [`Hub::state_version`] as it stands
    /// after the call is [`Hub::persisted`]: hold the answer until then.
    pub fn peer_add(
        &mut self,
        name: &str,
        public_key: &str,
        at: Now,
    ) -> Result<PeerAdded, HubError> {
        let now = at.unix;
        if !valid_name(name) {
            return Err(HubError::InvalidName(name.to_string()));
        }
        let pk = key::decode(public_key).map_err(|e| HubError::BadKey(e.to_string()))?;
        if let Some(e) = self.table.by_key(&pk) {
            return Err(HubError::KeyTaken(e.name.clone()));
        }
        if self.table.by_name(name).is_some() {
            return Err(HubError::NameTaken(name.to_string()));
        }
        if let Some(owner) = self.registry.name_owner(name) {
            return Err(HubError::NameIsService {
                name: name.to_string(),
                owner,
            });
        }
        let rec = PeerRecord {
            name: name.to_string(),
            public_key: key::encode(&pk),
            prefix: self.free_prefix()?,
            endpoint: None,
            created: now,
            token: None,
            handshake_timestamp: None,
        };
        self.register(rec.clone(), None)?;
        self.after_input(at);
        tracing::info!(name, prefix = %rec.prefix, "peer added");
        Ok(self.peer_added(&rec))
    }

    /// Removes a peer by name.
    pub fn peer_remove(&mut self, name: &str, now: Now) -> Result<(), HubError> {
        let id = self
            .table
            .by_name(name)
            .map(|e| e.id)
            .ok_or_else(|| HubError::NoSuchPeer(name.to_string()))?;
        self.remove_peer_state(name);
        self.table.remove(id);
        self.live.remove(&id);
        self.after_input(now);
        tracing::info!(name, "peer removed");
        Ok(())
    }

    /// Forgets `from` and its services; the tunnel is torn down by `finish_leave` once the
    /// reply went out through it.
    pub(super) fn plan_leave(&mut self, from: PeerId) -> Result<String, HubError> {
        let name = self
            .table
            .get(from)
            .map(|e| e.name.clone())
            .ok_or_else(|| HubError::NoSuchPeer(format!("#{from}")))?;
        if !self.state.peers.iter().any(|p| p.name == name) {
            // A repeated leave while the first one's reply waits for the disk.
            return Ok(name);
        }
        self.remove_peer_state(&name);
        tracing::info!(name, "node left");
        Ok(name)
    }

    /// Removes peer `name` and its services from the state (not from the routing table).
    fn remove_peer_state(&mut self, name: &str) {
        let removed = self.registry.remove_node(name);
        self.registry.forget_node(name);
        self.state.peers.retain(|r| r.name != name);
        self.changed();
        if !self.intercepts.remove_node(name).is_empty() {
            tracing::info!(name, "intercepts ended: the node left");
            self.events.push(super::Event::FrontsChanged);
        }
        if removed > 0 {
            self.notice_pending = true;
            self.refresh_remote_targets();
            self.events.push(super::Event::RegistryChanged);
        }
    }

    /// Tears down the tunnel of a peer that left.
    pub(super) fn finish_leave(&mut self, from: PeerId) {
        let Some(name) = self.table.get(from).map(|e| e.name.clone()) else {
            return;
        };
        if self.state.peers.iter().any(|p| p.name == name) {
            // It joined again meanwhile (with the same name): keep it.
            return;
        }
        self.table.remove(from);
        self.live.remove(&from);
    }

    /// Creates a join token valid for `ttl_secs` and `uses` joins.
    pub fn token_create(
        &mut self,
        uses: u32,
        ttl_secs: u64,
        name_prefix: Option<String>,
        at: Now,
    ) -> Result<TokenCreated, HubError> {
        let now = at.unix;
        if uses == 0 {
            return Err(HubError::BadToken("--uses must be at least 1".into()));
        }
        if ttl_secs == 0 {
            return Err(HubError::BadToken("--ttl must be longer than zero".into()));
        }
        if let Some(p) = &name_prefix {
            let probe = format!("{p}x");
            if !valid_name(&probe) || p.len() > 40 {
                return Err(HubError::BadToken(format!(
                    "'{p}' cannot start a node name: use lower-case letters, digits and '-'"
                )));
            }
        }
        let secret = token::generate_secret(&mut &mut *self.rng);
        let id = token::generate_id(&mut &mut *self.rng);
        let tok = Token {
            relay_key: self.public_key(),
            endpoints: self.cfg.endpoints.clone(),
            url: self.cfg.url.clone(),
            network: self.cfg.plan.network().to_string(),
            domain: self.cfg.domain.clone(),
            id: id.clone(),
            secret,
        };
        let rec = TokenRecord {
            id: id.clone(),
            secret_hash: hex(&token::hash_secret(&secret)),
            created: now,
            expires: now.saturating_add(ttl_secs),
            uses_left: uses,
            uses,
            name_prefix,
            revoked: false,
            used_by: vec![],
        };
        let tokens = &mut self.state.tokens;
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|t| t.unusable(now).is_none());
        }
        if tokens.len() >= MAX_TOKENS {
            return Err(HubError::BadToken(format!(
                "there are {MAX_TOKENS} usable tokens already; revoke some first"
            )));
        }
        tokens.push(rec.clone());
        self.changed();
        self.after_input(at);
        tracing::info!(id, uses, expires = rec.expires, "token created");
        Ok(TokenCreated {
            token: tok.encode(),
            id,
            expires: rec.expires,
            uses,
        })
    }

    /// All tokens (hashes only).
    pub fn tokens(&self) -> &[TokenRecord] {
        &self.state.tokens
    }

    /// Revokes a token by id.
    pub fn token_revoke(&mut self, id: &str, now: Now) -> Result<(), HubError> {
        let t = self
            .state
            .tokens
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| HubError::NoSuchToken(id.to_string()))?;
        t.revoked = true;
        self.changed();
        self.after_input(now);
        tracing::info!(id, "token revoked");
        Ok(())
    }

    /// Every peer with its counters.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.table
            .iter()
            .map(|e| {
                let l = self.live.get(&e.id);
                let hs = l.and_then(|l| l.tunn.stats().0);
                NodeInfo {
                    name: e.name.clone(),
                    public_key: key::encode(&e.public_key),
                    address: AddressPlan::node_addr(&e.prefix).to_string(),
                    prefix: e.prefix.to_string(),
                    endpoint: l.and_then(|l| l.endpoint).map(|a| a.to_string()),
                    last_handshake_secs: hs.map(|d| d.as_secs()),
                    counters: l.map(|l| l.counters.snapshot()).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Relay-wide figures.
    pub fn stats(&self, now: u64) -> RelayStats {
        let connected = self
            .live
            .values()
            .filter(|l| l.tunn.stats().0.map(|d| d.as_secs() < 180).unwrap_or(false))
            .count();
        RelayStats {
            peers: self.table.len(),
            connected,
            uptime_secs: now.saturating_sub(self.started),
            relay_public_key: key::encode(&self.public_key()),
            global: self.global.snapshot(),
            joins: self.join_stats.clone(),
            gateway_buffers: None,
        }
    }
}

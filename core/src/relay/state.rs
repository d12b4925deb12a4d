//! What the relay persists: peers and tokens, as a versioned document.

use crate::net::prefix::Ipv4Prefix;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The persisted relay state, versioned so that later versions can migrate it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
pub enum StateFile {
    /// Version 1.
    #[serde(rename = "1")]
    V1(RelayState),
}

/// Everything the relay must not forget.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct RelayState {
    /// Registered peers (nodes and stock WireGuard peers).
    #[serde(default)]
    pub peers: Vec<PeerRecord>,
    /// Join tokens (secrets hashed).
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
    /// The service registry: instances and stable address allocations.
    #[serde(default)]
    pub registry: crate::names::registry::RegistryState,
    /// Callback ports handed to node services, kept so a service gets its port back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callback_ports: Vec<crate::relay::gateway::CallbackPortRecord>,
    /// Active intercepts: a relay restart keeps them (their nodes have [`crate::relay::INTERCEPT_SILENCE`]
    /// to be heard from again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intercepts: Vec<crate::intercept::Intercept>,
}

/// One registered peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerRecord {
    /// Unique name.
    pub name: String,
    /// Base64 WireGuard public key.
    pub public_key: String,
    /// Its prefix.
    pub prefix: Ipv4Prefix,
    /// The last outer address it was seen at, so the relay can reach it first after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SocketAddr>,
    /// Unix time of registration.
    #[serde(default)]
    pub created: u64,
    /// The token it joined with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The newest handshake initiation timestamp accepted from it: older or equal ones are
    /// replays, also after a restart (WireGuard's rule, which boringtun keeps in memory only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_timestamp: Option<super::initiation::Tai64n>,
}

/// One join token. Only a hash of the secret is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id (16 hex characters).
    pub id: String,
    /// BLAKE2s hash of the secret, hex.
    pub secret_hash: String,
    /// Unix time of creation.
    pub created: u64,
    /// Unix time after which it no longer works.
    pub expires: u64,
    /// Joins left.
    pub uses_left: u32,
    /// Joins it was created with.
    pub uses: u32,
    /// Prefix for generated node names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Revoked by an admin.
    #[serde(default)]
    pub revoked: bool,
    /// Names of the nodes that joined with it.
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// Hex encoding for hashes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes hex of exactly 32 bytes.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl TokenRecord {
    /// Why this token cannot be used now, or `None` if it can.
    pub fn unusable(&self, now: u64) -> Option<&'static str> {
        if self.revoked {
            Some("this token was revoked; ask the relay's operator for a new one")
        } else if now >= self.expires {
            Some("this token has expired; ask the relay's operator for a new one")
        } else if self.uses_left == 0 {
            Some("this token has been used up; ask the relay's operator for a new one")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        let b = [0xab; 32];
        assert_eq!(unhex32(&hex(&b)), Some(b));
        assert_eq!(unhex32("zz"), None);
        assert_eq!(unhex32(&"g".repeat(64)), None);
    }

    #[test]
    fn token_usability() {
        let mut t = TokenRecord {
            id: "a".into(),
            secret_hash: String::new(),
            created: 0,
            expires: 100,
            uses_left: 1,
            uses: 1,
            name_prefix: None,
            revoked: false,
            used_by: vec![],
        };
        assert_eq!(t.unusable(50), None);
        assert!(t.unusable(100).unwrap().contains("expired"));
        t.uses_left = 0;
        assert!(t.unusable(50).unwrap().contains("used up"));
        t.revoked = true;
        assert!(t.unusable(50).unwrap().contains("revoked"));
    }

    #[test]
    fn state_file_is_versioned() {
        let s = StateFile::V1(RelayState::default());
        let j = serde_json::to_string(&s).unwrap();
        assert!(
            j.starts_with(r#"{"version":"1","peers":[],"tokens":[],"registry":"#),
            "{j}"
        );
        assert!(serde_json::from_str::<StateFile>(r#"{"version":"9"}"#).is_err());
    }
}

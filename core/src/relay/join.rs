//! Join requests: token check, name choice, prefix allocation, registration, answer.

use super::state::{unhex32, PeerRecord};
use super::{valid_name, Hub, HubError, Store, Wire};
use crate::counters::DropReason;
use crate::join::{open_request, JoinResponse, OpenedRequest};
use crate::key;
use crate::token;
use std::net::SocketAddr;

impl<S: Store> Hub<S> {
    /// Handles a join datagram. Requests that do not open (wrong relay key, tampered, stale,
    /// replayed) get no answer at all; valid requests with a bad token get a one-line reason.
    pub(super) fn on_join(&mut self, from: SocketAddr, d: &[u8], now: u64, wire: &mut impl Wire) {
        let opened = match open_request(&self.secret, d, now) {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(%from, "join request refused: {e}");
                self.global.drop(DropReason::Rejected);
                return;
            }
        };
        if !self.replay.check_and_insert(&opened.ephemeral_public, now) {
            tracing::warn!(%from, "replayed join request ignored");
            self.global.drop(DropReason::Rejected);
            return;
        }
        if !self.guesses.allowed(from.ip(), now) {
            tracing::warn!(%from, "join attempts from this address are rate limited after repeated bad tokens");
            self.global.drop(DropReason::RateLimited);
            return;
        }
        let response = match self.join(&opened, from, now) {
            Ok(r) => r,
            Err(reason) => JoinResponse::Rejected { reason },
        };
        wire.send(from, &opened.seal_response(&response));
    }

    fn join(
        &mut self,
        o: &OpenedRequest,
        from: SocketAddr,
        now: u64,
    ) -> Result<JoinResponse, String> {
        let req = &o.request;
        let token = self
            .state
            .tokens
            .iter()
            .find(|t| t.id == req.token_id)
            .cloned();
        let token = match token {
            Some(t)
                if unhex32(&t.secret_hash)
                    .is_some_and(|h| token::verify_secret(&req.token_secret, &h)) =>
            {
                t
            }
            _ => {
                let n = self.guesses.fail(from.ip(), now);
                tracing::warn!(%from, failures = n, token = %req.token_id, "join with an unknown token or wrong secret");
                return Err(
                    "the token is not valid for this relay; check that it was copied whole".into(),
                );
            }
        };
        if token.revoked {
            tracing::info!(%from, token = %token.id, "join refused: token revoked");
            return Err(token.unusable(now).unwrap_or_default().to_string());
        }
        // A node that joins again with its key keeps its name and prefix, and uses nothing up.
        if let Some(rec) = self
            .state
            .peers
            .iter()
            .find(|p| key::decode(&p.public_key).ok() == Some(o.node_public))
        {
            tracing::info!(name = %rec.name, "node rejoined");
            return Ok(self.accepted(rec));
        }
        if let Some(why) = token.unusable(now) {
            tracing::info!(%from, token = %token.id, "join refused: {why}");
            return Err(why.to_string());
        }
        let name = self.choose_name(
            req.name.as_deref(),
            req.hint.as_deref(),
            token.name_prefix.as_deref(),
        )?;
        let prefix = self.free_prefix().map_err(|e| e.to_string())?;
        let rec = PeerRecord {
            name: name.clone(),
            public_key: key::encode(&o.node_public),
            prefix,
            endpoint: None,
            created: now,
            token: Some(token.id.clone()),
            handshake_timestamp: None,
        };
        let mut used = token;
        used.uses_left -= 1;
        used.used_by.push(name.clone());
        match self.register(rec.clone(), Some(used)) {
            Ok(_) => {
                tracing::info!(%name, %prefix, %from, "node joined");
                Ok(self.accepted(&rec))
            }
            Err(e @ HubError::Store(_)) => {
                tracing::error!("join of {name} failed: {e}");
                Err("the relay could not save the registration; try again later".into())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn accepted(&self, rec: &PeerRecord) -> JoinResponse {
        let a = self.peer_added(rec);
        JoinResponse::Accepted {
            node_name: a.name,
            address: a.address,
            prefix: a.prefix,
            network: a.network,
            domain: a.domain,
            relay_address: a.relay_address,
            mtu: a.mtu,
        }
    }

    /// The name a joining node gets: the one asked for (refused if taken), or the hint (the
    /// host name) made into a valid label, with a number added until it is free.
    fn choose_name(
        &self,
        asked: Option<&str>,
        hint: Option<&str>,
        prefix: Option<&str>,
    ) -> Result<String, String> {
        let with_prefix = |n: &str| match prefix {
            Some(p) if !n.starts_with(p) => format!("{p}{n}"),
            _ => n.to_string(),
        };
        if let Some(n) = asked {
            let n = with_prefix(n);
            if !valid_name(&n) {
                return Err(HubError::InvalidName(n).to_string());
            }
            if self.table.by_name(&n).is_some() {
                return Err(format!("the name '{n}' is already used by another node; join with --name to choose another"));
            }
            if let Some(owner) = self.registry.name_owner(&n) {
                return Err(format!("the name '{n}' belongs to {owner}, and node and service names share one namespace; join with --name to choose another"));
            }
            return Ok(n);
        }
        let base = with_prefix(&sanitize(hint.unwrap_or("node")));
        let base = if valid_name(&base) {
            base
        } else {
            with_prefix("node")
        };
        // A service's name counts as taken, like another node's.
        let free =
            |n: &str| self.table.by_name(n).is_none() && self.registry.name_owner(n).is_none();
        if free(&base) {
            return Ok(base);
        }
        (2..10_000)
            .map(|i| format!("{}-{i}", base.chars().take(56).collect::<String>()))
            .find(|n| free(n))
            .ok_or_else(|| "no free node name is left for this host name; join with --name".into())
    }
}

/// Turns a host name into a DNS label: lower case, other characters to '-', at most 50 long.
fn sanitize(s: &str) -> String {
    let first = s.split('.').next().unwrap_or("");
    let mut out: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(50)
        .collect();
    while out.ends_with('-') {
        out.pop();
    }
    while out.starts_with('-') {
        out.remove(0);
    }
    if out.is_empty() {
        "node".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn host_names_become_labels() {
        assert_eq!(sanitize("Anna's MacBook.local"), "anna-s-macbook");
        assert_eq!(sanitize("---"), "node");
        assert_eq!(sanitize(""), "node");
        assert_eq!(sanitize(&"x".repeat(100)).len(), 50);
    }
}

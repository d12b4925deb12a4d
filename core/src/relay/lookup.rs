//! Remote names on demand: a node asks for a name the remote environment can resolve; the
//! driver resolves it off the hub's thread and the hub maps it to a remote-service address
//! for a while.

use super::persist::Held;
use super::{Event, Hub, Now};
use crate::names::registry::{valid_label, ServiceKey};
use crate::net::wire;
use crate::relay::peers::PeerId;
use crate::transport::control::{self, ControlReply, ErrorCode, CONTROL_PORT};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Lookups waiting for the driver at once; more are refused (the node retries later).
pub const MAX_PENDING_LOOKUPS: usize = 256;
/// A lookup the driver never answered is forgotten after this many seconds.
const LOOKUP_DEADLINE_SECS: u64 = 30;
/// The port of an on-demand service: none. Such a name stands for a host, and a connection to
/// any port reaches that port of the host; 0 says so in listings, SRV and the environment.
pub const ON_DEMAND_PORT: u16 = 0;

/// Why the driver could not resolve a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupFailure {
    /// The remote environment's resolver said the name does not exist.
    NotFound(String),
    /// The resolution failed or took too long: the name may exist.
    Unavailable(String),
}

/// Which names the relay looks up for nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnDemandConfig {
    /// Whether names are looked up at all.
    pub enabled: bool,
    /// Besides single labels, names under these suffixes (e.g. `svc.cluster.local`).
    pub suffixes: Vec<String>,
    /// How long a looked-up name stays mapped, in seconds.
    pub ttl_secs: u64,
}

impl Default for OnDemandConfig {
    fn default() -> Self {
        OnDemandConfig {
            enabled: true,
            suffixes: Vec::new(),
            ttl_secs: 3600,
        }
    }
}

impl OnDemandConfig {
    /// The registry name and the name to resolve for a node's question, if it is one the
    /// relay looks up: a single label maps to itself; `a.b.<suffix>` becomes `a-b` and
    /// resolves as written.
    pub fn names_for(&self, asked: &str) -> Option<(String, String)> {
        let q = asked.trim_end_matches('.').to_ascii_lowercase();
        if valid_label(&q) {
            return Some((q.clone(), q));
        }
        for suffix in &self.suffixes {
            let suffix = suffix.trim_matches('.').to_ascii_lowercase();
            let Some(rest) = q
                .strip_suffix(suffix.as_str())
                .and_then(|r| r.strip_suffix('.'))
            else {
                continue;
            };
            let labels: Vec<&str> = rest.split('.').collect();
            if !labels.iter().all(|l| valid_label(l)) {
                continue;
            }
            let name = labels.join("-");
            if valid_label(&name) && q.len() <= 200 {
                return Some((name, q.clone()));
            }
        }
        None
    }
}

/// A name for the driver to resolve; answer with [`Hub::lookup_done`] and the same `token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupRequest {
    /// Identifies the request.
    pub token: u64,
    /// The name to resolve in the remote environment.
    pub name: String,
}

#[derive(Clone, Debug)]
struct Pending {
    from: PeerId,
    id: u64,
    label: String,
    resolve: String,
    reply_to: (Ipv4Addr, u16),
    asked: u64,
}

/// The hub's lookups in progress.
#[derive(Default)]
pub(super) struct Lookups {
    cfg: OnDemandConfig,
    pending: HashMap<u64, Pending>,
    next_token: u64,
}

impl Hub {
    /// Sets which names are looked up on demand.
    pub fn set_on_demand(&mut self, cfg: OnDemandConfig) {
        self.lookups.cfg = cfg;
    }

    /// Handles a node's lookup; `None` when the answer comes later, from [`Hub::lookup_done`].
    pub(super) fn lookup(
        &mut self,
        from: PeerId,
        id: u64,
        asked: &str,
        reply_to: (Ipv4Addr, u16),
        now: u64,
    ) -> Option<(ControlReply, bool)> {
        let err = |message: String| Some((ControlReply::error(id, &message), false));
        if !self.lookups.cfg.enabled {
            return err("remote names on demand are turned off on this relay".into());
        }
        let Some((label, resolve)) = self.lookups.cfg.names_for(asked) else {
            return err(format!(
                "'{asked}' is not a name this relay looks up: use a single label{}",
                if self.lookups.cfg.suffixes.is_empty() {
                    String::new()
                } else {
                    format!(" or a name under {}", self.lookups.cfg.suffixes.join(", "))
                }
            ));
        };
        if let Some(inst) = self.registry.get(&ServiceKey::remote(&label)) {
            // Acknowledges a mapping that may not be durable yet.
            return Some((
                ControlReply::Ok {
                    id,
                    data: serde_json::to_value(inst).unwrap_or_default(),
                },
                true,
            ));
        }
        if self
            .lookups
            .pending
            .values()
            .any(|p| p.from == from && p.id == id)
        {
            // A retry of a lookup in progress.
            return None;
        }
        if self.lookups.pending.len() >= MAX_PENDING_LOOKUPS {
            return err("the relay is busy looking up other names; try again".into());
        }
        self.lookups.next_token = self.lookups.next_token.wrapping_add(1);
        let token = self.lookups.next_token;
        self.lookups.pending.insert(
            token,
            Pending {
                from,
                id,
                label,
                resolve: resolve.clone(),
                reply_to,
                asked: now,
            },
        );
        let request = Event::Lookup(LookupRequest {
            token,
            name: resolve,
        });
        if !self.events.push(request) {
            self.lookups.pending.remove(&token);
            return err("the relay is busy; try again".into());
        }
        None
    }

    /// The driver's answer to a [`LookupRequest`]: `Ok` if the name resolves in the remote
    /// environment, else why not. Maps the name and replies to the node (once the mapping is
    /// durable).
    pub fn lookup_done(&mut self, at: Now, token: u64, result: Result<(), LookupFailure>) {
        let now = at.unix;
        let Some(p) = self.lookups.pending.remove(&token) else {
            return;
        };
        let mut acknowledges = false;
        let reply = match result {
            Ok(()) => {
                let target = format!("{}:{ON_DEMAND_PORT}", p.resolve);
                let ttl = self.lookups.cfg.ttl_secs;
                match self.change_registry(|r| {
                    r.add_on_demand(&p.label, &target, ON_DEMAND_PORT, now, ttl)
                }) {
                    Ok(inst) => {
                        tracing::info!(name = %p.resolve, address = %inst.address, "remote name mapped on demand");
                        acknowledges = true;
                        ControlReply::Ok {
                            id: p.id,
                            data: serde_json::to_value(inst).unwrap_or_default(),
                        }
                    }
                    Err(e) => ControlReply::error(p.id, &e.to_string()),
                }
            }
            Err(LookupFailure::NotFound(why)) => ControlReply::error_with(
                p.id,
                ErrorCode::NotFound,
                &format!("the remote environment has no name '{}': {why}", p.resolve),
            ),
            Err(LookupFailure::Unavailable(why)) => ControlReply::error(
                p.id,
                &format!(
                    "the remote environment cannot resolve '{}' now: {why}",
                    p.resolve
                ),
            ),
        };
        let relay = self.cfg.plan.relay_addr();
        let pkt = wire::build_udp(
            relay,
            CONTROL_PORT,
            p.reply_to.0,
            p.reply_to.1,
            &control::encode(&reply),
        );
        if acknowledges {
            self.hold(Held::Control {
                to: p.from,
                id: p.id,
                reply_to: p.reply_to,
                packet: pkt,
                leave: false,
            });
        } else {
            self.send_to_peer(p.from, &pkt);
        }
        self.after_input(at);
    }

    /// Drops on-demand names whose time is up, and lookups the driver never answered.
    pub(super) fn expire_on_demand(&mut self, at: Now) {
        let now = at.unix;
        self.lookups
            .pending
            .retain(|_, p| now.saturating_sub(p.asked) < LOOKUP_DEADLINE_SECS);
        if self.registry.next_expiry().is_some_and(|t| t <= now) {
            match self.change_registry(|r| Ok(r.expire(now))) {
                Ok(n) if n > 0 => tracing::info!(count = n, "on-demand remote names expired"),
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot expire on-demand names: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_labels_and_suffixes() {
        let cfg = OnDemandConfig {
            suffixes: vec!["svc.cluster.local".into()],
            ..Default::default()
        };
        assert_eq!(
            cfg.names_for("Redis."),
            Some(("redis".into(), "redis".into()))
        );
        assert_eq!(
            cfg.names_for("redis.other.svc.cluster.local"),
            Some(("redis-other".into(), "redis.other.svc.cluster.local".into()))
        );
        assert_eq!(cfg.names_for("svc.cluster.local"), None);
        assert_eq!(cfg.names_for("a.example.com"), None);
        assert_eq!(cfg.names_for("under_score"), None);
        assert_eq!(cfg.names_for(""), None);
        assert_eq!(OnDemandConfig::default().names_for("a.b"), None);
    }
}

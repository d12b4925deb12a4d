//! Join requests: the cheap checks in front, then token check, name choice, prefix allocation,
//! registration, answer.

use super::flood::{JoinJob, JoinOpened, JoinOpener, JOB_QUEUE};
use super::persist::Held;
use super::state::{unhex32, PeerRecord};
use super::{valid_name, Event, Hub, HubError, Now};
use crate::identity::join::cookie::{Notice, Verdict};
use crate::identity::join::{JoinResponse, OpenedRequest};
use crate::identity::key;
use crate::identity::token;
use crate::net::counters::DropReason;
use std::net::SocketAddr;

impl Hub {
    /// Handles a join datagram with cheap checks only: `mac1`, the cookie when wanted, the
    /// lockout of proven addresses and the budget of opens. What passes becomes a [`JoinJob`]:
    /// opened at once, or handed to the join worker ([`Hub::use_join_worker`]).
    pub(super) fn on_join(&mut self, from: SocketAddr, d: &[u8], at: Now) {
        let now = at.unix;
        self.join_stats.requests += 1;
        let ip = from.ip();
        // An address with failures it did not prove must prove itself before it is opened, so
        // a forger's failures never count against the address it forged.
        let under_load = self.opens.under_load(now);
        self.join_stats.under_load = under_load;
        let need_cookie = under_load || self.suspects.failures(ip, now) > 0;
        let ephemeral = d
            .get(4..36)
            .and_then(|e| <[u8; 32]>::try_from(e).ok())
            .unwrap_or_default();
        let proven = match self
            .gate
            .check(from, d, now, need_cookie, &mut &mut *self.rng)
        {
            Verdict::Malformed => {
                self.join_stats.malformed += 1;
                self.global.drop(DropReason::InvalidDatagram);
                return;
            }
            Verdict::WrongKey => {
                self.join_stats.wrong_key += 1;
                self.global.drop(DropReason::Rejected);
                self.notice(from, Notice::WrongKey, &ephemeral, now);
                return;
            }
            Verdict::NeedCookie(reply) => {
                self.join_stats.cookies_sent += 1;
                self.global.drop(DropReason::RateLimited);
                if self.replies.allow(from, now) {
                    self.out.push(from, &reply);
                } else {
                    self.join_stats.replies_suppressed += 1;
                }
                return;
            }
            Verdict::Pass { proven } => proven,
        };
        if proven {
            self.join_stats.proven += 1;
            if !self.guesses.allowed(ip, now) {
                self.join_stats.locked_out += 1;
                self.global.drop(DropReason::RateLimited);
                self.notice(from, Notice::LockedOut, &ephemeral, now);
                return;
            }
        }
        if (self.join_worker && self.jobs_waiting >= JOB_QUEUE) || !self.opens.take(now) {
            self.join_stats.busy += 1;
            self.global.drop(DropReason::RateLimited);
            self.notice(from, Notice::Busy, &ephemeral, now);
            return;
        }
        let job = JoinJob {
            from,
            proven,
            datagram: d.to_vec(),
        };
        if self.join_worker {
            if self.events.push(Event::OpenJoin(job)) {
                self.jobs_waiting += 1;
            } else {
                self.join_stats.busy += 1;
                self.global.drop(DropReason::RateLimited);
                self.notice(from, Notice::Busy, &ephemeral, now);
            }
        } else {
            let done = JoinOpener::new(self.cfg.private_key).open(job, now);
            self.finish_join(done, at);
        }
    }

    /// Sends a notice within the reply budget.
    fn notice(&mut self, to: SocketAddr, n: Notice, ephemeral: &[u8; 32], now: u64) {
        if self.replies.allow(to, now) {
            self.join_stats.notices_sent += 1;
            self.out.push(to, &n.encode(ephemeral));
        } else {
            self.join_stats.replies_suppressed += 1;
        }
    }

    /// Counts a job the driver could not hand to the worker (its queue was full).
    pub fn join_job_dropped(&mut self) {
        self.jobs_waiting = self.jobs_waiting.saturating_sub(1);
        self.join_stats.busy += 1;
        self.global.drop(DropReason::RateLimited);
    }

    /// Finishes a request the worker opened ([`Event::OpenJoin`]): replay check, token check,
    /// registration, answer. Requests that do not open (tampered, stale, another key) get no
    /// answer; valid requests with a bad token get a one-line reason; an accepted join is
    /// answered once its registration is durable.
    pub fn handle_join_opened(&mut self, now: Now, done: JoinOpened) {
        self.jobs_waiting = self.jobs_waiting.saturating_sub(1);
        self.finish_join(done, now);
        self.after_input(now);
    }

    fn finish_join(&mut self, done: JoinOpened, at: Now) {
        let now = at.unix;
        let JoinOpened {
            from,
            proven,
            result,
        } = done;
        let opened = match result {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(%from, "join request refused: {e}");
                self.join_stats.not_authentic += 1;
                self.global.drop(DropReason::Rejected);
                self.count_failure(from, proven, now);
                return;
            }
        };
        self.join_stats.opened += 1;
        if !self.replay.check_and_insert(&opened.ephemeral_public, now) {
            tracing::debug!(%from, "replayed join request ignored");
            self.join_stats.replayed += 1;
            self.global.drop(DropReason::Rejected);
            return;
        }
        match self.join(&opened, from, proven, now) {
            Ok(r) => {
                self.join_stats.accepted += 1;
                let datagram = opened.seal_response(&r, &mut &mut *self.rng);
                self.hold(Held::Join {
                    to: from,
                    datagram,
                    opened: Box::new(opened),
                });
            }
            Err(reason) => {
                self.join_stats.refused += 1;
                let d =
                    opened.seal_response(&JoinResponse::Rejected { reason }, &mut &mut *self.rng);
                self.out.push(from, &d);
            }
        }
    }

    /// Counts a failed join against `from`: toward the lockout when the address is proven,
    /// otherwise only so that the address must prove itself next time.
    fn count_failure(&mut self, from: SocketAddr, proven: bool, now: u64) -> u32 {
        if proven {
            self.guesses.fail(from.ip(), now)
        } else {
            self.suspects.fail(from.ip(), now);
            0
        }
    }

    fn join(
        &mut self,
        o: &OpenedRequest,
        from: SocketAddr,
        proven: bool,
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
                // Counted, and summed up in the summary line: a line per attempt would let
                // anyone with the relay's key fill the log.
                let n = self.count_failure(from, proven, now);
                tracing::debug!(%from, proven, failures = n, token = %req.token_id, "join with an unknown token or wrong secret");
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

//! What keeps the join path cheap under a flood: a budget of public-key work per second, a
//! budget of unauthenticated replies, the jobs handed to the join worker, and the counters that
//! replace a log line per datagram.

use crate::identity::join::{open_request, JoinError, OpenedRequest};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use x25519_dalek::StaticSecret;

/// Requests opened (two X25519 operations each) per second at most; the rest get a `Busy`
/// notice. The work is on the join worker's thread, so the budget bounds what a flood of
/// requests that pass the cheap checks can take from the rest of the relay.
pub const OPEN_BUDGET_PER_SEC: u32 = 500;
/// Opens in a second from which the relay counts as under load and wants cookies from everyone.
pub const LOAD_THRESHOLD_PER_SEC: u32 = 32;
/// Requests waiting for the join worker at most.
pub const JOB_QUEUE: usize = 64;
/// Unauthenticated replies (cookie replies, notices) per source address and port per second.
/// Per port too: a forger who sends from a victim's address cannot spend the victim's budget
/// without knowing its port. A joining node sends at most a few requests a second.
pub const REPLIES_PER_SOURCE_PER_SEC: u32 = 16;
/// Unauthenticated replies per second in all.
pub const REPLIES_PER_SEC: u32 = 5000;
/// Source addresses the reply budget tracks at most.
pub const MAX_REPLY_TRACKED: usize = 4096;
/// Seconds between two summary lines of join drops in the log.
pub const SUMMARY_SECS: u64 = 10;

/// Counts public-key work per second and says when the relay is under load.
#[derive(Debug, Default)]
pub struct OpenBudget {
    second: u64,
    used: u32,
    last: u32,
}

impl OpenBudget {
    fn roll(&mut self, now: u64) {
        if now != self.second {
            self.last = if now == self.second + 1 { self.used } else { 0 };
            self.second = now;
            self.used = 0;
        }
    }

    /// Whether the relay wants cookies: many opens this second or the last.
    pub fn under_load(&mut self, now: u64) -> bool {
        self.roll(now);
        self.used.max(self.last) >= LOAD_THRESHOLD_PER_SEC
    }

    /// Takes one open from this second's budget; false when it is spent.
    pub fn take(&mut self, now: u64) -> bool {
        self.roll(now);
        if self.used >= OPEN_BUDGET_PER_SEC {
            return false;
        }
        self.used += 1;
        true
    }

    /// Opens taken in the current second.
    pub fn used(&mut self, now: u64) -> u32 {
        self.roll(now);
        self.used
    }
}

/// Limits unauthenticated replies per source and in all, with bounded memory.
#[derive(Debug, Default)]
pub struct ReplyBudget {
    per_ip: HashMap<SocketAddr, (u64, u32)>,
    global: (u64, u32),
}

impl ReplyBudget {
    /// Whether one more reply to `ip` may go out now (and counts it).
    pub fn allow(&mut self, ip: SocketAddr, now: u64) -> bool {
        if self.global.0 != now {
            self.global = (now, 0);
        }
        if self.global.1 >= REPLIES_PER_SEC {
            return false;
        }
        if self.per_ip.len() >= MAX_REPLY_TRACKED && !self.per_ip.contains_key(&ip) {
            self.per_ip.retain(|_, (s, _)| *s == now);
            if self.per_ip.len() >= MAX_REPLY_TRACKED {
                self.per_ip.clear();
            }
        }
        let e = self.per_ip.entry(ip).or_insert((now, 0));
        if e.0 != now {
            *e = (now, 0);
        }
        if e.1 >= REPLIES_PER_SOURCE_PER_SEC {
            return false;
        }
        e.1 += 1;
        self.global.1 += 1;
        true
    }

    /// Addresses tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.per_ip.len()
    }
}

/// A request that passed the gate, to be opened (the public-key work) by the join worker.
#[derive(Debug, Clone)]
pub struct JoinJob {
    /// Where it came from.
    pub from: SocketAddr,
    /// Whether the source proved its address with a cookie.
    pub proven: bool,
    /// The request datagram.
    pub datagram: Vec<u8>,
}

/// A job the worker did: hand it back with [`crate::relay::Hub::on_join_opened`].
#[derive(Debug)]
pub struct JoinOpened {
    /// Where the request came from.
    pub from: SocketAddr,
    /// Whether the source proved its address with a cookie.
    pub proven: bool,
    /// The opened request, or why it did not open.
    pub result: Result<OpenedRequest, JoinError>,
}

/// Opens join requests; a copy of the relay's key for the join worker's thread.
pub struct JoinOpener {
    secret: StaticSecret,
}

impl std::fmt::Debug for JoinOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinOpener")
    }
}

impl JoinOpener {
    /// An opener with the relay's private key.
    pub fn new(private_key: [u8; 32]) -> JoinOpener {
        JoinOpener {
            secret: StaticSecret::from(private_key),
        }
    }

    /// Does the public-key work of one job; `now` is unix seconds.
    pub fn open(&self, job: JoinJob, now: u64) -> JoinOpened {
        JoinOpened {
            from: job.from,
            proven: job.proven,
            result: open_request(&self.secret, &job.datagram, now),
        }
    }
}

/// Join counters: what `stats` and `/metrics` show, and what the summary line sums up.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct JoinStats {
    /// Join request datagrams received.
    pub requests: u64,
    /// Too short to carry the MACs.
    pub malformed: u64,
    /// `mac1` did not match this relay's key.
    pub wrong_key: u64,
    /// Answered with a cookie reply instead of being opened.
    pub cookies_sent: u64,
    /// Requests whose source proved its address with a cookie.
    pub proven: u64,
    /// Opened by the worker (public-key work done).
    pub opened: u64,
    /// Did not open: altered, made for another key, stale or a bad body.
    pub not_authentic: u64,
    /// Replays of a request already answered.
    pub replayed: u64,
    /// From an address locked out after repeated bad tokens (proven).
    pub locked_out: u64,
    /// Over the budget of opens per second or the worker's queue.
    pub busy: u64,
    /// Notices sent (wrong key, locked out, busy).
    pub notices_sent: u64,
    /// Cookie replies and notices not sent because of the reply budget.
    pub replies_suppressed: u64,
    /// Nodes registered or rejoined.
    pub accepted: u64,
    /// Refused with a reason (bad token, expired, name taken, ...).
    pub refused: u64,
    /// Whether the relay wants cookies from every joining node right now.
    pub under_load: bool,
    /// Requests opened in the current second (the budget is [`OPEN_BUDGET_PER_SEC`]).
    pub opens_this_sec: u32,
}

impl JoinStats {
    /// Everything dropped or refused, for the summary line.
    fn dropped(&self) -> u64 {
        self.malformed
            + self.wrong_key
            + self.cookies_sent
            + self.not_authentic
            + self.replayed
            + self.locked_out
            + self.busy
            + self.refused
    }
}

/// Writes one summary line per [`SUMMARY_SECS`] at most, when joins were dropped or refused.
#[derive(Debug, Default)]
pub struct Summary {
    last_at: u64,
    last: JoinStats,
}

impl Summary {
    /// Logs what changed since the last line, if anything was dropped and the interval passed.
    pub fn tick(&mut self, stats: &JoinStats, now: u64) {
        if now < self.last_at + SUMMARY_SECS || stats.dropped() == self.last.dropped() {
            return;
        }
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let (s, l) = (stats, &self.last);
        tracing::warn!(
            // Seconds this line covers (0 for the first line: since start).
            secs = if self.last_at == 0 {
                0
            } else {
                now.saturating_sub(self.last_at)
            },
            requests = d(s.requests, l.requests),
            wrong_key = d(s.wrong_key, l.wrong_key),
            malformed = d(s.malformed, l.malformed),
            cookies = d(s.cookies_sent, l.cookies_sent),
            not_authentic = d(s.not_authentic, l.not_authentic),
            replayed = d(s.replayed, l.replayed),
            rate_limited = d(s.locked_out, l.locked_out),
            busy = d(s.busy, l.busy),
            refused = d(s.refused, l.refused),
            accepted = d(s.accepted, l.accepted),
            under_load = s.under_load,
            "join requests dropped or refused since the last summary"
        );
        self.last = stats.clone();
        self.last_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_budget_and_load_in_simulated_time() {
        let mut b = OpenBudget::default();
        assert!(!b.under_load(100));
        for _ in 0..LOAD_THRESHOLD_PER_SEC {
            assert!(b.take(100));
        }
        assert!(b.under_load(100));
        // The next second still remembers the last one; two seconds later load is gone.
        assert!(b.under_load(101));
        assert!(!b.under_load(102));
        for _ in 0..OPEN_BUDGET_PER_SEC {
            assert!(b.take(103));
        }
        assert!(!b.take(103));
        assert_eq!(b.used(103), OPEN_BUDGET_PER_SEC);
        assert!(b.take(104));
        // A jump in time forgets the past second.
        assert!(!b.under_load(200));
    }

    #[test]
    fn reply_budget_per_address_and_in_all() {
        let mut r = ReplyBudget::default();
        let a: SocketAddr = "10.0.0.1:5".parse().unwrap();
        for _ in 0..REPLIES_PER_SOURCE_PER_SEC {
            assert!(r.allow(a, 5));
        }
        assert!(!r.allow(a, 5));
        assert!(r.allow("10.0.0.2:5".parse().unwrap(), 5));
        assert!(r.allow("10.0.0.1:6".parse().unwrap(), 5));
        assert!(r.allow(a, 6));
        let mut sent = 0;
        for i in 0..(REPLIES_PER_SEC * 2) {
            if r.allow(SocketAddr::from((std::net::Ipv4Addr::from(i), 1)), 7) {
                sent += 1;
            }
        }
        assert_eq!(sent, REPLIES_PER_SEC);
        assert!(r.len() <= MAX_REPLY_TRACKED);
    }

    #[test]
    fn summary_only_when_something_dropped() {
        let mut s = Summary::default();
        let mut st = JoinStats::default();
        s.tick(&st, 100);
        assert_eq!(s.last_at, 0);
        st.wrong_key = 1000;
        s.tick(&st, 100);
        assert_eq!(s.last_at, 100);
        st.wrong_key = 2000;
        s.tick(&st, 105);
        assert_eq!(s.last_at, 100, "at most one line per interval");
        s.tick(&st, 110);
        assert_eq!(s.last_at, 110);
    }
}

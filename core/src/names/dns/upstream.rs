//! Forwarding policy for names outside the domain: which upstream to ask when, how long to wait,
//! and what to answer when none answers.
//!
//! The node's DNS shell asks [`Upstreams::plan`] which servers to send a query to and at which
//! offsets (the next one is asked when the previous stays silent for [`STAGGER_MS`]), waits no
//! longer than [`FORWARD_DEADLINE_MS`] in all, and reports back with [`Upstreams::answered`] and
//! [`Upstreams::silent`]. A silent server is skipped for a while (doubling up to
//! [`DOWN_MAX_MS`]), so that while it stays dead queries are answered at once instead of each
//! waiting out the deadline. When nothing answers in time the answer is a stale copy of an earlier
//! reply (RFC 8767, TTL [`STALE_TTL`]) from [`StaleCache`], or SERVFAIL.
//!
//! Time is passed in as milliseconds since any fixed point; nothing here reads the clock.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RecordType;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// A forwarded query gets its answer (upstream, stale or SERVFAIL) within this many ms.
pub const FORWARD_DEADLINE_MS: u64 = 900;
/// The next upstream is asked when the previous one stayed silent this long.
pub const STAGGER_MS: u64 = 300;
/// How long a server that stayed silent is first skipped, in ms.
pub const DOWN_BASE_MS: u64 = 2_000;
/// The longest a silent server is skipped, in ms.
pub const DOWN_MAX_MS: u64 = 30_000;
/// TTL of records in a stale answer (RFC 8767 recommends 30 s).
pub const STALE_TTL: u32 = 30;
/// How long an answer may serve as a stale answer after it was received, in ms (one day; RFC 8767
/// suggests one to three).
pub const STALE_MAX_AGE_MS: u64 = 24 * 3600 * 1000;

#[derive(Clone, Debug)]
struct Health {
    addr: IpAddr,
    /// Silences in a row.
    failures: u32,
    /// Skipped until then.
    down_until: u64,
}

/// The upstream servers and how each has been doing.
#[derive(Clone, Debug)]
pub struct Upstreams {
    servers: Vec<Health>,
}

/// When to send a query to which server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Servers in the order to ask them, each with its offset in ms from the start.
    pub sends: Vec<(IpAddr, u64)>,
    /// Offset by which the query must be answered, whatever happens.
    pub deadline: u64,
}

impl Upstreams {
    /// The servers in the configured order (duplicates dropped).
    pub fn new(addrs: &[IpAddr]) -> Self {
        let mut servers: Vec<Health> = Vec::new();
        for a in addrs {
            if servers.iter().all(|s| s.addr != *a) {
                servers.push(Health {
                    addr: *a,
                    failures: 0,
                    down_until: 0,
                });
            }
        }
        Upstreams { servers }
    }

    /// Whether there is no server at all.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Whether every server is being skipped at `now` (or there are none).
    pub fn all_down(&self, now: u64) -> bool {
        self.servers.iter().all(|s| s.down_until > now)
    }

    /// The servers to ask for a query starting at `now`: those not being skipped, in the
    /// configured order, [`STAGGER_MS`] apart. Empty when every server is skipped: answer at once.
    pub fn plan(&self, now: u64) -> Plan {
        let sends = self
            .servers
            .iter()
            .filter(|s| s.down_until <= now)
            .enumerate()
            .filter_map(|(i, s)| {
                let at = STAGGER_MS.saturating_mul(u64::try_from(i).ok()?);
                (at < FORWARD_DEADLINE_MS).then_some((s.addr, at))
            })
            .collect();
        Plan {
            sends,
            deadline: FORWARD_DEADLINE_MS,
        }
    }

    /// `addr` answered (whatever the answer): it is alive. True if it had been silent before
    /// (worth a log line).
    pub fn answered(&mut self, addr: IpAddr) -> bool {
        match self.servers.iter_mut().find(|s| s.addr == addr) {
            Some(s) => {
                let was_down = s.failures > 0;
                s.failures = 0;
                s.down_until = 0;
                was_down
            }
            None => false,
        }
    }

    /// `addr` got a query and said nothing until the deadline: skip it for a while. True if
    /// it was answering before (worth a log line).
    pub fn silent(&mut self, addr: IpAddr, now: u64) -> bool {
        match self.servers.iter_mut().find(|s| s.addr == addr) {
            Some(s) => {
                s.failures = s.failures.saturating_add(1);
                let shift = (s.failures - 1).min(16);
                let pause = DOWN_BASE_MS.saturating_mul(1 << shift).min(DOWN_MAX_MS);
                s.down_until = now.saturating_add(pause);
                s.failures == 1
            }
            None => false,
        }
    }
}

/// Whether `reply` is one to give up on and ask the next server instead (SERVFAIL, REFUSED,
/// NOTIMP: what stub resolvers treat the same way). Unparsable replies count as such too.
pub fn try_next(reply: &[u8]) -> bool {
    // The rcode is the low four bits of the fourth byte.
    match reply.get(3) {
        Some(b) => matches!(b & 0x0f, 2 | 4 | 5),
        None => true,
    }
}

/// Whether `reply` answers `query`: a response with the same ID.
pub fn matches_query(reply: &[u8], query: &[u8]) -> bool {
    reply.len() >= 12 && query.len() >= 12 && reply[..2] == query[..2] && reply[2] & 0x80 != 0
}

/// The question of a query, as a cache key: name folded to lower case, type, class and whether
/// DNSSEC records were asked for.
fn question_key(query: &[u8]) -> Option<Vec<u8>> {
    let m = Message::from_vec(query).ok()?;
    if m.metadata.message_type != MessageType::Query || m.queries.len() != 1 {
        return None;
    }
    let q = m.queries.first()?;
    let mut key = q.name().to_ascii().to_ascii_lowercase().into_bytes();
    key.push(0);
    key.extend_from_slice(&u16::from(q.query_type()).to_be_bytes());
    key.extend_from_slice(&u16::from(q.query_class()).to_be_bytes());
    key.push(u8::from(
        m.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
    ));
    Some(key)
}

/// Earlier upstream answers kept to be served stale (RFC 8767) while every upstream is silent.
///
/// Bounded by a byte budget: the oldest entries go first.
#[derive(Debug)]
pub struct StaleCache {
    entries: HashMap<Vec<u8>, (Vec<u8>, u64)>,
    order: VecDeque<(Vec<u8>, u64)>,
    bytes: usize,
    budget: usize,
}

/// Bytes charged per entry beyond key and reply.
const STALE_OVERHEAD: usize = 96;

impl StaleCache {
    /// An empty cache holding at most about `budget` bytes.
    pub fn new(budget: usize) -> Self {
        StaleCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps `reply` (an upstream's answer to `query`, received at `now`) if it is a useful one:
    /// NOERROR or NXDOMAIN, not truncated.
    pub fn remember(&mut self, query: &[u8], reply: &[u8], now: u64) {
        let Some(flags) = reply.get(2..4) else {
            return;
        };
        let truncated = flags[0] & 0x02 != 0;
        let rcode = flags[1] & 0x0f;
        if truncated || !matches!(rcode, 0 | 3) || reply.len() > 4096 {
            return;
        }
        let Some(key) = question_key(query) else {
            return;
        };
        let cost = key.len() + reply.len() + STALE_OVERHEAD;
        if cost > self.budget {
            return;
        }
        if let Some((old, _)) = self.entries.remove(&key) {
            self.bytes = self
                .bytes
                .saturating_sub(key.len() + old.len() + STALE_OVERHEAD);
        }
        self.bytes += cost;
        self.entries.insert(key.clone(), (reply.to_vec(), now));
        self.order.push_back((key, now));
        while self.bytes > self.budget || self.order.len() > 2 * self.entries.len() + 16 {
            let Some((k, at)) = self.order.pop_front() else {
                break;
            };
            // Only the newest copy of a key counts; older order entries are leftovers.
            if self.entries.get(&k).is_some_and(|(_, t)| *t == at) {
                if let Some((r, _)) = self.entries.remove(&k) {
                    self.bytes = self
                        .bytes
                        .saturating_sub(k.len() + r.len() + STALE_OVERHEAD);
                }
            }
        }
    }

    /// A stale answer to `query` at `now`: the kept reply with the query's ID and every TTL set
    /// to [`STALE_TTL`]; `None` if there is none young enough.
    pub fn stale_reply(&self, query: &[u8], now: u64) -> Option<Vec<u8>> {
        let key = question_key(query)?;
        let (reply, at) = self.entries.get(&key)?;
        if now.saturating_sub(*at) > STALE_MAX_AGE_MS {
            return None;
        }
        let mut m = Message::from_vec(reply).ok()?;
        m.metadata.id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
        for r in m
            .answers
            .iter_mut()
            .chain(m.authorities.iter_mut())
            .chain(m.additionals.iter_mut())
        {
            if r.record_type() != RecordType::OPT {
                r.ttl = STALE_TTL;
            }
        }
        let bytes = m.to_vec().ok()?;
        // A reply that no longer fits what the client may receive is no answer.
        (bytes.len() <= reply.len().max(512)).then_some(bytes)
    }
}

/// The response code of a reply, for logs and tests.
pub fn rcode(reply: &[u8]) -> Option<ResponseCode> {
    let low = reply.get(3)? & 0x0f;
    Some(ResponseCode::from(0, low))
}

#[cfg(test)]
mod tests;

//! Persistence as an event the driver completes: versions, coalesced writes, and the replies
//! that wait for the disk.
//!
//! Every change bumps the version. A change someone is told about (a registration, a join, an
//! operator's command) is "model" and is written as soon as no write is in progress; a change
//! of endpoints or handshake timestamps alone is "live" and written at most once a second. At
//! most one [`Event::Persist`] is outstanding: changes made meanwhile are written together by
//! the next one, so a burst of registrations costs a few writes, not one each. The snapshot is
//! taken only then, on the hub's thread; serializing and writing are the driver's.
//!
//! A reply that acknowledges a change is held with the version current when it was made, and
//! sent once the driver reports that version (or a newer one) durable. A failed write answers
//! the held replies with an error instead (the change stays in memory, and the next write
//! carries it: a node that retries gets the same answer, since every request is idempotent),
//! and is tried again a second later.

use super::{Event, Hub, Now};
use crate::identity::join::{JoinResponse, OpenedRequest};
use crate::net::wire;
use crate::relay::peers::PeerId;
use crate::relay::state::RelayState;
use crate::relay::timers::Timer;
use crate::transport::control::{self, ControlReply, CONTROL_PORT};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Replies waiting for the disk at most; beyond it the oldest is dropped (the node retries).
pub const MAX_HELD: usize = 4096;
/// Least time between two writes of live changes alone (endpoints, handshake timestamps): a
/// busy relay accepts many handshakes, and each write is the whole state.
const LIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Wait after a failed write before the next try.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A reply that waits for its change to be durable.
pub(super) enum Held {
    /// A control reply to a peer (an inner packet, encrypted when it goes out).
    Control {
        to: PeerId,
        id: u64,
        reply_to: (Ipv4Addr, u16),
        packet: Vec<u8>,
        /// A leave: the peer's tunnel is torn down once the reply is out.
        leave: bool,
    },
    /// An accepted join: the sealed response, and the request to seal a refusal with.
    Join {
        to: SocketAddr,
        datagram: Vec<u8>,
        opened: Box<OpenedRequest>,
    },
}

/// Versions, the write in progress and the held replies.
#[derive(Default)]
pub(super) struct Persistence {
    /// Bumped by every change.
    version: u64,
    /// The newest version reported durable.
    persisted: u64,
    /// The version being written.
    in_flight: Option<u64>,
    /// The newest version with a model change (written as soon as possible).
    model: u64,
    /// The last write failed and its retry is not due yet.
    backoff: bool,
    held: VecDeque<(u64, Held)>,
    /// When the last write was asked for.
    last_write: Option<Instant>,
    /// Writes asked for, for tests and figures.
    pub(super) writes: u64,
}

impl Hub {
    /// Records a change that is acknowledged or matters across a restart (anything but
    /// endpoints and handshake timestamps): written as soon as the driver is free.
    pub(super) fn changed(&mut self) {
        self.persist.version += 1;
        self.persist.model = self.persist.version;
    }

    /// Records a change of endpoints or handshake timestamps: written within a second.
    pub(super) fn changed_live(&mut self) {
        self.persist.version += 1;
    }

    /// The current version of the state (it grows with every change).
    pub fn state_version(&self) -> u64 {
        self.persist.version
    }

    /// The newest version the driver reported durable.
    pub fn persisted_version(&self) -> u64 {
        self.persist.persisted
    }

    /// Writes asked for since start ([`Event::Persist`]).
    pub fn persist_requests(&self) -> u64 {
        self.persist.writes
    }

    /// The whole state as it stands: what [`Event::Persist`] carries.
    pub fn snapshot(&self) -> RelayState {
        let mut s = RelayState {
            peers: self.state.peers.clone(),
            tokens: self.state.tokens.clone(),
            registry: self.registry.snapshot(),
            callback_ports: self.state.callback_ports.clone(),
            intercepts: self.intercepts.list().to_vec(),
        };
        for rec in &mut s.peers {
            let Some(l) = self
                .table
                .by_name(&rec.name)
                .and_then(|e| self.live.get(&e.id))
            else {
                continue;
            };
            rec.endpoint = l.endpoint;
            rec.handshake_timestamp = l.newest_init;
        }
        s
    }

    /// The state to write at shutdown when something is not yet durable: its version and
    /// snapshot. Call after the write in progress (if any) finished.
    pub fn unsaved(&self) -> Option<(u64, RelayState)> {
        (self.persist.version > self.persist.persisted)
            .then(|| (self.persist.version, self.snapshot()))
    }

    /// Asks the driver for a write if one is due and none is in progress.
    pub(super) fn maybe_persist(&mut self, now: Now) {
        let p = &self.persist;
        if p.in_flight.is_some() || p.backoff || p.version <= p.persisted {
            return;
        }
        if p.model <= p.persisted {
            // Only live changes: at most one write a second.
            if let Some(due) = p.last_write.map(|t| t + LIVE_INTERVAL) {
                if now.instant < due {
                    self.timers.set(Timer::LivePersist, due);
                    return;
                }
            }
        }
        self.timers.stop(Timer::LivePersist);
        let version = self.persist.version;
        self.persist.in_flight = Some(version);
        self.persist.writes += 1;
        self.persist.last_write = Some(now.instant);
        let state = Box::new(self.snapshot());
        self.events.push(Event::Persist { version, state });
    }

    /// The driver wrote `version` durably: the replies that waited for it go out, and newer
    /// changes are asked for.
    pub fn persisted(&mut self, now: Now, version: u64) {
        if self.persist.in_flight.is_some_and(|v| v <= version) {
            self.persist.in_flight = None;
        }
        self.persist.persisted = self.persist.persisted.max(version);
        self.persist.backoff = false;
        self.timers.stop(Timer::PersistRetry);
        while self
            .persist
            .held
            .front()
            .is_some_and(|(v, _)| *v <= self.persist.persisted)
        {
            if let Some((_, h)) = self.persist.held.pop_front() {
                self.release(h, None);
            }
        }
        self.maybe_persist(now);
    }

    /// The driver could not write `version`: the replies that waited for it are answered with
    /// `error`, and the write is tried again in a second.
    pub fn persist_failed(&mut self, now: Now, version: u64, error: &str) {
        tracing::warn!(
            version,
            "cannot save the relay state: {error}; trying again in a second"
        );
        if self.persist.in_flight.is_some_and(|v| v <= version) {
            self.persist.in_flight = None;
        }
        while self
            .persist
            .held
            .front()
            .is_some_and(|(v, _)| *v <= version)
        {
            if let Some((_, h)) = self.persist.held.pop_front() {
                self.release(h, Some(error));
            }
        }
        self.persist.backoff = true;
        self.timers
            .set(Timer::PersistRetry, now.instant + RETRY_INTERVAL);
    }

    /// Clears the retry back-off when its timer fired.
    pub(super) fn retry_due(&mut self) {
        self.persist.backoff = false;
    }

    /// Sends `h` now if the state it acknowledges is durable, else keeps it until it is.
    pub(super) fn hold(&mut self, h: Held) {
        // The newest change that is acknowledged; endpoints and handshake timestamps are not,
        // so a reply does not wait for their (rate-limited) write.
        let version = self.persist.model;
        if version <= self.persist.persisted {
            self.release(h, None);
            return;
        }
        if self.persist.held.len() >= MAX_HELD {
            if let Some((_, old)) = self.persist.held.pop_front() {
                self.drop_held(old);
            }
        }
        self.persist.held.push_back((version, h));
    }

    /// Replies waiting for the disk.
    pub fn held_replies(&self) -> usize {
        self.persist.held.len()
    }

    /// Sends a held reply, or in its place an error when `failed` says why the write failed.
    fn release(&mut self, h: Held, failed: Option<&str>) {
        match h {
            Held::Control {
                to,
                id,
                reply_to,
                packet,
                leave,
            } => {
                match failed {
                    None => self.send_to_peer(to, &packet),
                    Some(e) => {
                        let reply = ControlReply::error(
                            id,
                            &format!("the relay could not save the change ({e}); try again"),
                        );
                        let p = wire::build_udp(
                            self.cfg.plan.relay_addr(),
                            CONTROL_PORT,
                            reply_to.0,
                            reply_to.1,
                            &control::encode(&reply),
                        );
                        self.send_to_peer(to, &p);
                    }
                }
                if leave {
                    self.finish_leave(to);
                }
            }
            Held::Join {
                to,
                datagram,
                opened,
            } => match failed {
                None => self.out.push(to, &datagram),
                Some(_) => {
                    let refusal = JoinResponse::Rejected {
                        reason: "the relay could not save the registration; try again later".into(),
                    };
                    let d = opened.seal_response(&refusal, &mut &mut *self.rng);
                    self.out.push(to, &d);
                }
            },
        }
    }

    /// Forgets a held reply (the queue is full); a leave is still carried out.
    fn drop_held(&mut self, h: Held) {
        if let Held::Control {
            to, leave: true, ..
        } = h
        {
            self.finish_leave(to);
        }
    }
}

//! Keeping a node's copy of the registry in step with the relay, one datagram at a time.
//!
//! The protocol, from the node's side ([`RegistryView`]):
//! 1. Ask for what [`RegistryView::next_pull`] says: `Pull::Changes(position)` normally,
//!    `Pull::Snapshot { after }` while a snapshot is being paged in. The relay answers with
//!    [`Registry::pull`], whose reply's JSON always fits in `max_bytes` (given at least
//!    [`MIN_PULL_BYTES`]).
//! 2. `Delta::Changes { from, to, .. }` holds exactly the changes `from+1 ..= to`, one per
//!    sequence number; the view applies those it has not seen (it needs `from <= seq`).
//! 3. When the node's position is unknown to the relay (another epoch, i.e. the relay restarted,
//!    or older than the retained log), the relay answers with the first snapshot page instead.
//!    Pages come in key order; the view collects them aside and asks for the page after the last
//!    key it got, until `more` is false, then swaps them in at the *first* page's `seq`.
//! 4. Pages taken while the registry changes may mix states; replaying the log from the first
//!    page's `seq` (the next `Pull::Changes`) fixes that, since upserts and removals are
//!    idempotent and the last one for a key wins.
//! 5. [`Applied::PullAgain`] means ask again at once; [`Applied::UpToDate`] means wait for the
//!    next poll (or the relay's notice of a new position). Replies that do not fit the view's
//!    state are refused with [`ViewError`] and change nothing (except that a page from a new
//!    epoch drops the pages collected so far), so duplicated or late datagrams are harmless.
//!
//! The relay side needs nothing per node: [`Registry::pull`] answers from the current state and
//! the bounded log alone.

use super::{Registry, ServiceInstance, ServiceKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;

/// The smallest `max_bytes` for which every reply is guaranteed to fit.
pub const MIN_PULL_BYTES: usize = 1100;

/// A point in the registry's history: the relay's epoch and a sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Differs between relay process starts.
    pub epoch: u64,
    /// Number of the last change applied.
    pub seq: u64,
}

/// One change to the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// The instance was added or changed.
    Upsert(ServiceInstance),
    /// The instance is gone.
    Remove(ServiceKey),
}

/// What a node asks the relay for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "pull", rename_all = "snake_case")]
pub enum Pull {
    /// The changes after this position.
    Changes(Position),
    /// The snapshot page after this key (`None`: the first page).
    Snapshot {
        /// The last key of the previous page.
        #[serde(default)]
        after: Option<ServiceKey>,
    },
}

/// The relay's answer to a [`Pull`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Delta {
    /// The changes with sequence numbers `from+1 ..= to`, in order.
    Changes {
        /// The relay's epoch.
        epoch: u64,
        /// The position they apply to.
        from: u64,
        /// The position after applying them.
        to: u64,
        /// The changes, one per sequence number.
        changes: Vec<Change>,
        /// Whether more changes follow `to`.
        more: bool,
    },
    /// One page of the full instance list, in key order.
    Snapshot {
        /// The relay's epoch.
        epoch: u64,
        /// The relay's sequence number when the page was taken.
        seq: u64,
        /// The key this page continues after (`None`: the first page).
        after: Option<ServiceKey>,
        /// The instances with keys after `after`.
        instances: Vec<ServiceInstance>,
        /// Whether more pages follow.
        more: bool,
    },
}

fn json_len<T: Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX / 4, |b| b.len())
}

/// Takes items while the envelope plus items (and commas) fit `budget`; at least one.
fn take_fitting<T: Serialize>(
    items: impl Iterator<Item = T>,
    envelope: usize,
    budget: usize,
) -> (Vec<T>, bool) {
    let mut out = Vec::new();
    let mut used = envelope;
    let mut items = items.peekable();
    while let Some(item) = items.peek() {
        let len = json_len(item) + usize::from(!out.is_empty());
        if !out.is_empty() && used + len > budget {
            return (out, true);
        }
        used += len;
        if let Some(item) = items.next() {
            out.push(item);
        }
    }
    (out, false)
}

impl Registry {
    /// Answers a node's [`Pull`] with a reply whose JSON fits `max_bytes`.
    pub fn pull(&self, pull: &Pull, max_bytes: usize) -> Delta {
        match pull {
            Pull::Changes(p) => self.changes_since(*p, max_bytes),
            Pull::Snapshot { after } => self.snapshot_page(after.as_ref(), max_bytes),
        }
    }

    /// The changes after `from`, or the first snapshot page if `from` is unknown or too old.
    pub fn changes_since(&self, from: Position, max_bytes: usize) -> Delta {
        let base = self.log_base();
        if from.epoch != self.epoch() || from.seq < base || from.seq > self.seq() {
            return self.snapshot_page(None, max_bytes);
        }
        let skip = usize::try_from(from.seq - base).unwrap_or(usize::MAX);
        let envelope = json_len(&Delta::Changes {
            epoch: self.epoch(),
            from: from.seq,
            to: self.seq(),
            changes: Vec::new(),
            more: false,
        });
        let pending = self.log_entries().iter().skip(skip).map(|(_, c)| c);
        let (changes, more) = take_fitting(pending, envelope, max_bytes);
        let to = from.seq + changes.len() as u64;
        Delta::Changes {
            epoch: self.epoch(),
            from: from.seq,
            to,
            changes: changes.into_iter().cloned().collect(),
            more,
        }
    }

    /// The snapshot page of the instances with keys after `after`.
    pub fn snapshot_page(&self, after: Option<&ServiceKey>, max_bytes: usize) -> Delta {
        let envelope = json_len(&Delta::Snapshot {
            epoch: self.epoch(),
            seq: self.seq(),
            after: after.cloned(),
            instances: Vec::new(),
            more: false,
        });
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let rest = self
            .instance_map()
            .range((lower, Bound::Unbounded))
            .map(|(_, i)| i);
        let (instances, more) = take_fitting(rest, envelope, max_bytes);
        Delta::Snapshot {
            epoch: self.epoch(),
            seq: self.seq(),
            after: after.cloned(),
            instances: instances.into_iter().cloned().collect(),
            more,
        }
    }
}

/// What applying a delta means for the next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The view is at the relay's position when it answered.
    UpToDate,
    /// More is waiting: pull again now.
    PullAgain,
}

/// Why a delta was not applied (the view is unchanged).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// The delta is from another relay epoch than the view or its pending snapshot.
    #[error("the reply is from relay epoch {got}, expected {want}")]
    OtherEpoch {
        /// The view's epoch.
        want: u64,
        /// The reply's.
        got: u64,
    },
    /// The changes start after the view's position: some are missing.
    #[error("the changes start at {from} but this view is at {seq}")]
    Gap {
        /// The view's sequence number.
        seq: u64,
        /// The delta's start.
        from: u64,
    },
    /// The delta is older than the view or does not continue the pending snapshot.
    #[error("the reply is stale")]
    Stale,
    /// The delta contradicts itself.
    #[error("the reply is malformed: {0}")]
    Malformed(&'static str),
}

#[derive(Clone, Debug)]
struct PendingSnapshot {
    epoch: u64,
    seq: u64,
    instances: BTreeMap<ServiceKey, ServiceInstance>,
    last: Option<ServiceKey>,
}

/// A node's copy of the registry; plain data that keeps answering while the relay is away.
#[derive(Clone, Debug, Default)]
pub struct RegistryView {
    position: Position,
    instances: BTreeMap<ServiceKey, ServiceInstance>,
    list: Vec<ServiceInstance>,
    pending: Option<PendingSnapshot>,
}

impl RegistryView {
    /// An empty view at position zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// A view from saved data (e.g. a cache written before a restart).
    pub fn from_parts(position: Position, instances: Vec<ServiceInstance>) -> Self {
        let mut v = RegistryView {
            position,
            instances: instances.into_iter().map(|i| (i.key(), i)).collect(),
            ..Self::default()
        };
        v.relist();
        v
    }

    /// The position the view is at.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The sequence number the view is at.
    pub fn seq(&self) -> u64 {
        self.position.seq
    }

    /// The known instances in key order.
    pub fn instances(&self) -> &[ServiceInstance] {
        &self.list
    }

    /// Whether a snapshot is being paged in.
    pub fn is_paging(&self) -> bool {
        self.pending.is_some()
    }

    /// What to ask the relay for next.
    pub fn next_pull(&self) -> Pull {
        match &self.pending {
            Some(p) => Pull::Snapshot {
                after: p.last.clone(),
            },
            None => Pull::Changes(self.position),
        }
    }

    fn relist(&mut self) {
        self.list = self.instances.values().cloned().collect();
    }

    /// Applies a delta from the relay.
    pub fn apply(&mut self, delta: Delta) -> Result<Applied, ViewError> {
        match delta {
            Delta::Changes {
                epoch,
                from,
                to,
                changes,
                more,
            } => self.apply_changes(epoch, from, to, changes, more),
            Delta::Snapshot {
                epoch,
                seq,
                after,
                instances,
                more,
            } => self.apply_page(epoch, seq, after, instances, more),
        }
    }

    fn apply_changes(
        &mut self,
        epoch: u64,
        from: u64,
        to: u64,
        changes: Vec<Change>,
        more: bool,
    ) -> Result<Applied, ViewError> {
        if self.pending.is_some() {
            return Err(ViewError::Stale);
        }
        if epoch != self.position.epoch {
            return Err(ViewError::OtherEpoch {
                want: self.position.epoch,
                got: epoch,
            });
        }
        if to < from || u64::try_from(changes.len()).ok() != Some(to - from) {
            return Err(ViewError::Malformed(
                "the number of changes does not match the range",
            ));
        }
        let seq = self.position.seq;
        if from > seq {
            return Err(ViewError::Gap { seq, from });
        }
        if to < seq || (to == seq && from < seq) {
            // Already applied (a late or duplicated reply).
            return Err(ViewError::Stale);
        }
        let skip = usize::try_from(seq - from).unwrap_or(usize::MAX);
        for change in changes.into_iter().skip(skip) {
            match change {
                Change::Upsert(i) => {
                    self.instances.insert(i.key(), i);
                }
                Change::Remove(k) => {
                    self.instances.remove(&k);
                }
            }
        }
        self.position.seq = to;
        self.relist();
        Ok(if more {
            Applied::PullAgain
        } else {
            Applied::UpToDate
        })
    }

    fn apply_page(
        &mut self,
        epoch: u64,
        seq: u64,
        after: Option<ServiceKey>,
        instances: Vec<ServiceInstance>,
        more: bool,
    ) -> Result<Applied, ViewError> {
        if more && instances.is_empty() {
            return Err(ViewError::Malformed("an empty page that claims more"));
        }
        let ordered = instances.windows(2).all(|w| w[0].key() < w[1].key())
            && match (&after, instances.first()) {
                (Some(a), Some(i)) => i.key() > *a,
                _ => true,
            };
        if !ordered {
            return Err(ViewError::Malformed("page keys are not in ascending order"));
        }
        let first = after.is_none();
        let mut pending = match (after, self.pending.take()) {
            (None, _) => PendingSnapshot {
                epoch,
                seq,
                instances: BTreeMap::new(),
                last: None,
            },
            (Some(after), Some(p)) if p.epoch == epoch && p.last.as_ref() == Some(&after) => p,
            (Some(_), Some(p)) if p.epoch != epoch => {
                // The relay restarted while paging: drop the pages, start over.
                return Err(ViewError::OtherEpoch {
                    want: p.epoch,
                    got: epoch,
                });
            }
            (Some(_), p) => {
                self.pending = p;
                return Err(ViewError::Stale);
            }
        };
        if let Some(last) = instances.last() {
            pending.last = Some(last.key());
        }
        pending
            .instances
            .extend(instances.into_iter().map(|i| (i.key(), i)));
        if more {
            self.pending = Some(pending);
            return Ok(Applied::PullAgain);
        }
        self.instances = pending.instances;
        self.position = Position {
            epoch: pending.epoch,
            seq: pending.seq,
        };
        self.relist();
        // A single page is consistent; several may mix states until the log is replayed.
        Ok(if first {
            Applied::UpToDate
        } else {
            Applied::PullAgain
        })
    }
}

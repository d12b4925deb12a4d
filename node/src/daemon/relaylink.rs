//! The node's end of the control channel to the relay, inside the tunnel, and the local copy
//! of the service registry that it keeps in sync.
//!
//! Requests (matched to replies by id, retried) go from `node-address:4100` to the relay's
//! `relay-address:4100` as packets handed straight to the tunnel, and the data path hands the
//! relay's replies and notices back here: no socket, and the TUN device never carries them, so
//! no other program on the node can speak as the node or read what the relay says (the local
//! way in is the daemon's control socket with its owner check). A notice or a timer makes the
//! node pull registry changes. The view stays as it is while the relay is away, so names keep
//! resolving.

use crate::daemon::tunnel::{Tunnel, CONTROL_QUEUE};
use overlay_core::names::registry::{Applied, Delta, RegistryView, ServiceInstance, ViewError};
use overlay_core::transport::control::{
    self, CallerNotice, ControlMessage, ControlReply, ControlRequest, ErrorCode, RegistryNotice,
    NOTICE_ID,
};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Notify};

/// Tries per request before giving up.
const TRIES: u32 = 4;
/// Wait per try.
const TRY_TIMEOUT: Duration = Duration::from_millis(700);
/// Pull even without a notice this often (a notice may be lost).
const POLL_EVERY: Duration = Duration::from_secs(10);
/// Requests in flight at most.
const MAX_PENDING: usize = 256;

/// How long a remote name the relay mapped on demand is served from here before the synced
/// registry has it.
const LOOKED_UP_KEEP: Duration = Duration::from_secs(60);
/// How long a name the remote environment does not have is not asked about again: the SOA
/// minimum of the node's zone, which is what clients may cache the NXDOMAIN for (RFC 2308).
const NEGATIVE_KEEP: Duration = Duration::from_secs(crate::daemon::dns::NEGATIVE_TTL as u64);
/// How long a lookup that failed (relay or remote resolver not answering) is answered SERVFAIL
/// without asking again (RFC 9520: at least 1 s).
const FAILURE_KEEP: Duration = Duration::from_secs(5);
/// Tries and the wait per try of an on-demand lookup: a DNS client waits at most their
/// product (1.2 s) before it gets SERVFAIL; the relay goes on resolving, and a name it finds
/// later comes with the registry.
const LOOKUP_TRIES: u32 = 4;
const LOOKUP_TRY_TIMEOUT: Duration = Duration::from_millis(300);

/// What an on-demand lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Looked {
    /// The relay mapped the name to this instance.
    Found(ServiceInstance),
    /// The remote environment said the name does not exist.
    NotFound,
    /// No answer in time, or the lookup failed: the name may exist.
    Unavailable,
}
/// Names remembered either way at most.
const MAX_REMEMBERED: usize = 1024;

/// The registry as this node sees it; cheap to read from the DNS path.
pub struct Directory {
    instances: RwLock<Arc<Vec<ServiceInstance>>>,
    /// Bumped after every change of what [`Directory::instances`] returns, so that caches of
    /// answers built from it (the DNS server's) know they are stale.
    generation: AtomicU64,
    /// When the first name in `looked_up` expires, in ms after `epoch`; `u64::MAX` when none.
    first_expiry: AtomicU64,
    epoch: Instant,
    /// The control channel, for lookups of remote names on demand.
    link: std::sync::OnceLock<std::sync::Weak<RelayLink>>,
    /// Names the relay mapped on demand, until the synced registry has them.
    looked_up: Mutex<HashMap<String, (ServiceInstance, Instant)>>,
    /// Names the relay could not find or could not look up, until when, and which it was.
    not_found: Mutex<HashMap<String, (Instant, Looked)>>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            instances: RwLock::default(),
            generation: AtomicU64::new(1),
            first_expiry: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            link: std::sync::OnceLock::new(),
            looked_up: Mutex::default(),
            not_found: Mutex::default(),
        }
    }
}

impl Directory {
    /// The current instances (with names just looked up on demand).
    pub fn instances(&self) -> Arc<Vec<ServiceInstance>> {
        let synced = self
            .instances
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut extra = self.looked_up.lock().unwrap_or_else(|e| e.into_inner());
        self.expire(&mut extra);
        let missing: Vec<ServiceInstance> = extra
            .values()
            .filter(|(i, _)| synced.iter().all(|s| s.key() != i.key()))
            .map(|(i, _)| i.clone())
            .collect();
        if missing.is_empty() {
            return synced;
        }
        let mut all = synced.as_ref().clone();
        all.extend(missing);
        Arc::new(all)
    }

    /// A number that grows whenever [`Directory::instances`] may answer differently: a registry
    /// change, a name looked up on demand, or one of those expiring. Read it before the instances.
    pub fn generation(&self) -> u64 {
        // Names looked up on demand leave by time, not by an event: notice it here. Without
        // any, this is two atomic loads (it runs once per batch of DNS queries).
        let first = self.first_expiry.load(Ordering::Acquire);
        if first != u64::MAX && first <= self.ms_now() {
            let mut extra = self.looked_up.lock().unwrap_or_else(|e| e.into_inner());
            self.expire(&mut extra);
        }
        self.generation.load(Ordering::Acquire)
    }

    fn ms_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Drops expired on-demand names; the caller holds the lock.
    fn expire(&self, extra: &mut HashMap<String, (ServiceInstance, Instant)>) {
        let before = extra.len();
        extra.retain(|_, (_, at)| at.elapsed() < LOOKED_UP_KEEP);
        if extra.len() != before {
            self.changed(extra);
        }
    }

    /// Records a change of the on-demand names (lock held) or of the synced list.
    fn changed(&self, extra: &HashMap<String, (ServiceInstance, Instant)>) {
        let first = extra
            .values()
            .map(|(_, at)| at.saturating_duration_since(self.epoch) + LOOKED_UP_KEEP)
            .min()
            .map_or(u64::MAX, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            });
        self.first_expiry.store(first, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Asks the relay to make `name` (a name the remote environment resolves) reachable, within
    /// about 1.2 s; misses and failures are remembered for a while (see [`NEGATIVE_KEEP`],
    /// [`FAILURE_KEEP`]).
    pub async fn lookup(&self, name: &str) -> Looked {
        {
            let mut nf = self.not_found.lock().unwrap_or_else(|e| e.into_inner());
            nf.retain(|_, (until, _)| *until > Instant::now());
            if let Some((_, kind)) = nf.get(name) {
                return kind.clone();
            }
        }
        let Some(link) = self.link.get().and_then(std::sync::Weak::upgrade) else {
            return Looked::Unavailable;
        };
        let request = ControlRequest::Lookup {
            name: name.to_string(),
        };
        let reply = link
            .exchange(request, LOOKUP_TRIES, LOOKUP_TRY_TIMEOUT)
            .await;
        let (kind, keep) = match reply {
            Ok(Some(ControlReply::Ok { data, .. })) => {
                match serde_json::from_value::<ServiceInstance>(data) {
                    Ok(inst) => {
                        let mut m = self.looked_up.lock().unwrap_or_else(|e| e.into_inner());
                        if m.len() >= MAX_REMEMBERED {
                            m.clear();
                        }
                        m.insert(name.to_string(), (inst.clone(), Instant::now()));
                        self.changed(&m);
                        drop(m);
                        link.poke();
                        return Looked::Found(inst);
                    }
                    Err(e) => {
                        tracing::debug!(name, "remote name lookup: unexpected answer: {e}");
                        (Looked::Unavailable, FAILURE_KEEP)
                    }
                }
            }
            Ok(Some(ControlReply::Error {
                code: Some(ErrorCode::NotFound),
                message,
                ..
            })) => {
                tracing::debug!(name, "remote name lookup: {message}");
                (Looked::NotFound, NEGATIVE_KEEP)
            }
            Ok(Some(ControlReply::Error { message, .. })) => {
                tracing::debug!(name, "remote name lookup failed: {message}");
                (Looked::Unavailable, FAILURE_KEEP)
            }
            Ok(None) => {
                tracing::debug!(name, "remote name lookup: no answer in time");
                (Looked::Unavailable, FAILURE_KEEP)
            }
            Err(e) => {
                tracing::debug!(name, "remote name lookup: {e}");
                (Looked::Unavailable, FAILURE_KEEP)
            }
        };
        let mut nf = self.not_found.lock().unwrap_or_else(|e| e.into_inner());
        if nf.len() >= MAX_REMEMBERED {
            nf.clear();
        }
        nf.insert(name.to_string(), (Instant::now() + keep, kind.clone()));
        kind
    }

    /// Replaces the synced list; a change (not every periodic pull) makes a new generation.
    fn set(&self, v: Vec<ServiceInstance>) {
        let mut cur = self.instances.write().unwrap_or_else(|e| e.into_inner());
        if **cur == v {
            return;
        }
        *cur = Arc::new(v);
        drop(cur);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// The control channel client.
pub struct RelayLink {
    tunnel: Arc<Tunnel>,
    node: Ipv4Addr,
    relay: Ipv4Addr,
    /// The relay's control datagrams from the data path, until `receive` takes them.
    inbox: Mutex<Option<mpsc::Receiver<Vec<u8>>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<ControlReply>>>,
    notified: Notify,
    /// The synced registry.
    pub directory: Arc<Directory>,
    /// The real callers of the relay's connections to this node's services.
    pub callers: Arc<crate::traffic::callers::Callers>,
}

impl RelayLink {
    /// The control client of the node at `node`, speaking through `tunnel` to the relay at
    /// `relay`; the tunnel hands it the relay's control datagrams from now on.
    pub fn new(tunnel: Arc<Tunnel>, node: Ipv4Addr, relay: Ipv4Addr) -> Arc<RelayLink> {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        tunnel.set_control_sink(tx);
        let link = Arc::new(RelayLink {
            tunnel,
            node,
            relay,
            inbox: Mutex::new(Some(rx)),
            pending: Mutex::new(HashMap::new()),
            notified: Notify::new(),
            directory: Arc::new(Directory::default()),
            callers: Arc::default(),
        });
        let _ = link.directory.link.set(Arc::downgrade(&link));
        link
    }

    /// Sends a request and waits for its reply, retrying; errors are one sentence.
    pub async fn request(&self, request: ControlRequest) -> anyhow::Result<serde_json::Value> {
        match self.exchange(request, TRIES, TRY_TIMEOUT).await? {
            Some(ControlReply::Ok { data, .. }) => Ok(data),
            Some(ControlReply::Error { message, .. }) => {
                Err(anyhow::anyhow!("the relay refused: {message}"))
            }
            None => Err(anyhow::anyhow!(
                "the relay did not answer through the tunnel; check `overlay status`"
            )),
        }
    }

    /// Sends a request up to `tries` times, `per_try` apart, and returns the relay's reply, or
    /// `None` if none came.
    pub async fn exchange(
        &self,
        request: ControlRequest,
        tries: u32,
        per_try: Duration,
    ) -> anyhow::Result<Option<ControlReply>> {
        let id = loop {
            let id = rand::random::<u64>();
            if id != NOTICE_ID {
                break id;
            }
        };
        let (tx, mut rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.len() >= MAX_PENDING {
                anyhow::bail!("too many requests to the relay are waiting; try again");
            }
            p.insert(id, tx);
        }
        let msg = control::request_packet(
            self.node,
            self.relay,
            &control::encode(&ControlMessage { id, request }),
        );
        let mut result = None;
        for _ in 0..tries {
            self.tunnel.send_control(&msg);
            match tokio::time::timeout(per_try, &mut rx).await {
                Ok(Ok(reply)) => {
                    result = Some(reply);
                    break;
                }
                Ok(Err(_)) => break,
                Err(_) => continue,
            }
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        Ok(result)
    }

    /// Receives replies and notices until the data path stops.
    pub async fn receive(self: Arc<Self>) -> anyhow::Result<()> {
        let mut inbox = self
            .inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| anyhow::anyhow!("the control channel is already being received"))?;
        while let Some(packet) = inbox.recv().await {
            // Only the relay's control port to ours: the data path passes all of the relay's UDP.
            let Some(payload) = control::reply_payload(&packet, self.node, self.relay) else {
                tracing::debug!("a datagram from the relay that is not a control reply");
                continue;
            };
            let Ok(reply) = control::parse_reply(payload) else {
                tracing::debug!("malformed control reply from the relay");
                continue;
            };
            if reply.id() == NOTICE_ID {
                if let ControlReply::Ok { data, .. } = &reply {
                    if serde_json::from_value::<RegistryNotice>(data.clone()).is_ok() {
                        self.notified.notify_one();
                    } else if let Ok(n) = serde_json::from_value::<CallerNotice>(data.clone()) {
                        self.callers.insert(n.caller);
                    }
                }
                continue;
            }
            if let Some(tx) = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&reply.id())
            {
                let _ = tx.send(reply);
            }
        }
        anyhow::bail!("the tunnel stopped passing the relay's control datagrams")
    }

    /// Keeps the directory in sync: pulls on every notice and every [`POLL_EVERY`].
    pub async fn sync(self: Arc<Self>) -> anyhow::Result<()> {
        let mut view = RegistryView::new();
        loop {
            if let Err(e) = self.pull_until_current(&mut view).await {
                tracing::debug!("registry sync: {e}");
            }
            let _ = tokio::time::timeout(POLL_EVERY, self.notified.notified()).await;
        }
    }

    async fn pull_until_current(&self, view: &mut RegistryView) -> anyhow::Result<()> {
        // Bounded: a registry of any size arrives in at most this many pages per round.
        for _ in 0..10_000 {
            let want = view.next_pull();
            let data = self.request(ControlRequest::Pull { want }).await?;
            let delta: Delta = serde_json::from_value(data)?;
            match view.apply(delta) {
                Ok(Applied::UpToDate) => {
                    self.directory.set(view.instances().to_vec());
                    return Ok(());
                }
                Ok(_) => {}
                Err(e @ (ViewError::OtherEpoch { .. } | ViewError::Gap { .. })) => {
                    // The relay restarted or our log position is gone: start over from a snapshot.
                    tracing::debug!("registry view reset: {e}");
                    *view = RegistryView::new();
                }
                Err(e) => {
                    // A late or duplicated reply: it changed nothing.
                    tracing::debug!("registry reply ignored: {e}");
                }
            }
        }
        Ok(())
    }

    /// Wakes the sync loop (after this node registered something).
    pub fn poke(&self) {
        self.notified.notify_one();
    }
}

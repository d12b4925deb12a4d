//! Runs the sans-IO hub on a UDP socket, in a thread of its own: the I/O shell around
//! `overlay_core::relay::Hub`.
//!
//! One thread owns the hub, so there are no locks on the data path. It receives a batch of
//! datagrams and hands each to the hub, drains what the hub wants sent into the batched sender
//! (see `overlay_sys::udp`) and sends it after the batch, performs the hub's requests in one place
//! ([`dispatch`]), and calls the hub's timeout when [`Hub::poll_timeout`] is due. The state is
//! written on a thread of its own ([`crate::serve::state::Persister`]): forwarding never waits for the
//! disk, and what the relay acknowledges (to nodes, and to the operator on the admin socket)
//! waits until the hub reports it durable.

use crate::gateway::{
    CallbackListeners, CallbackRoutes, GatewayHandle, GatewayOutput, Resolver, ToGateway,
};
use crate::serve::admin::AdminCall;
use crate::serve::state::{Persisted, Persister, StateDir};
use crate::serve::stream::{StreamEvent, StreamInbox, StreamStats};
use overlay_core::api::admin::{AdminRequest, PeerRemoved, TokenRevoked};
use overlay_core::api::{Answer, Request};
use overlay_core::net::spin::Spin;
use overlay_core::relay::{Event, Hub, JoinJob, JoinOpened, Now, JOB_QUEUE};
use overlay_core::transport::stream::addr::{stream_addr, stream_id};
use overlay_sys::udp::{self, Udp};
use overlay_sys::wake::Wake;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Longest sleep while idle: the catalog is checked and admin requests are served at least
/// this often (the hub's own timers are usually due sooner).
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Receive batches (`recvmmsg` calls of up to 32 buffers) per wake-up before the gateway's
/// output gets its turn: at least 256 datagrams, as many as one `recvfrom` each used to take.
const RECV_BATCHES: usize = 8;
/// Longest the thread keeps polling after traffic instead of sleeping, while that pays (see
/// `overlay_core::net::spin`): it catches the answer to a forwarded request without a wake-up.
/// With the nodes polling too, ping through the relay went from ~270 to ~60 µs median here.
const SPIN: Duration = Duration::from_micros(500);
/// Gateway packets delivered per wake-up before the socket gets its turn.
const GATEWAY_BATCH: usize = 1024;
/// Stream datagrams handed to the hub per wake-up before the socket gets its turn.
const STREAM_BATCH: usize = 1024;
/// Operator requests waiting for the disk at most; more are answered with an error.
const MAX_HELD_ADMIN: usize = 256;

/// What the hub thread drives besides the UDP socket.
pub struct Plumbing {
    /// Wakes the hub thread (gateway output, lookup results, the persister).
    pub wake: Arc<Wake>,
    /// The gateway, if any.
    pub gateway: Option<(GatewayHandle, GatewayOutput)>,
    /// Name lookups for remote names on demand, and their results.
    pub resolver: Option<(Resolver, Receiver<crate::gateway::resolve::LookupResult>)>,
    /// Callback listeners to keep up to date.
    pub callbacks: Option<CallbackListeners>,
    /// The fronts to keep up to date.
    pub fronts: Option<crate::front::Fronts>,
    /// Set (then `wake`) to stop: the thread writes what is unsaved and returns.
    pub stop: Arc<AtomicBool>,
    /// The streams of `--tcp-listen`, if it is set.
    pub streams: Option<StreamInbox>,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The time to hand the hub.
pub fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix: unix_now(),
    }
}

/// Where the hub's datagrams go: the UDP socket, or the writer of a stream.
struct Output<'a> {
    udp: udp::Sender<'a>,
    /// The writers of the open streams (`--tcp-listen`), by stream number.
    streams: HashMap<u64, tokio::sync::mpsc::Sender<Vec<u8>>>,
    stream_stats: Option<Arc<StreamStats>>,
}

impl Output<'_> {
    /// Moves everything the hub wants sent into the batched sender (or the streams' queues).
    fn take(&mut self, hub: &mut Hub) {
        while let Some(t) = hub.poll_transmit() {
            let Some(id) = stream_id(t.destination) else {
                self.udp.send(t.destination, t.contents);
                continue;
            };
            // A peer on a stream: its writer task frames and sends; a full queue drops, like UDP.
            let sent = self
                .streams
                .get(&id)
                .is_some_and(|tx| tx.try_send(t.contents.to_vec()).is_ok());
            if !sent {
                if let Some(s) = &self.stream_stats {
                    s.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Sends what is queued and counts what could not be sent.
    fn flush(&mut self, hub: &mut Hub) {
        self.take(hub);
        self.udp.flush();
        let unsent = self.udp.take_unsent();
        if unsent > 0 {
            tracing::debug!(
                unsent,
                "udp send: datagrams dropped (socket buffer full or send error)"
            );
            hub.count_send_failures(unsent);
        }
    }
}

/// Everything the hub's requests go to.
struct Dispatch<'a> {
    gateway: Option<&'a GatewayHandle>,
    resolver: Option<&'a Resolver>,
    callbacks: Option<&'a CallbackListeners>,
    fronts: Option<&'a crate::front::Fronts>,
    jobs: SyncSender<JoinJob>,
    persister: &'a Persister,
}

/// Performs one request of the hub: the only place where its events turn into I/O.
fn dispatch(hub: &mut Hub, e: Event, to: &Dispatch<'_>) {
    match e {
        Event::Gateway(p) => match to.gateway {
            Some(g) => g.send_packet(ToGateway {
                node: p.node.into(),
                target: p.target.map(Into::into),
                packet: p.packet,
            }),
            None => {
                tracing::debug!(node = %p.node, target = ?p.target, "no gateway: packet dropped")
            }
        },
        Event::Lookup(request) => {
            if let Some(r) = to.resolver {
                r.resolve(request);
            }
        }
        // Public-key work goes to the join worker; the forwarding path never waits for it.
        Event::OpenJoin(job) => {
            if to.jobs.try_send(job).is_err() {
                hub.join_job_dropped();
            }
        }
        Event::Persist { version, state } => {
            if let Err(e) = to.persister.write(version, state) {
                hub.persist_failed(now(), version, &e);
            }
        }
        Event::RegistryChanged => {
            if let Some(cb) = to.callbacks {
                cb.publish(CallbackRoutes::new(hub.callback_routes()));
            }
        }
        Event::FrontsChanged => {
            if let Some(f) = to.fronts {
                f.publish(hub.front_routes());
            }
        }
    }
}

/// Performs every request the hub has.
fn dispatch_all(hub: &mut Hub, to: &Dispatch<'_>) {
    while let Some(e) = hub.poll_event() {
        dispatch(hub, e, to);
    }
}

/// Watches the catalog file and hands every good version to the hub.
struct CatalogWatch {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
    next_check: Instant,
}

impl CatalogWatch {
    /// Re-reads the file when its modification time or size changed; a broken file keeps the
    /// last good catalog and says which line is wrong.
    fn poll(&mut self, hub: &mut Hub) {
        if Instant::now() < self.next_check {
            return;
        }
        self.next_check = Instant::now() + Duration::from_secs(1);
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()));
        if stamp == self.seen {
            return;
        }
        self.seen = stamp;
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), "cannot read the catalog ({e}); keeping the last good one");
                return;
            }
        };
        match overlay_core::relay::catalog::parse_catalog(&text) {
            Ok(c) => {
                match hub.set_catalog(c.entries, now()) {
                    Ok(u) => {
                        tracing::info!(file = %self.path.display(), changes = u.changes, fronts = c.fronts.len(), "catalog loaded")
                    }
                    Err(e) => tracing::warn!("catalog not applied: {e}"),
                }
                hub.set_fronts(c.fronts, now());
            }
            Err(e) => tracing::warn!(
                file = %self.path.display(),
                "catalog {e}; keeping the last good catalog"
            ),
        }
    }
}

/// Operator answers that acknowledge a change, waiting until it is durable.
#[derive(Default)]
struct HeldAdmin(Vec<(u64, oneshot::Sender<Answer>, Answer)>);

impl HeldAdmin {
    /// Answers the requests whose change is durable now.
    fn release(&mut self, persisted: u64) {
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|(v, _, _)| *v <= persisted);
        self.0 = wait;
        for (_, reply, response) in ready {
            let _ = reply.send(response);
        }
    }

    /// Answers the requests that waited for `version` with the write's error.
    fn fail(&mut self, version: u64, error: &str) {
        let (failed, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|(v, _, _)| *v <= version);
        self.0 = wait;
        for (_, reply, _) in failed {
            let _ = reply.send(Answer::Error {
                message: format!(
                    "the change is made but could not be saved ({error}); the relay tries again every second"
                ),
            });
        }
    }
}

/// Sleeps until the socket or the wake-up is readable, or `timeout` passes.
fn wait(sock: &Udp, wake: &Wake, timeout: Duration) {
    let mut fds = [
        libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: fds is a valid array of two pollfd.
    unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
}

/// Runs the hub until the socket fails or `plumbing.stop` is set; the state goes to `dir`.
pub fn run(
    mut hub: Hub,
    dir: StateDir,
    sock: UdpSocket,
    admin: Receiver<AdminCall>,
    catalog: Option<PathBuf>,
    plumbing: Plumbing,
) -> anyhow::Result<()> {
    let mut catalog = catalog.map(|path| CatalogWatch {
        path,
        seen: None,
        next_check: Instant::now(),
    });
    let gw_out = plumbing.gateway.as_ref().map(|g| &g.1);
    let lookups = plumbing.resolver.as_ref().map(|r| &r.1);
    let wake = plumbing.wake.clone();
    let sock = Udp::from_std(sock).map_err(|e| anyhow::anyhow!("udp socket setup failed: {e}"))?;
    let mut storage = vec![0u8; udp::RECV_STORAGE];
    let mut rx = udp::Receiver::new(&mut storage);
    let out = &mut Output {
        udp: udp::Sender::new(&sock),
        streams: HashMap::new(),
        stream_stats: plumbing.streams.as_ref().map(|s| s.stats.clone()),
    };
    let (jobs, done) = start_join_worker(&mut hub, wake.clone())?;
    let (persister, persisted) = Persister::start(dir.clone(), wake.clone())?;
    let to = &Dispatch {
        gateway: plumbing.gateway.as_ref().map(|g| &g.0),
        resolver: plumbing.resolver.as_ref().map(|r| &r.0),
        callbacks: plumbing.callbacks.as_ref(),
        fronts: plumbing.fronts.as_ref(),
        jobs,
        persister: &persister,
    };
    let mut held_admin = HeldAdmin::default();
    // The callback routes of the state as loaded.
    if let Some(cb) = to.callbacks {
        cb.publish(CallbackRoutes::new(hub.callback_routes()));
    }
    hub.greet();
    dispatch_all(&mut hub, to);
    out.flush(&mut hub);
    let mut spin = Spin::new(SPIN);
    let mut moved = 0;
    loop {
        let t = Instant::now();
        if moved > 0 {
            spin.traffic(t);
        } else if spin.keep_polling(t) {
            std::thread::yield_now();
        } else {
            let due = hub.poll_timeout().unwrap_or(t + MAX_WAIT).min(t + MAX_WAIT);
            wait(&sock, &wake, due.saturating_duration_since(t));
        }
        moved = 0;
        wake.reset();
        if plumbing.stop.load(Ordering::Acquire) {
            return shutdown(hub, dir, persister, persisted, held_admin);
        }
        for _ in 0..RECV_BATCHES {
            let at = now();
            let r = rx.recv(&sock, |from, d| {
                hub.handle_datagram(at, from, d);
                // Staged in the sender right away: the hub's queue stays short.
                out.take(&mut hub);
                // Packets for the gateway leave at once too, so that the gateway thread works
                // on them while the hub reads the rest of the batch, as the hub's direct call
                // did before they became events: held to the end of a batch they cost the
                // gateway's TCP flows throughput (bench part gateway, docs/benchmarks.md).
                dispatch_all(&mut hub, to);
            });
            match r {
                Ok(n) => moved += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    break
                }
                // ICMP errors for earlier sends surface here; they are not fatal.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(anyhow::anyhow!("udp receive failed: {e}")),
            }
            // The answers to this batch go out together, before the next batch is read.
            out.flush(&mut hub);
            dispatch_all(&mut hub, to);
        }
        if let Some(inbox) = &plumbing.streams {
            moved += from_streams(inbox, &mut hub, out, &wake);
            out.flush(&mut hub);
            dispatch_all(&mut hub, to);
        }
        while let Ok(p) = persisted.try_recv() {
            match p {
                Persisted::Done(version) => {
                    hub.persisted(now(), version);
                    held_admin.release(hub.persisted_version());
                }
                Persisted::Failed(version, e) => {
                    hub.persist_failed(now(), version, &e);
                    held_admin.fail(version, &e);
                }
            }
            moved += 1;
        }
        while let Ok(d) = done.try_recv() {
            hub.handle_join_opened(now(), d);
            moved += 1;
        }
        if let Some(gw) = gw_out {
            let mut n = 0;
            while n < GATEWAY_BATCH {
                let Ok(p) = gw.packets.try_recv() else { break };
                hub.handle_gateway_packet(&p);
                out.take(&mut hub);
                n += 1;
            }
            moved += n;
            // Possibly more waiting: come back without sleeping.
            if n == GATEWAY_BATCH {
                wake.wake();
            }
        }
        if let Some(rx) = lookups {
            while let Ok((token, result)) = rx.try_recv() {
                hub.lookup_done(now(), token, result);
            }
        }
        if hub.poll_timeout().is_some_and(|at| Instant::now() >= at) {
            hub.handle_timeout(now());
        }
        if let Some(c) = catalog.as_mut() {
            c.poll(&mut hub);
        }
        while let Ok((req, reply)) = admin.try_recv() {
            answer(&mut hub, req, reply, to.gateway, &mut held_admin);
        }
        dispatch_all(&mut hub, to);
        // Handshake replies, control answers and gateway output go out before the next sleep.
        out.flush(&mut hub);
    }
}

/// Waits for the write in progress, then writes what is still unsaved (the newest handshake
/// timestamps and endpoints are written at most once a second), and answers what waited.
fn shutdown(
    mut hub: Hub,
    dir: StateDir,
    persister: Persister,
    persisted: Receiver<Persisted>,
    mut held_admin: HeldAdmin,
) -> anyhow::Result<()> {
    persister.finish();
    while let Ok(p) = persisted.try_recv() {
        match p {
            Persisted::Done(version) => hub.persisted(now(), version),
            Persisted::Failed(version, e) => hub.persist_failed(now(), version, &e),
        }
    }
    if let Some((version, state)) = hub.unsaved() {
        match dir.save(state) {
            Ok(()) => hub.persisted(now(), version),
            Err(e) => tracing::warn!("cannot save the relay state at shutdown: {e}"),
        }
    }
    held_admin.release(hub.persisted_version());
    Ok(())
}

/// Takes the streams' opens, closes and datagrams; returns the datagrams handled.
fn from_streams(inbox: &StreamInbox, hub: &mut Hub, out: &mut Output<'_>, wake: &Wake) -> usize {
    let events = |out: &mut Output<'_>| {
        while let Ok(ev) = inbox.events.try_recv() {
            match ev {
                StreamEvent::Open { id, out: tx } => {
                    out.streams.insert(id, tx);
                }
                StreamEvent::Closed { id } => {
                    out.streams.remove(&id);
                }
            }
        }
    };
    events(out);
    let mut n = 0;
    while n < STREAM_BATCH {
        let Ok((id, d)) = inbox.datagrams.try_recv() else {
            return n;
        };
        if !out.streams.contains_key(&id) {
            // Its open may have been queued after the events were read: the answer needs it.
            events(out);
        }
        hub.handle_datagram(now(), stream_addr(id), &d);
        out.take(hub);
        n += 1;
    }
    // Possibly more waiting: come back without sleeping.
    wake.wake();
    n
}

/// Starts the thread that opens join requests (two X25519 operations each) off the hub
/// thread; it wakes the hub when a result is ready. Its queue holds [`JOB_QUEUE`] requests.
fn start_join_worker(
    hub: &mut Hub,
    wake: Arc<Wake>,
) -> anyhow::Result<(SyncSender<JoinJob>, Receiver<JoinOpened>)> {
    hub.use_join_worker();
    let opener = hub.join_opener();
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<JoinJob>(JOB_QUEUE);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("join-worker".into())
        .spawn(move || {
            for job in job_rx {
                if done_tx.send(opener.open(job, unix_now())).is_err() {
                    break;
                }
                wake.wake();
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the join worker thread: {e}"))?;
    Ok((job_tx, done_rx))
}

/// Serves one operator request; an answer that acknowledges a change waits for the disk.
fn answer(
    hub: &mut Hub,
    req: AdminRequest,
    reply: oneshot::Sender<Answer>,
    gw: Option<&GatewayHandle>,
    held: &mut HeldAdmin,
) {
    let at = now();
    let changes = matches!(
        req,
        AdminRequest::PeerAdd(_)
            | AdminRequest::PeerRemove(_)
            | AdminRequest::TokenCreate(_)
            | AdminRequest::TokenRevoke(_)
    );
    let answer = match req {
        AdminRequest::PeerAdd(r) => r.answer(hub.peer_add(&r.name, &r.public_key, at)),
        AdminRequest::PeerRemove(r) => {
            let removed = hub.peer_remove(&r.name, at).map(|()| PeerRemoved {
                removed: r.name.clone(),
            });
            r.answer(removed)
        }
        AdminRequest::Nodes(r) => r.ok(hub.nodes()),
        AdminRequest::Stats(r) => {
            let mut stats = hub.stats(at.unix);
            stats.gateway_buffers = gw.map(|g| g.stats.buffers());
            r.ok(stats)
        }
        AdminRequest::TokenCreate(r) => {
            r.answer(hub.token_create(r.uses, r.ttl_secs, r.name_prefix.clone(), at))
        }
        AdminRequest::TokenList(r) => r.ok(hub.tokens().to_vec()),
        AdminRequest::Services(r) => r.ok(hub.services()),
        AdminRequest::TokenRevoke(r) => {
            let revoked = hub.token_revoke(&r.id, at).map(|()| TokenRevoked {
                revoked: r.id.clone(),
            });
            r.answer(revoked)
        }
    };
    let version = hub.state_version();
    let ok = matches!(answer, Answer::Ok { .. });
    if !changes || !ok || version <= hub.persisted_version() {
        let _ = reply.send(answer);
    } else if held.0.len() >= MAX_HELD_ADMIN {
        let _ = reply.send(Answer::Error {
            message: "the change is made but the relay is still saving earlier ones; check with the listing".into(),
        });
    } else {
        held.0.push((version, reply, answer));
    }
}

//! Runs the sans-IO hub on a UDP socket, in a thread of its own.
//!
//! One thread owns the hub, so there are no locks on the data path: it receives a batch of
//! datagrams, lets the hub decide on each, and sends what the hub produced as a batch (see
//! [`crate::udp`]), without blocking. Ticks happen on the poll timeout; admin requests arrive
//! over a channel and are served between batches.

use crate::gateway::{
    CallbackListeners, CallbackRoutes, GatewayHandle, GatewayOutput, Resolver, ToGateway,
};
use crate::serve::admin::AdminCall;
use crate::serve::state::StateDir;
use crate::serve::stream::{StreamEvent, StreamInbox, StreamStats};
use overlay_core::api::admin::{AdminRequest, PeerRemoved, TokenRevoked};
use overlay_core::api::{Answer, Request};
use overlay_core::relay::{Hub, JoinJob, JoinOpened, LookupRequest, Wire, JOB_QUEUE};
use overlay_core::spin::Spin;
use overlay_core::stream::addr::{stream_addr, stream_id};
use overlay_sys::udp::{self, Udp};
use overlay_sys::wake::Wake;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often timers run; also the longest an admin request waits while the port is idle.
const TICK: Duration = Duration::from_millis(100);
/// Receive batches (`recvmmsg` calls of up to 32 buffers) per wake-up before the gateway's
/// output gets its turn: at least 256 datagrams, as many as one `recvfrom` each used to take.
const RECV_BATCHES: usize = 8;
/// Longest the thread keeps polling after traffic instead of sleeping, while that pays (see
/// `overlay_core::spin`): it catches the answer to a forwarded request without a wake-up.
/// With the nodes polling too, ping through the relay went from ~270 to ~60 µs median here.
const SPIN: Duration = Duration::from_micros(500);
/// Gateway packets delivered per wake-up before the socket gets its turn.
const GATEWAY_BATCH: usize = 1024;

/// Stream datagrams handed to the hub per wake-up before the socket gets its turn.
const STREAM_BATCH: usize = 1024;

struct UdpWire<'a> {
    out: udp::Sender<'a>,
    gateway: Option<&'a GatewayHandle>,
    resolver: Option<&'a Resolver>,
    /// The writers of the open streams (`--tcp-listen`), by stream number.
    streams: HashMap<u64, tokio::sync::mpsc::Sender<Vec<u8>>>,
    stream_stats: Option<Arc<StreamStats>>,
}

impl Wire for UdpWire<'_> {
    fn send(&mut self, to: SocketAddr, d: &[u8]) {
        let Some(id) = stream_id(to) else {
            self.out.send(to, d);
            return;
        };
        // A peer on a stream: its writer task frames and sends; a full queue drops, like UDP.
        let sent = self
            .streams
            .get(&id)
            .is_some_and(|tx| tx.try_send(d.to_vec()).is_ok());
        if !sent {
            if let Some(s) = &self.stream_stats {
                s.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn send_to_gateway(&mut self, node: &str, target: Option<&str>, packet: &[u8]) {
        match self.gateway {
            Some(g) => g.send_packet(ToGateway {
                node: node.into(),
                target: target.map(Into::into),
                packet: packet.to_vec(),
            }),
            None => tracing::debug!(node, ?target, "no gateway: packet dropped"),
        }
    }

    fn resolve(&mut self, request: LookupRequest) {
        if let Some(r) = self.resolver {
            r.resolve(request);
        }
    }
}

/// What the hub thread drives besides the UDP socket.
pub struct Plumbing {
    /// Wakes the hub thread (gateway output, lookup results).
    pub wake: Arc<Wake>,
    /// The gateway, if any.
    pub gateway: Option<(GatewayHandle, GatewayOutput)>,
    /// Name lookups for remote names on demand, and their results.
    pub resolver: Option<(Resolver, Receiver<crate::gateway::resolve::LookupResult>)>,
    /// Callback listeners to keep up to date.
    pub callbacks: Option<CallbackListeners>,
    /// Set (then `wake`) to stop: the thread saves what is unsaved and returns.
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

/// Watches the catalog file and hands every good version to the hub.
struct CatalogWatch {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
    next_check: Instant,
}

impl CatalogWatch {
    /// Re-reads the file when its modification time or size changed; a broken file keeps the
    /// last good catalog and says which line is wrong.
    fn poll(&mut self, hub: &mut Hub<StateDir>) {
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
        match overlay_core::catalog::parse(&text) {
            Ok(entries) => match hub.set_catalog(entries) {
                Ok(u) => {
                    tracing::info!(file = %self.path.display(), changes = u.changes, "catalog loaded")
                }
                Err(e) => tracing::warn!("catalog not applied: {e}"),
            },
            Err(e) => tracing::warn!(
                file = %self.path.display(),
                "catalog {e}; keeping the last good catalog"
            ),
        }
    }
}

/// Sends what the hub queued and counts what could not be sent.
fn flush(wire: &mut UdpWire<'_>, hub: &mut Hub<StateDir>) {
    wire.out.flush();
    let unsent = wire.out.take_unsent();
    if unsent > 0 {
        tracing::debug!(
            unsent,
            "udp send: datagrams dropped (socket buffer full or send error)"
        );
        hub.count_send_failures(unsent);
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

/// Runs the hub until the socket fails.
pub fn run(
    mut hub: Hub<StateDir>,
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
    let gateway = plumbing.gateway.as_ref().map(|g| &g.0);
    let gw_out = plumbing.gateway.as_ref().map(|g| &g.1);
    let resolver = plumbing.resolver.as_ref().map(|r| &r.0);
    let lookups = plumbing.resolver.as_ref().map(|r| &r.1);
    let wake = plumbing.wake.clone();
    let sock = Udp::from_std(sock).map_err(|e| anyhow::anyhow!("udp socket setup failed: {e}"))?;
    let mut storage = vec![0u8; udp::RECV_STORAGE];
    let mut rx = udp::Receiver::new(&mut storage);
    let wire = &mut UdpWire {
        out: udp::Sender::new(&sock),
        gateway,
        resolver,
        streams: HashMap::new(),
        stream_stats: plumbing.streams.as_ref().map(|s| s.stats.clone()),
    };
    hub.greet(wire);
    flush(wire, &mut hub);
    let (jobs, done) = start_join_worker(&mut hub, wake.clone())?;
    let mut next_tick = Instant::now() + TICK;
    let mut published_seq = None;
    let mut spin = Spin::new(SPIN);
    let mut moved = 0;
    loop {
        let now = Instant::now();
        if moved > 0 {
            spin.traffic(now);
        } else if spin.keep_polling(now) {
            std::thread::yield_now();
        } else {
            wait(&sock, &wake, next_tick.saturating_duration_since(now));
        }
        moved = 0;
        wake.reset();
        if plumbing.stop.load(Ordering::Acquire) {
            // Newest handshake timestamps and endpoints accepted since the last save.
            hub.save_live(unix_now());
            return Ok(());
        }
        for _ in 0..RECV_BATCHES {
            let now = unix_now();
            match rx.recv(&sock, |from, d| hub.on_datagram(from, d, now, wire)) {
                Ok(n) => moved += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    break
                }
                // ICMP errors for earlier sends surface here; they are not fatal.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(anyhow::anyhow!("udp receive failed: {e}")),
            }
            // The answers to this batch go out together, before the next batch is read.
            flush(wire, &mut hub);
        }
        if let Some(inbox) = &plumbing.streams {
            moved += from_streams(inbox, &mut hub, wire, &wake);
            flush(wire, &mut hub);
        }
        // Public-key work goes to the join worker; the forwarding path never waits for it.
        for job in hub.take_join_jobs() {
            if jobs.try_send(job).is_err() {
                hub.join_job_dropped();
            }
        }
        while let Ok(d) = done.try_recv() {
            hub.on_join_opened(d, unix_now(), wire);
            moved += 1;
        }
        if let Some(out) = gw_out {
            let mut n = 0;
            while n < GATEWAY_BATCH {
                let Ok(p) = out.packets.try_recv() else { break };
                hub.from_gateway(&p, wire);
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
                hub.lookup_done(token, result, unix_now(), wire);
            }
        }
        if Instant::now() >= next_tick {
            if let Some(c) = catalog.as_mut() {
                c.poll(&mut hub);
            }
            hub.on_tick(unix_now(), wire);
            next_tick = Instant::now() + TICK;
        }
        while let Ok((req, reply)) = admin.try_recv() {
            let _ = reply.send(answer(&mut hub, req, gateway));
        }
        if let Some(cb) = &plumbing.callbacks {
            let seq = hub.registry_seq();
            if published_seq != Some(seq) {
                published_seq = Some(seq);
                cb.publish(CallbackRoutes::new(hub.callback_routes()));
            }
        }
        // Handshake replies, control answers and gateway output go out before the next sleep.
        flush(wire, &mut hub);
    }
}

/// Takes the streams' opens, closes and datagrams; returns the datagrams handled.
fn from_streams(
    inbox: &StreamInbox,
    hub: &mut Hub<StateDir>,
    wire: &mut UdpWire<'_>,
    wake: &Wake,
) -> usize {
    let events = |wire: &mut UdpWire<'_>| {
        while let Ok(ev) = inbox.events.try_recv() {
            match ev {
                StreamEvent::Open { id, out } => {
                    wire.streams.insert(id, out);
                }
                StreamEvent::Closed { id } => {
                    wire.streams.remove(&id);
                }
            }
        }
    };
    events(wire);
    let mut n = 0;
    while n < STREAM_BATCH {
        let Ok((id, d)) = inbox.datagrams.try_recv() else {
            return n;
        };
        if !wire.streams.contains_key(&id) {
            // Its open may have been queued after the events were read: the answer needs it.
            events(wire);
        }
        hub.on_datagram(stream_addr(id), &d, unix_now(), wire);
        n += 1;
    }
    // Possibly more waiting: come back without sleeping.
    wake.wake();
    n
}

/// Starts the thread that opens join requests (two X25519 operations each) off the hub
/// thread; it wakes the hub when a result is ready. Its queue holds [`JOB_QUEUE`] requests.
fn start_join_worker(
    hub: &mut Hub<StateDir>,
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

fn answer(hub: &mut Hub<StateDir>, req: AdminRequest, gw: Option<&GatewayHandle>) -> Answer {
    let now = unix_now();
    match req {
        AdminRequest::PeerAdd(r) => r.answer(hub.peer_add(&r.name, &r.public_key, now)),
        AdminRequest::PeerRemove(r) => {
            let removed = hub.peer_remove(&r.name).map(|()| PeerRemoved {
                removed: r.name.clone(),
            });
            r.answer(removed)
        }
        AdminRequest::Nodes(r) => r.ok(hub.nodes()),
        AdminRequest::Stats(r) => {
            let mut stats = hub.stats(now);
            stats.gateway_buffers = gw.map(|g| g.stats.buffers());
            r.ok(stats)
        }
        AdminRequest::TokenCreate(r) => {
            r.answer(hub.token_create(r.uses, r.ttl_secs, r.name_prefix.clone(), now))
        }
        AdminRequest::TokenList(r) => r.ok(hub.tokens().to_vec()),
        AdminRequest::Services(r) => r.ok(hub.services()),
        AdminRequest::TokenRevoke(r) => {
            let revoked = hub.token_revoke(&r.id).map(|()| TokenRevoked {
                revoked: r.id.clone(),
            });
            r.answer(revoked)
        }
    }
}

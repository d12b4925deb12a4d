//! The relay's gateway into the remote environment: a userspace TCP/IP stack (smoltcp) that
//! terminates overlay flows to remote-service addresses and splices them to real sockets, and
//! opens overlay connections to node services for callbacks.
//!
//! Threads and queues (all bounded):
//! ```text
//!  hub thread --ToGateway (bounded, drop when full)--> gateway thread (smoltcp + mio)
//!  hub thread <--IP packets (bounded, drop when full)-- gateway thread
//!  tokio: upstream connects, callback listeners --Control--> gateway thread
//! ```
//! Decisions (limits, expiry, targets, callback routing) are `overlay_core::relay::gateway`'s.

mod callbacks;
mod caller;
mod device;
mod engine;
pub mod resolve;
pub mod stream;
mod udp;

pub use callbacks::{CallbackListeners, CallbackRoutes};
pub use caller::CallerInfo;
pub use resolve::Resolver;
pub use stream::Accepted;

use overlay_core::relay::gateway::{BudgetConfig, BufferStats, FlowLimits};
use overlay_sys::wake::Wake;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Packets queued from the hub to the gateway at most.
const TO_GATEWAY_QUEUE: usize = 4096;
/// Packets queued from the gateway to the hub at most.
const FROM_GATEWAY_QUEUE: usize = 4096;

/// Settings of the gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The relay's overlay address (source of callback connections).
    pub relay_addr: Ipv4Addr,
    /// Inner MTU.
    pub mtu: usize,
    /// Flow limits (TCP and UDP together).
    pub limits: FlowLimits,
    /// Buffer sizes of TCP flows: the most in total, per node and per flow.
    pub budget: BudgetConfig,
    /// A TCP flow without traffic this long is closed.
    pub tcp_idle: Duration,
    /// A UDP flow without traffic this long is forgotten.
    pub udp_idle: Duration,
    /// How long a connect to a remote target may take.
    pub connect_timeout: Duration,
}

/// A packet for the gateway: which node sent it and what its destination stands for.
#[derive(Debug)]
pub struct ToGateway {
    /// The sending node.
    pub node: Box<str>,
    /// `host:port` in the remote environment; `None` for the node's side of a callback.
    pub target: Option<Box<str>>,
    /// The IP packet.
    pub packet: Vec<u8>,
}

/// Asynchronous results handed to the gateway thread.
pub enum Control {
    /// An upstream connect finished.
    Connected {
        /// The flow it is for.
        flow: usize,
        /// The connected stream or why not.
        result: std::io::Result<std::net::TcpStream>,
    },
    /// An upstream UDP socket is ready (or not).
    UdpReady {
        /// The flow it is for.
        flow: usize,
        /// The connected socket or why not.
        result: std::io::Result<std::net::UdpSocket>,
    },
    /// A callback connection accepted in the remote environment (or the relay's own end of
    /// one, a front's or the Host router's), for a node service.
    Callback {
        /// The accepted connection.
        stream: Accepted,
        /// The node service's overlay address.
        to: SocketAddrV4,
        /// The node that runs it.
        node: String,
        /// Bytes already read from `stream` (an HTTP head), sent first.
        prefix: Vec<u8>,
        /// Who really calls, announced to the node before the connection.
        caller: Option<CallerInfo>,
    },
}

/// Counters shown in metrics.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// TCP flows open now.
    pub tcp_open: AtomicU64,
    /// UDP flows open now.
    pub udp_open: AtomicU64,
    /// TCP flows accepted from nodes, ever.
    pub tcp_total: AtomicU64,
    /// UDP flows, ever.
    pub udp_total: AtomicU64,
    /// Callback connections, ever.
    pub callbacks_total: AtomicU64,
    /// Flows refused by a limit.
    pub refused_limit: AtomicU64,
    /// TCP flows refused because their node's buffer share or the buffer budget was full.
    pub refused_budget: AtomicU64,
    /// Upstream connects that failed.
    pub connect_failed: AtomicU64,
    /// Packets dropped because the queue to the gateway was full.
    pub drop_queue_in: AtomicU64,
    /// Packets dropped because the queue to the hub was full.
    pub drop_queue_out: AtomicU64,
    /// Packets the gateway could not use (no flow, malformed).
    pub drop_no_flow: AtomicU64,
    /// Bytes from nodes to the remote environment.
    pub bytes_up: AtomicU64,
    /// Bytes from the remote environment to nodes.
    pub bytes_down: AtomicU64,
    /// The buffer budget's figures, as the gateway thread last published them.
    buffers: Mutex<BufferStats>,
}

impl GatewayStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The buffer budget's figures now.
    pub fn buffers(&self) -> BufferStats {
        self.buffers
            .lock()
            .map(|b| b.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub(crate) fn set_buffers(&self, b: BufferStats) {
        match self.buffers.lock() {
            Ok(mut g) => *g = b,
            Err(p) => *p.into_inner() = b,
        }
    }
}

/// Asks the allocator to give free memory back to the system (glibc keeps freed memory in its
/// arenas otherwise).
pub(crate) fn trim_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The hub's and tokio's handle on the gateway.
#[derive(Clone)]
pub struct GatewayHandle {
    to_gw: SyncSender<ToGateway>,
    ctl: SyncSender<Control>,
    wake: Arc<Wake>,
    /// Counters.
    pub stats: Arc<GatewayStats>,
}

impl GatewayHandle {
    /// Queues a packet for the gateway; drops it (counted) when the queue is full.
    pub fn send_packet(&self, p: ToGateway) {
        match self.to_gw.try_send(p) {
            Ok(()) => self.wake.wake(),
            Err(TrySendError::Full(_)) => GatewayStats::add(&self.stats.drop_queue_in, 1),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Hands an asynchronous result to the gateway; `false` if it could not take it.
    pub fn control(&self, c: Control) -> bool {
        let ok = self.ctl.try_send(c).is_ok();
        if ok {
            self.wake.wake();
        }
        ok
    }
}

/// The hub's end of the gateway's output.
pub struct GatewayOutput {
    /// IP packets for nodes.
    pub packets: Receiver<Vec<u8>>,
}

/// Starts the gateway thread. `hub_wake` is woken when packets for nodes are queued.
pub fn start(
    cfg: GatewayConfig,
    rt: tokio::runtime::Handle,
    hub_wake: Arc<Wake>,
) -> std::io::Result<(GatewayHandle, GatewayOutput)> {
    let poll = mio::Poll::new()?;
    let wake = Arc::new(Wake::new()?);
    poll.registry().register(
        &mut mio::unix::SourceFd(&wake.fd()),
        engine::WAKER,
        mio::Interest::READABLE,
    )?;
    let (to_gw, in_rx) = sync_channel(TO_GATEWAY_QUEUE);
    let (ctl, ctl_rx) = sync_channel(cfg.limits.total + 1024);
    let (out_tx, out_rx) = sync_channel(FROM_GATEWAY_QUEUE);
    let stats = Arc::new(GatewayStats::default());
    let handle = GatewayHandle {
        to_gw,
        ctl,
        wake: wake.clone(),
        stats: stats.clone(),
    };
    let engine = engine::Engine::new(
        cfg,
        poll,
        wake,
        in_rx,
        ctl_rx,
        out_tx,
        hub_wake,
        handle.clone(),
        rt,
        stats,
    );
    std::thread::Builder::new()
        .name("gateway".into())
        .spawn(move || engine.run())?;
    Ok((handle, GatewayOutput { packets: out_rx }))
}

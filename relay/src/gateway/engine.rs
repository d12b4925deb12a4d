//! The gateway thread: smoltcp for the overlay side, non-blocking sockets (mio) for the real
//! side, and the splice between them. Data moves straight from one side's buffer into the
//! other's socket: the only buffers are smoltcp's two per connection, sized when the flow opens
//! by the memory budget (`overlay_core::relay::gateway::BufferBudget`), so their sum stays within it.
//! A full buffer stops the reads from the socket that fills it: the peer's TCP flow control
//! then holds the data, not the relay.

use super::device::Queues;
use super::stream::{register, reset_close, Accepted, RealStream};
use super::{Control, GatewayConfig, GatewayHandle, GatewayStats, ToGateway};
use mio::{Events, Poll, Token};
use overlay_core::relay::gateway::{BufferBudget, FlowTable, Segment, Transport};
use overlay_sys::wake::Wake;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddrV4;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The token of the wake-up from other threads.
pub const WAKER: Token = Token(0);
/// Packets taken from the hub per round, so sockets get their turn under load.
const BATCH: usize = 512;
/// Every flow is looked at this often, for state changes driven by smoltcp's timers.
const SWEEP: Duration = Duration::from_millis(100);
/// Ephemeral ports of callback connections from the relay's overlay address.
const EPHEMERAL: std::ops::RangeInclusive<u16> = 20000..=60999;
/// Nodes listed by name in the buffer figures.
const TOP_NODES: usize = 5;
/// Buffer bytes freed before the allocator is asked to return free memory to the system.
const TRIM_AFTER: usize = 8 << 20;
/// At most one warning about budget refusals per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub(super) type Tuple = (SocketAddrV4, SocketAddrV4);

/// One spliced TCP connection.
struct TcpFlow {
    handle: SocketHandle,
    tuple: Tuple,
    stream: Option<RealStream>,
    readable: bool,
    writable: bool,
    /// The real side sent FIN; the overlay side was closed after its data.
    real_eof: bool,
    /// The overlay side sent FIN; the real side's write half was shut down.
    real_shut: bool,
    overlay_fin: bool,
    established: bool,
    /// Bytes to send into the overlay before anything read from the stream (HTTP head).
    prefix: Vec<u8>,
    /// A callback's ephemeral port, freed with the flow.
    local_port: Option<u16>,
    /// The node the flow's buffers are charged to.
    node: Box<str>,
    /// Bytes of each of its two buffers, given back to the budget with the flow.
    buffer: usize,
    /// Remove after the next egress (an RST may have to go out first).
    dead: bool,
}

pub struct Engine {
    pub(super) cfg: GatewayConfig,
    poll: Poll,
    wake: Arc<Wake>,
    in_rx: Receiver<ToGateway>,
    ctl_rx: Receiver<Control>,
    out_tx: SyncSender<Vec<u8>>,
    hub_wake: Arc<Wake>,
    pub(super) handle: GatewayHandle,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) stats: Arc<GatewayStats>,
    iface: Interface,
    pub(super) dev: Queues,
    sockets: SocketSet<'static>,
    flows: HashMap<usize, TcpFlow>,
    pub(super) table: FlowTable<usize>,
    by_tuple: HashMap<Tuple, usize>,
    dirty: HashSet<usize>,
    next_id: usize,
    pub(super) epoch: Instant,
    ports_used: HashSet<u16>,
    next_port: u16,
    pub(super) udp: super::udp::UdpFlows,
    budget: BufferBudget,
    /// Buffer bytes freed since the allocator last returned memory, and when it did.
    freed: usize,
    trimmed: Instant,
    /// When budget refusals were last logged, and how many since.
    warned: Option<Instant>,
    refused_quiet: u64,
}

/// What became of a node's SYN.
enum Opened {
    /// A flow listens for it.
    Yes,
    /// Dropped without an answer (a flow limit, like a full backlog: the node retries).
    Drop,
    /// Answered with RST (no buffers for it: retrying soon would not help).
    Reset,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: GatewayConfig,
        poll: Poll,
        wake: Arc<Wake>,
        in_rx: Receiver<ToGateway>,
        ctl_rx: Receiver<Control>,
        out_tx: SyncSender<Vec<u8>>,
        hub_wake: Arc<Wake>,
        handle: GatewayHandle,
        rt: tokio::runtime::Handle,
        stats: Arc<GatewayStats>,
    ) -> Engine {
        let mut dev = Queues::new(cfg.mtu);
        let mut icfg = Config::new(HardwareAddress::Ip);
        icfg.random_seed = rand::random();
        let epoch = Instant::now();
        let mut iface = Interface::new(icfg, &mut dev, smoltcp::time::Instant::from_millis(0));
        iface.set_any_ip(true);
        let relay = cfg.relay_addr;
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(relay), 32));
        });
        let table = FlowTable::new(cfg.limits);
        let budget = BufferBudget::new(cfg.budget);
        stats.set_buffers(budget.stats(TOP_NODES));
        Engine {
            cfg,
            poll,
            wake,
            in_rx,
            ctl_rx,
            out_tx,
            hub_wake,
            handle,
            rt,
            stats,
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            flows: HashMap::new(),
            table,
            by_tuple: HashMap::new(),
            dirty: HashSet::new(),
            next_id: 1,
            epoch,
            ports_used: HashSet::new(),
            next_port: *EPHEMERAL.start(),
            udp: Default::default(),
            budget,
            freed: 0,
            trimmed: Instant::now(),
            warned: None,
            refused_quiet: 0,
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_millis(self.epoch.elapsed().as_millis() as i64)
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) fn next_id(&mut self) -> usize {
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            let id = self.next_id;
            if !self.flows.contains_key(&id) && !self.udp.contains(id) {
                return id;
            }
        }
    }

    pub(super) fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }

    /// Runs until the hub goes away.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        let mut last_expire = Instant::now();
        loop {
            let now = self.now();
            let delay = self
                .iface
                .poll_delay(now, &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(SWEEP)
                .min(SWEEP);
            let delay = if self.dev.tx.is_empty() {
                delay
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(delay)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!("gateway poll failed: {e}");
                    return;
                }
            }
            // Registered with mio, so edge-triggered: no read needed.
            self.wake.reset_edge();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let id = ev.token().0;
                if let Some(f) = self.flows.get_mut(&id) {
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        f.readable = true;
                    }
                    if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                        f.writable = true;
                    }
                    self.dirty.insert(id);
                } else {
                    self.udp_readable(id);
                }
            }
            if !self.drain_control() {
                return;
            }
            if !self.drain_packets() {
                return;
            }
            if last_sweep.elapsed() >= SWEEP {
                last_sweep = Instant::now();
                self.dirty.extend(self.flows.keys().copied());
            }
            self.pump_dirty();
            let now = self.now();
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
            // Egress may have freed buffer space (ACKed data): move more right away.
            self.pump_dirty();
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
            self.reap();
            self.flush_out();
            if last_expire.elapsed() >= Duration::from_secs(1) {
                last_expire = Instant::now();
                self.expire();
            }
        }
    }

    /// Connect results and callbacks; `false` when every sender is gone.
    fn drain_control(&mut self) -> bool {
        loop {
            match self.ctl_rx.try_recv() {
                Ok(Control::Connected { flow, result }) => self.connected(flow, result),
                Ok(Control::UdpReady { flow, result }) => self.udp_ready(flow, result),
                Ok(Control::Callback {
                    stream,
                    to,
                    node,
                    prefix,
                    caller,
                }) => self.callback(stream, to, &node, prefix, caller),
                Err(std::sync::mpsc::TryRecvError::Empty) => return true,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Packets from nodes, one at a time through the stack; `false` when the hub is gone.
    fn drain_packets(&mut self) -> bool {
        for _ in 0..BATCH {
            let p = match self.in_rx.try_recv() {
                Ok(p) => p,
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return false,
            };
            let Some(seg) = Segment::parse(&p.packet) else {
                GatewayStats::add(&self.stats.drop_no_flow, 1);
                continue;
            };
            if seg.transport == Transport::Udp {
                self.udp_packet(&p, seg);
                continue;
            }
            let tuple = (seg.src, seg.dst);
            if let Some(&id) = self.by_tuple.get(&tuple) {
                self.dirty.insert(id);
            } else if seg.is_syn() {
                let Some(target) = p.target.as_deref() else {
                    // A SYN to the relay's own address: nothing listens there.
                    self.feed(p.packet);
                    continue;
                };
                match self.open_inbound(&p.node, target, tuple) {
                    Opened::Yes => {}
                    Opened::Drop => continue,
                    // Nothing listens: smoltcp answers the SYN with RST.
                    Opened::Reset => {}
                }
            }
            // Stray segments get smoltcp's RST, like a closed port.
            self.feed(p.packet);
        }
        true
    }

    fn feed(&mut self, packet: Vec<u8>) {
        self.dev.rx = Some(packet);
        let now = self.now();
        self.iface
            .poll_ingress_single(now, &mut self.dev, &mut self.sockets);
        self.dev.rx = None;
    }

    /// A socket with buffers of `n` bytes each way.
    fn new_socket(n: usize) -> tcp::Socket<'static> {
        // Zeroed allocations are lazily backed: untouched buffer pages cost no memory.
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; n]),
            tcp::SocketBuffer::new(vec![0u8; n]),
        );
        s.set_nagle_enabled(false);
        s.set_keep_alive(Some(smoltcp::time::Duration::from_secs(60)));
        s.set_timeout(Some(smoltcp::time::Duration::from_secs(180)));
        s
    }

    /// Buffers for a new flow of `node` from the budget, or `None` (counted, logged now and
    /// then) when its share or the budget is full.
    fn grant(&mut self, node: &str) -> Option<usize> {
        match self.budget.admit(node) {
            Ok(each) => {
                self.publish_buffers();
                Some(each)
            }
            Err(e) => {
                GatewayStats::add(&self.stats.refused_budget, 1);
                self.refused_quiet += 1;
                if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        node,
                        refused = self.refused_quiet,
                        "gateway flows refused for lack of buffer memory (latest: {e}); \
                         raise --gateway-buffer-mib if the relay has the memory"
                    );
                    self.warned = Some(Instant::now());
                    self.refused_quiet = 0;
                }
                None
            }
        }
    }

    /// Gives a flow's buffers back to the budget.
    fn ungrant(&mut self, node: &str, each: usize) {
        self.budget.release(node, each);
        self.freed += 2 * each;
        self.publish_buffers();
    }

    /// After large frees (or the last buffers' free), and at most once a second, asks the
    /// allocator to return free memory to the system: freed buffers otherwise stay in its
    /// arenas, counted in the relay's memory.
    fn trim(&mut self) {
        let due = self.freed >= TRIM_AFTER || (self.freed > 0 && self.budget.used() == 0);
        if due && self.trimmed.elapsed() >= Duration::from_secs(1) {
            self.freed = 0;
            self.trimmed = Instant::now();
            super::trim_memory();
        }
    }

    fn publish_buffers(&self) {
        self.stats.set_buffers(self.budget.stats(TOP_NODES));
    }

    /// A node's SYN to a remote service: listen on exactly its destination (holding the
    /// SYN-ACK) and connect upstream, unless a limit refuses it.
    fn open_inbound(&mut self, node: &str, target: &str, tuple: Tuple) -> Opened {
        let id = self.next_id();
        let now = self.now_ms();
        if let Err(e) = self.table.admit(id, node, now) {
            GatewayStats::add(&self.stats.refused_limit, 1);
            tracing::debug!(node, "tcp flow refused: {e}");
            return Opened::Drop;
        }
        let Some(buffer) = self.grant(node) else {
            self.table.remove(&id);
            return Opened::Reset;
        };
        let mut sock = Self::new_socket(buffer);
        sock.pause_synack(true);
        let dst = tuple.1;
        if sock
            .listen(IpEndpoint::new(IpAddress::Ipv4(*dst.ip()), dst.port()))
            .is_err()
        {
            self.table.remove(&id);
            self.ungrant(node, buffer);
            return Opened::Drop;
        }
        let handle = self.sockets.add(sock);
        self.flows.insert(
            id,
            TcpFlow {
                handle,
                tuple,
                stream: None,
                readable: false,
                writable: false,
                real_eof: false,
                real_shut: false,
                overlay_fin: false,
                established: false,
                prefix: Vec::new(),
                local_port: None,
                node: node.into(),
                buffer,
                dead: false,
            },
        );
        self.by_tuple.insert(tuple, id);
        GatewayStats::add(&self.stats.tcp_total, 1);
        GatewayStats::add(&self.stats.tcp_open, 1);
        let target = target.to_string();
        let gw = self.handle.clone();
        let timeout = self.cfg.connect_timeout;
        tracing::debug!(node, %target, client = %tuple.0, "tcp flow");
        self.rt.spawn(async move {
            let result = match tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect(&target),
            )
            .await
            {
                Ok(Ok(s)) => s.into_std(),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!("connecting to {target} timed out"),
                )),
            };
            if let Err(e) = &result {
                tracing::debug!(%target, "upstream connect failed: {e}");
            }
            gw.control(Control::Connected { flow: id, result });
        });
        Opened::Yes
    }

    fn connected(&mut self, id: usize, result: std::io::Result<std::net::TcpStream>) {
        let Some(f) = self.flows.get_mut(&id) else {
            return;
        };
        let sock = self.sockets.get_mut::<tcp::Socket>(f.handle);
        let stream = match result {
            Ok(s) => s,
            Err(_) => {
                // Refused or unreachable: the node's connect is refused too.
                GatewayStats::add(&self.stats.connect_failed, 1);
                sock.abort();
                f.dead = true;
                return;
            }
        };
        let Some(stream) = register(&self.poll, Accepted::Tcp(stream), id) else {
            sock.abort();
            f.dead = true;
            return;
        };
        sock.pause_synack(false);
        f.stream = Some(stream);
        f.readable = true;
        f.writable = true;
        self.dirty.insert(id);
    }

    /// A connection accepted on a callback listener (or a front's or the Host router's side of
    /// one): open an overlay connection from the relay's address to the node service. The
    /// caller, when known, is announced to the node first (`control::CallerNotice`), on the same
    /// way as the connection's packets, so the node knows it before the connection arrives.
    fn callback(
        &mut self,
        stream: Accepted,
        to: SocketAddrV4,
        node: &str,
        prefix: Vec<u8>,
        caller: Option<super::CallerInfo>,
    ) {
        let id = self.next_id();
        if let Err(e) = self.table.admit(id, node, self.now_ms()) {
            GatewayStats::add(&self.stats.refused_limit, 1);
            tracing::debug!(node, "callback refused: {e}");
            reset_close(&stream);
            return;
        }
        let Some(port) = self.alloc_port() else {
            self.table.remove(&id);
            reset_close(&stream);
            return;
        };
        let Some(buffer) = self.grant(node) else {
            self.table.remove(&id);
            self.ports_used.remove(&port);
            reset_close(&stream);
            return;
        };
        let mut sock = Self::new_socket(buffer);
        let local = SocketAddrV4::new(self.cfg.relay_addr, port);
        if sock
            .connect(
                self.iface.context(),
                IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port()),
                IpEndpoint::new(IpAddress::Ipv4(*local.ip()), port),
            )
            .is_err()
        {
            self.table.remove(&id);
            self.ports_used.remove(&port);
            self.ungrant(node, buffer);
            reset_close(&stream);
            return;
        }
        let Some(stream) = register(&self.poll, stream, id) else {
            self.table.remove(&id);
            self.ports_used.remove(&port);
            self.ungrant(node, buffer);
            return;
        };
        if let Some(c) = caller {
            self.announce(c, to, port);
        }
        let handle = self.sockets.add(sock);
        let tuple = (to, local);
        self.flows.insert(
            id,
            TcpFlow {
                handle,
                tuple,
                stream: Some(stream),
                readable: true,
                writable: true,
                real_eof: false,
                real_shut: false,
                overlay_fin: false,
                established: false,
                prefix,
                local_port: Some(port),
                node: node.into(),
                buffer,
                dead: false,
            },
        );
        self.by_tuple.insert(tuple, id);
        GatewayStats::add(&self.stats.callbacks_total, 1);
        GatewayStats::add(&self.stats.tcp_open, 1);
        tracing::debug!(node, service = %to, "callback connection");
        self.dirty.insert(id);
    }

    fn alloc_port(&mut self) -> Option<u16> {
        let span = usize::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p >= *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            if self.ports_used.insert(p) {
                return Some(p);
            }
        }
        None
    }

    fn pump_dirty(&mut self) {
        let ids: Vec<usize> = self.dirty.drain().collect();
        for id in ids {
            self.pump(id);
        }
    }

    /// Moves data both ways on one flow and follows FIN and RST from either side.
    fn pump(&mut self, id: usize) {
        let now = self.now_ms();
        let Some(f) = self.flows.get_mut(&id) else {
            return;
        };
        if f.dead {
            return;
        }
        let sock = self.sockets.get_mut::<tcp::Socket>(f.handle);
        use tcp::State as S;
        let state = sock.state();
        if !matches!(state, S::Closed | S::Listen | S::SynSent | S::SynReceived) {
            f.established = true;
        }
        if matches!(state, S::CloseWait | S::LastAck | S::Closing | S::TimeWait) {
            f.overlay_fin = true;
        }
        let mut moved = 0u64;
        if let Some(stream) = f.stream.as_mut() {
            while !f.prefix.is_empty() && sock.can_send() {
                match sock.send_slice(&f.prefix) {
                    Ok(n) if n > 0 => {
                        f.prefix.drain(..n);
                    }
                    _ => break,
                }
            }
            // overlay -> real
            while f.writable && sock.can_recv() {
                let r = sock.recv(|buf| match stream.write(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => {
                        moved += n as u64;
                        GatewayStats::add(&self.stats.bytes_up, n as u64);
                    }
                    Ok(Err(e)) if e.kind() == ErrorKind::WouldBlock => f.writable = false,
                    Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                    Ok(Err(_)) => {
                        // The remote side reset: so does the overlay side.
                        sock.abort();
                        f.dead = true;
                        return;
                    }
                    Err(_) => break,
                }
            }
            if f.overlay_fin && !f.real_shut && sock.recv_queue() == 0 {
                let _ = stream.shutdown(std::net::Shutdown::Write);
                f.real_shut = true;
            }
            // real -> overlay
            while f.readable && !f.real_eof && f.prefix.is_empty() && sock.can_send() {
                let r = sock.send(|buf| match stream.read(buf) {
                    Ok(0) => (0, Ok(0)),
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => {
                        f.real_eof = true;
                        sock.close();
                    }
                    Ok(Ok(n)) => {
                        moved += n as u64;
                        GatewayStats::add(&self.stats.bytes_down, n as u64);
                    }
                    Ok(Err(e)) if e.kind() == ErrorKind::WouldBlock => f.readable = false,
                    Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                    Ok(Err(_)) => {
                        sock.abort();
                        f.dead = true;
                        return;
                    }
                    Err(_) => break,
                }
            }
        }
        if moved > 0 {
            self.table.touch(&id, now);
        }
        let state = sock.state();
        let graceful = f.real_eof && f.real_shut;
        if state == S::Closed && f.stream.is_some() {
            if !graceful {
                // The node reset (or the connection timed out): reset the real side too.
                if let Some(s) = &f.stream {
                    reset_close(s);
                }
            }
            f.dead = true;
        } else if state == S::TimeWait && graceful {
            f.dead = true;
        }
    }

    /// Removes finished flows (after egress, so their RST or FIN went out).
    fn reap(&mut self) {
        let dead: Vec<usize> = self
            .flows
            .iter()
            .filter(|(_, f)| f.dead)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            let Some(mut f) = self.flows.remove(&id) else {
                continue;
            };
            if let Some(mut s) = f.stream.take() {
                let _ = self.poll.registry().deregister(&mut s);
            }
            self.sockets.remove(f.handle);
            self.by_tuple.remove(&f.tuple);
            self.table.remove(&id);
            if let Some(p) = f.local_port {
                self.ports_used.remove(&p);
            }
            // The socket (and its buffers) went with `sockets.remove`.
            self.ungrant(&f.node, f.buffer);
            self.stats
                .tcp_open
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.trim();
    }

    /// Hands the stack's output to the hub; a full queue drops (TCP retransmits).
    pub(super) fn flush_out(&mut self) {
        if self.dev.tx.is_empty() {
            return;
        }
        for p in self.dev.tx.drain(..) {
            match self.out_tx.try_send(p) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => GatewayStats::add(&self.stats.drop_queue_out, 1),
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        self.hub_wake.wake();
    }

    /// Closes idle flows; returns memory freed a moment ago that [`Engine::trim`] held back.
    fn expire(&mut self) {
        self.trim();
        let now = self.now_ms();
        let tcp_idle = self.cfg.tcp_idle.as_millis() as u64;
        let udp_idle = self.cfg.udp_idle.as_millis() as u64;
        for id in self.table.idle(now, tcp_idle) {
            if let Some(f) = self.flows.get_mut(&id) {
                let sock = self.sockets.get_mut::<tcp::Socket>(f.handle);
                sock.abort();
                if let Some(s) = &f.stream {
                    reset_close(s);
                }
                f.dead = true;
                tracing::debug!(flow = id, "idle tcp flow closed");
            }
        }
        for id in self.table.idle(now, udp_idle) {
            if !self.flows.contains_key(&id) {
                self.udp_expire(id);
            }
        }
    }
}

//! The node's DNS server on 100.100.100.100:53 and the node address, UDP and TCP.
//!
//! Names in the overlay domain are answered from the synced registry (`overlay_core::names::dns`);
//! everything else is forwarded to the servers the system used before overlay changed it.

use crate::daemon::relaylink::{Directory, Looked};
use crate::daemon::udpbatch::{Peer, Slots};
use overlay_core::api::daemon::{DnsAnswer, ResolveReply};
use overlay_core::names::dns::explain;
use overlay_core::names::dns::upstream::{matches_query, try_next, Plan, StaleCache, Upstreams};
use overlay_core::names::dns::{
    answer, on_demand_candidate, refused, servfail, AnswerCache, DnsContext, DnsOutcome,
    EDNS_PAYLOAD,
};
use overlay_core::names::registry::ServiceInstance;
use overlay_core::names::resolver::{Resolution, Resolver};
use overlay_core::net::prefix::Ipv4Prefix;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// Queries forwarded upstream at once; beyond that they are dropped (clients retry).
const MAX_FORWARDS: usize = 256;
/// TCP connections at once, per listener: the node's own clients on 100.100.100.100 and
/// other nodes on the overlay address each have their own.
const MAX_TCP: usize = 64;
/// TCP connections at once from one client address.
const MAX_TCP_PER_CLIENT: usize = 8;
/// How long a TCP client has to send a query's two-byte length (the first, and each next one).
const TCP_LENGTH_DEADLINE: Duration = Duration::from_secs(3);
/// How long a TCP client has to send the query after its length.
const TCP_MESSAGE_DEADLINE: Duration = Duration::from_secs(2);
/// The longest a TCP connection stays open.
const TCP_LIFETIME: Duration = Duration::from_secs(30);
/// Byte budget of the upstream answers kept to serve stale (RFC 8767) while upstreams are silent.
const STALE_BYTES: usize = 1024 * 1024;
/// Largest upstream reply accepted.
const UPSTREAM_REPLY_MAX: usize = 4096;
/// TTL of overlay answers: short, so moves propagate.
const TTL: u32 = 5;
/// How long a miss may be cached: the SOA minimum of our NXDOMAIN answers (it is the TTL).
pub const NEGATIVE_TTL: u32 = TTL;
/// Byte budget of each of the two segments of a UDP thread's answer cache: about 1,500 names
/// each (a reply to an A query is under 100 bytes), at most 512 KiB per thread.
const CACHE_SEGMENT_BYTES: usize = 256 * 1024;
/// Receive buffer per query: a longer datagram is cut (and then malformed).
const QUERY_SLOT: usize = 4096;
/// Send buffer per reply: every UDP answer fits the EDNS payload size we advertise.
const REPLY_SLOT: usize = EDNS_PAYLOAD as usize;

/// What the server answers from.
pub struct DnsServer {
    /// This node's name.
    pub node: String,
    /// This node's address.
    pub node_addr: Ipv4Addr,
    /// The overlay domain.
    pub domain: String,
    /// The overlay network (its reverse zone is answered here).
    pub network: Ipv4Prefix,
    /// The synced registry.
    pub directory: Arc<Directory>,
    /// Servers for names outside the domain, and how each is doing.
    upstreams: Mutex<Upstreams>,
    /// Their earlier answers, to serve stale when none answers.
    stale: Mutex<StaleCache>,
    /// The zero of the millisecond clock handed to the forwarding policy.
    epoch: Instant,
    forwards: Arc<Semaphore>,
    /// The node list derived from the last registry snapshot seen: derived once per change,
    /// not once per query.
    nodes: std::sync::Mutex<Option<NodesCache>>,
}

impl DnsServer {
    /// A server answering for `node`.
    pub fn new(
        node: String,
        node_addr: Ipv4Addr,
        domain: String,
        network: Ipv4Prefix,
        directory: Arc<Directory>,
        upstream: Vec<IpAddr>,
    ) -> Arc<Self> {
        Arc::new(DnsServer {
            node,
            node_addr,
            domain,
            network,
            directory,
            upstreams: Mutex::new(Upstreams::new(&upstream)),
            stale: Mutex::new(StaleCache::new(STALE_BYTES)),
            epoch: Instant::now(),
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            nodes: std::sync::Mutex::new(None),
        })
    }

    fn ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether `server_addr` is the node's overlay address, where other nodes ask: only names
    /// of the overlay are answered there, never forwarded.
    fn is_overlay_listener(&self, server_addr: Ipv4Addr) -> bool {
        server_addr == self.node_addr
    }

    fn respond(&self, query: &[u8], server_addr: Ipv4Addr, tcp: bool) -> DnsOutcome {
        self.respond_or_ask(query, server_addr, tcp).0
    }

    /// The answer, and the label to look up on demand when the answer is NXDOMAIN for an
    /// unknown single label in the domain.
    fn respond_or_ask(
        &self,
        query: &[u8],
        server_addr: Ipv4Addr,
        tcp: bool,
    ) -> (DnsOutcome, Option<String>) {
        let instances = self.directory.instances();
        let nodes = self.nodes_for(&instances);
        let ctx = DnsContext {
            instances: &instances,
            nodes: &nodes,
            local_node: &self.node,
            domain: &self.domain,
            server_addr,
            ttl: TTL,
            serial: 1,
            network: Some(self.network),
        };
        let mut outcome = answer(query, &ctx, tcp);
        if outcome == DnsOutcome::Forward && self.is_overlay_listener(server_addr) {
            // Not an open forwarder for other nodes.
            outcome = refused(query, tcp);
        }
        (outcome, on_demand_candidate(query, &ctx))
    }

    /// Like `respond`, but first asks the relay for an unknown single label (a remote name on
    /// demand), so `curl http://redis:6379` works for names only the remote side knows.
    async fn respond_looking_up(
        &self,
        query: &[u8],
        server_addr: Ipv4Addr,
        tcp: bool,
    ) -> DnsOutcome {
        let (outcome, ask) = self.respond_or_ask(query, server_addr, tcp);
        let Some(label) = ask else {
            return outcome;
        };
        match self.directory.lookup(&label).await {
            Looked::Found(_) => self.respond(query, server_addr, tcp),
            // NXDOMAIN only when the remote environment said so ...
            Looked::NotFound => outcome,
            // ... else "try again later", within the lookup's bound.
            Looked::Unavailable => servfail(query, tcp),
        }
    }

    /// What `overlay resolve NAME` prints: the answer this server gives to the name the system
    /// resolver would ask (the search domain first for a name without dots), through the same
    /// path as a query on 100.100.100.100 (registry, on-demand lookup, forwarding), and the
    /// rule that chose it.
    pub async fn explain(&self, name: &str) -> ResolveReply {
        let server = overlay_core::net::addressing::DNS_ADDR;
        let mut tried = Vec::new();
        let candidates = explain::candidates(name, &self.domain);
        let mut chosen = None;
        for qname in &candidates {
            let Some(query) = explain::query_for(qname, rand::random()) else {
                continue;
            };
            let reply = match self.respond_looking_up(&query, server, true).await {
                DnsOutcome::Reply(r) => Some(r),
                DnsOutcome::Forward => self.forward(&query, true).await,
                DnsOutcome::Drop => None,
            };
            let Some(summary) = reply.as_deref().and_then(explain::summarize) else {
                continue;
            };
            let found = summary.rcode == "NOERROR" && !summary.answers.is_empty();
            tried.push((qname.clone(), summary));
            if found {
                chosen = Some(tried.len() - 1);
                break;
            }
        }
        // Nothing found: show the first name tried (the one the domain's rules decide).
        let Some((qname, summary)) = chosen
            .or((!tried.is_empty()).then_some(0))
            .and_then(|i| tried.get(i).cloned())
        else {
            return ResolveReply {
                name: name.to_string(),
                explanation: format!("'{name}' is not a DNS name"),
                answer: None,
            };
        };
        let instances = self.directory.instances();
        let nodes = self.nodes_for(&instances);
        let resolver = Resolver::new(&instances, &nodes, &self.node, &self.domain);
        let resolution = resolver.resolve(&qname);
        let mut explanation = resolution.describe(&qname, &self.node, &self.domain);
        if resolution == Resolution::NxDomain {
            explanation = match summary.rcode.as_str() {
                "SERVFAIL" => format!("{qname} is not a known name, and the remote environment could not be asked in time (SERVFAIL): try again"),
                _ if on_demand_label(&qname, &self.domain) => format!("{explanation}, and the remote environment has no such name"),
                _ => explanation,
            };
        }
        if resolution == Resolution::NotInDomain && summary.rcode == "SERVFAIL" {
            explanation.push_str("; no upstream resolver answered in time (SERVFAIL)");
        }
        ResolveReply {
            name: name.to_string(),
            explanation,
            answer: Some(DnsAnswer {
                qname,
                reply: summary,
                resolution,
            }),
        }
    }

    /// Serves UDP on `addr` until the socket fails.
    ///
    /// The receive loop is a plain thread with a blocking socket: a repeated question is answered
    /// from the thread's [`AnswerCache`] in well under a microsecond (a new one from the registry
    /// in about 2 µs), so the per-datagram cost of an async socket would dominate. Datagrams
    /// come and go in batches (`recvmmsg`/`sendmmsg`) when several are waiting. Only queries
    /// that wait on the network (forwards, on-demand lookups) go to the runtime.
    pub async fn serve_udp(self: Arc<Self>, addr: SocketAddr) -> anyhow::Result<()> {
        let sock = shared_udp_blocking(addr)
            .map_err(|e| anyhow::anyhow!("cannot serve DNS on udp {addr}: {e}"))?;
        let sock = Arc::new(sock);
        let rt = tokio::runtime::Handle::current();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("dns-udp".into())
            .spawn(move || {
                let r = self.udp_loop(&sock, addr, &rt);
                let _ = done_tx.send(r);
            })?;
        done_rx
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the DNS thread stopped")))
    }

    fn udp_loop(
        self: &Arc<Self>,
        sock: &Arc<std::net::UdpSocket>,
        addr: SocketAddr,
        rt: &tokio::runtime::Handle,
    ) -> anyhow::Result<()> {
        let server_addr = match addr.ip() {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => self.node_addr,
        };
        let mut inbox = Box::<Slots<QUERY_SLOT>>::default();
        let mut outbox = Box::<Slots<REPLY_SLOT>>::default();
        // Per thread, so the hot path takes no lock; answers differ per server address anyway.
        let mut cache = AnswerCache::new(CACHE_SEGMENT_BYTES);
        loop {
            if let Err(e) = inbox.recv(sock.as_ref()) {
                tracing::debug!("dns receive: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            // Once per batch: a change of names during the batch shows in the next one.
            let generation = self.directory.generation();
            for i in 0..inbox.len() {
                let Some((query, peer)) = inbox.get(i) else {
                    break;
                };
                if let Some(buf) = outbox.next_buf() {
                    if let Some(len) = cache.reply(query, generation, buf) {
                        outbox.push(len, peer);
                        continue;
                    }
                }
                let (outcome, ask) = self.respond_or_ask(query, server_addr, false);
                cache.remember(query, generation, &outcome, ask.is_some());
                let slow = ask.is_some() || outcome == DnsOutcome::Forward;
                if !slow {
                    if let DnsOutcome::Reply(r) = outcome {
                        if !outbox.copy_in(&r, peer) {
                            if let Some(to) = peer.socket_addr() {
                                let _ = sock.send_to(&r, to);
                            }
                        }
                    }
                    continue;
                }
                self.answer_later(query, peer, ask.is_some(), server_addr, sock, rt);
            }
            if let Err(e) = outbox.send(sock.as_ref()) {
                tracing::debug!("dns send: {e}");
            }
        }
    }

    /// Hands a query that waits on the network (a forward upstream, an on-demand lookup) to
    /// the runtime, so the receive loop goes on.
    fn answer_later(
        self: &Arc<Self>,
        query: &[u8],
        peer: &Peer,
        ask: bool,
        server_addr: Ipv4Addr,
        sock: &Arc<std::net::UdpSocket>,
        rt: &tokio::runtime::Handle,
    ) {
        let Some(from) = peer.socket_addr() else {
            return;
        };
        // Bounded: beyond MAX_FORWARDS the query is dropped and the client retries.
        let Ok(permit) = self.forwards.clone().try_acquire_owned() else {
            return;
        };
        let query = query.to_vec();
        let sock = sock.clone();
        let me = self.clone();
        rt.spawn(async move {
            let reply = if ask {
                match me.respond_looking_up(&query, server_addr, false).await {
                    DnsOutcome::Reply(r) => Some(r),
                    _ => None,
                }
            } else {
                me.forward(&query, false).await
            };
            if let Some(r) = reply {
                let _ = sock.send_to(&r, from);
            }
            drop(permit);
        });
    }

    /// Forwards a query upstream and always answers within the policy's deadline: the first
    /// useful upstream reply, else a stale copy of an earlier one, else an upstream's SERVFAIL
    /// or REFUSED, else our SERVFAIL. `None` only for bytes that are no query.
    async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let start = self.ms();
        let plan = self
            .upstreams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .plan(start);
        let mut unhelpful = None;
        if !plan.sends.is_empty() {
            match self.ask_upstreams(query, &plan).await {
                Asked::Answer(r) => {
                    self.stale
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remember(query, &r, self.ms());
                    return Some(r);
                }
                Asked::Unhelpful(r) => unhelpful = Some(r),
                Asked::Nothing => {}
            }
        }
        let stale = self
            .stale
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stale_reply(query, self.ms());
        if let Some(r) = stale {
            return Some(r);
        }
        if unhelpful.is_some() {
            return unhelpful;
        }
        match servfail(query, tcp) {
            DnsOutcome::Reply(r) => Some(r),
            _ => None,
        }
    }

    /// Sends `query` to the planned servers at their offsets and waits for a reply until the
    /// plan's deadline; marks the servers that answered and those that stayed silent.
    async fn ask_upstreams(&self, query: &[u8], plan: &Plan) -> Asked {
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_millis(plan.deadline);
        let mut v4 = None;
        let mut v6 = None;
        for (server, _) in &plan.sends {
            let slot = if server.is_ipv4() { &mut v4 } else { &mut v6 };
            if slot.is_none() {
                let bind: SocketAddr = if server.is_ipv4() {
                    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
                } else {
                    SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
                };
                *slot = UdpSocket::bind(bind).await.ok();
            }
        }
        let mut asked: Vec<(IpAddr, bool)> = Vec::new();
        let mut next = 0;
        let mut unhelpful = None;
        let (mut b4, mut b6) = (vec![0u8; UPSTREAM_REPLY_MAX], vec![0u8; UPSTREAM_REPLY_MAX]);
        let result = loop {
            let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            while let Some((server, at)) = plan.sends.get(next) {
                // Each at its time; the next at once when every one asked so far gave up.
                let all_gave_up = !asked.is_empty() && asked.iter().all(|(_, answered)| *answered);
                if *at > elapsed && !all_gave_up {
                    break;
                }
                next += 1;
                let sock = if server.is_ipv4() { &v4 } else { &v6 };
                if let Some(sock) = sock {
                    if sock.send_to(query, (*server, 53)).await.is_ok() {
                        asked.push((*server, false));
                    }
                }
            }
            if asked.iter().all(|(_, answered)| *answered) && next >= plan.sends.len() {
                break unhelpful.map_or(Asked::Nothing, Asked::Unhelpful);
            }
            let wake = match plan.sends.get(next) {
                Some((_, at)) => (start + Duration::from_millis(*at)).min(deadline),
                None => deadline,
            };
            let got = tokio::time::timeout_at(wake, async {
                tokio::select! {
                    r = recv_on(v4.as_ref(), &mut b4) => r.map(|(n, from)| (b4[..n].to_vec(), from)),
                    r = recv_on(v6.as_ref(), &mut b6) => r.map(|(n, from)| (b6[..n].to_vec(), from)),
                }
            })
            .await;
            match got {
                Ok(Ok((reply, from))) => {
                    // Only a reply to this query, from a server it went to.
                    let Some(entry) = asked
                        .iter_mut()
                        .find(|(a, done)| !*done && *a == from.ip() && from.port() == 53)
                    else {
                        continue;
                    };
                    if !matches_query(&reply, query) {
                        continue;
                    }
                    entry.1 = true;
                    self.mark_answered(from.ip());
                    if !try_next(&reply) {
                        break Asked::Answer(reply);
                    }
                    unhelpful = Some(reply);
                }
                Ok(Err(_)) => {}
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    break unhelpful.map_or(Asked::Nothing, Asked::Unhelpful);
                }
                Err(_) => {}
            }
        };
        let now = self.ms();
        let mut ups = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        for (server, answered) in asked {
            if !answered
                && matches!(result, Asked::Nothing | Asked::Unhelpful(_))
                && ups.silent(server, now)
            {
                tracing::warn!(%server, "upstream DNS server is not answering; skipping it for a while");
            }
        }
        result
    }

    fn mark_answered(&self, server: IpAddr) {
        let mut ups = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        if ups.answered(server) {
            tracing::info!(%server, "upstream DNS server answers again");
        }
    }

    /// Serves TCP on `addr` until the listener fails.
    ///
    /// Each listener has its own [`MAX_TCP`] connections, so the node's own clients and other
    /// nodes cannot starve each other. When they are all taken, the oldest connection is closed
    /// for the newcomer: whoever holds connections open gains nothing but churn. On the overlay
    /// address each other node may hold [`MAX_TCP_PER_CLIENT`] (local clients share one source
    /// address, so the limit would only let one local user lock out the others).
    pub async fn serve_tcp(self: Arc<Self>, addr: SocketAddr) -> anyhow::Result<()> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve DNS on tcp {addr}: {e}"))?;
        let server_addr = match addr.ip() {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => self.node_addr,
        };
        let per_client = if self.is_overlay_listener(server_addr) {
            MAX_TCP_PER_CLIENT
        } else {
            usize::MAX
        };
        let slots: Arc<Mutex<TcpSlots>> = Arc::default();
        loop {
            let (stream, peer) = listener.accept().await?;
            let Some((id, stop)) = slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .open(peer.ip(), per_client)
            else {
                continue;
            };
            let me = self.clone();
            let slots = slots.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::timeout(TCP_LIFETIME, me.tcp_conn(stream, server_addr)) => {}
                    _ = stop.notified() => {}
                }
                slots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .close(id, peer.ip());
            });
        }
    }

    async fn tcp_conn(&self, mut s: TcpStream, server_addr: Ipv4Addr) -> anyhow::Result<()> {
        loop {
            // A client that sends half a length, or a length and then nothing, loses its slot.
            let len = match tokio::time::timeout(TCP_LENGTH_DEADLINE, s.read_u16()).await {
                Ok(Ok(l)) => usize::from(l),
                _ => return Ok(()),
            };
            let mut q = vec![0u8; len];
            match tokio::time::timeout(TCP_MESSAGE_DEADLINE, s.read_exact(&mut q)).await {
                Ok(Ok(_)) => {}
                _ => return Ok(()),
            }
            let reply = match self.respond_looking_up(&q, server_addr, true).await {
                DnsOutcome::Reply(r) => r,
                DnsOutcome::Drop => return Ok(()),
                DnsOutcome::Forward => match self.forward(&q, true).await {
                    Some(r) => r,
                    None => return Ok(()),
                },
            };
            let n = u16::try_from(reply.len()).unwrap_or(u16::MAX);
            s.write_u16(n).await?;
            s.write_all(&reply[..usize::from(n)]).await?;
        }
    }
}

/// What the upstreams said to one query.
enum Asked {
    /// A reply to pass on.
    Answer(Vec<u8>),
    /// Only SERVFAIL, REFUSED or NOTIMP.
    Unhelpful(Vec<u8>),
    /// Nothing before the deadline.
    Nothing,
}

async fn recv_on(s: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match s {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// The open TCP connections of one listener, oldest first, and how many each client holds.
#[derive(Default)]
struct TcpSlots {
    next: u64,
    open: std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>,
    per_client: HashMap<IpAddr, usize>,
}

impl TcpSlots {
    /// Admits a connection from `ip` if it holds fewer than `limit`, closing the oldest one
    /// when the listener is full; its id and the signal that closes it.
    fn open(&mut self, ip: IpAddr, limit: usize) -> Option<(u64, Arc<tokio::sync::Notify>)> {
        let held = self.per_client.entry(ip).or_insert(0);
        if *held >= limit {
            return None;
        }
        *held += 1;
        if self.open.len() >= MAX_TCP {
            if let Some((_, oldest)) = self.open.pop_front() {
                oldest.notify_one();
            }
        }
        self.next += 1;
        let stop = Arc::new(tokio::sync::Notify::new());
        self.open.push_back((self.next, stop.clone()));
        Some((self.next, stop))
    }

    /// A connection ended (or was closed for a newer one).
    fn close(&mut self, id: u64, ip: IpAddr) {
        if let Some(i) = self.open.iter().position(|(c, _)| *c == id) {
            self.open.remove(i);
        }
        if let Some(n) = self.per_client.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(&ip);
            }
        }
    }
}

/// The nodes that can be named `<node>.<domain>`: this one, and every node with a service.
/// A registry snapshot and the node list derived from it.
type NodesCache = (Arc<Vec<ServiceInstance>>, Arc<Vec<(String, Ipv4Addr)>>);

impl DnsServer {
    fn nodes_for(&self, instances: &Arc<Vec<ServiceInstance>>) -> Arc<Vec<(String, Ipv4Addr)>> {
        let mut cache = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, nodes)) = cache.as_ref() {
            if Arc::ptr_eq(seen, instances) {
                return nodes.clone();
            }
        }
        let nodes = Arc::new(nodes_of(instances, &self.node, self.node_addr));
        *cache = Some((instances.clone(), nodes.clone()));
        nodes
    }
}

/// A blocking UDP socket on `addr` that others may share (SO_REUSEPORT): one receive loop
/// per core.
fn shared_udp_blocking(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn nodes_of(instances: &[ServiceInstance], me: &str, my_addr: Ipv4Addr) -> Vec<(String, Ipv4Addr)> {
    let mut v = vec![(me.to_string(), my_addr)];
    for i in instances {
        if let Some(n) = &i.node {
            if v.iter().all(|(name, _)| name != n) {
                let prefix = overlay_core::net::prefix::Ipv4Prefix::containing(
                    i.address,
                    overlay_core::net::addressing::NODE_PREFIX_LEN,
                );
                v.push((
                    n.clone(),
                    overlay_core::net::addressing::AddressPlan::node_addr(&prefix),
                ));
            }
        }
    }
    v
}

/// Whether `qname` is a single label under `domain` (a name the relay may look up on demand).
fn on_demand_label(qname: &str, domain: &str) -> bool {
    let domain = domain.trim_matches('.');
    qname
        .trim_end_matches('.')
        .strip_suffix(domain)
        .and_then(|r| r.strip_suffix('.'))
        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
}

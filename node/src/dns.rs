//! The node's DNS server on 100.100.100.100:53 and the node address, UDP and TCP.
//!
//! Names in the overlay domain are answered from the synced registry (`overlay_core::dns`);
//! everything else is forwarded to the servers the system used before overlay changed it.

use crate::relaylink::Directory;
use crate::udpbatch::{Peer, Slots};
use overlay_core::dns::{
    answer, on_demand_candidate, AnswerCache, DnsContext, DnsOutcome, EDNS_PAYLOAD,
};
use overlay_core::registry::ServiceInstance;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// Queries forwarded upstream at once; beyond that they are dropped (clients retry).
const MAX_FORWARDS: usize = 256;
/// TCP connections at once.
const MAX_TCP: usize = 64;
/// How long an upstream gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// TTL of overlay answers: short, so moves propagate.
const TTL: u32 = 5;
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
    /// The synced registry.
    pub directory: Arc<Directory>,
    /// Servers for names outside the domain.
    pub upstream: Vec<IpAddr>,
    forwards: Arc<Semaphore>,
    tcp: Arc<Semaphore>,
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
        directory: Arc<Directory>,
        upstream: Vec<IpAddr>,
    ) -> Arc<Self> {
        Arc::new(DnsServer {
            node,
            node_addr,
            domain,
            directory,
            upstream,
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
            tcp: Arc::new(Semaphore::new(MAX_TCP)),
            nodes: std::sync::Mutex::new(None),
        })
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
        };
        (answer(query, &ctx, tcp), on_demand_candidate(query, &ctx))
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
            Some(_) => self.respond(query, server_addr, tcp),
            None => outcome,
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
                me.forward(&query).await
            };
            if let Some(r) = reply {
                let _ = sock.send_to(&r, from);
            }
            drop(permit);
        });
    }

    /// Forwards a query to the upstream servers in turn; the first answer wins.
    async fn forward(&self, query: &[u8]) -> Option<Vec<u8>> {
        for server in &self.upstream {
            let bind: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .ok()?;
            let Ok(sock) = UdpSocket::bind(bind).await else {
                continue;
            };
            if sock.send_to(query, (*server, 53)).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4096];
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv_from(&mut buf)).await
            {
                buf.truncate(n);
                return Some(buf);
            }
        }
        None
    }

    /// Serves TCP on `addr` until the listener fails.
    pub async fn serve_tcp(self: Arc<Self>, addr: SocketAddr) -> anyhow::Result<()> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot serve DNS on tcp {addr}: {e}"))?;
        let server_addr = match addr.ip() {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(_) => self.node_addr,
        };
        loop {
            let (stream, _) = listener.accept().await?;
            let Ok(permit) = self.tcp.clone().try_acquire_owned() else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), me.tcp_conn(stream, server_addr))
                        .await;
                drop(permit);
            });
        }
    }

    async fn tcp_conn(&self, mut s: TcpStream, server_addr: Ipv4Addr) -> anyhow::Result<()> {
        loop {
            let len = match s.read_u16().await {
                Ok(l) => usize::from(l),
                Err(_) => return Ok(()),
            };
            let mut q = vec![0u8; len];
            s.read_exact(&mut q).await?;
            let reply = match self.respond_looking_up(&q, server_addr, true).await {
                DnsOutcome::Reply(r) => r,
                DnsOutcome::Drop => return Ok(()),
                DnsOutcome::Forward => match self.forward(&q).await {
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
                let prefix = overlay_core::prefix::Ipv4Prefix::containing(
                    i.address,
                    overlay_core::addressing::NODE_PREFIX_LEN,
                );
                v.push((
                    n.clone(),
                    overlay_core::addressing::AddressPlan::node_addr(&prefix),
                ));
            }
        }
    }
    v
}

//! The relay's HTTP routing: per request on HTTP/1.1 keep-alive connections ([`http1`], framed
//! by overlay-core's strict parser, bytes forwarded as they came) and per stream on HTTP/2 and
//! gRPC ([`http2`], hyper over h2). A [`Router`] decides where each request goes: the fronts
//! route by intercept headers, the callback Host router by `Host` / `:authority`. Node
//! services are reached through the gateway ([`upstream`]), remote ones directly.
//!
//! Memory per connection is bounded: one request head (32 KiB), fixed copy buffers, at most
//! [`MAX_UPSTREAMS`] upstream connections, and HTTP/2 windows and stream counts set below.

pub mod http1;
pub mod http2;
pub mod upstream;

use crate::gateway::GatewayHandle;
use overlay_core::intercept::Target;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Upstream connections one client connection may hold at once (one per destination and
/// caller): beyond it the least recently used is closed.
pub const MAX_UPSTREAMS: usize = 8;
/// How long a client gets to send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a keep-alive connection may sit between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The HTTP/2 connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A `host:port` in the remote environment.
    Remote(Arc<str>),
    /// A node service, through the gateway.
    Node(Target),
}

/// What a router says about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it there.
    Go(Dest),
    /// Answer it with this status and one sentence.
    Refuse(u16, String),
}

/// What a router sees of a request.
pub struct RequestInfo<'a> {
    /// `Host` (HTTP/1) or `:authority` (HTTP/2).
    pub authority: Option<&'a str>,
    /// Every header field, names as sent.
    pub fields: &'a [(&'a str, &'a str)],
}

impl RequestInfo<'_> {
    /// What the caller's proxy said: `X-Forwarded-For`, else `Forwarded`.
    pub fn forwarded_for(&self) -> Option<String> {
        ["x-forwarded-for", "forwarded"].iter().find_map(|name| {
            let v: Vec<&str> = self
                .fields
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
                .collect();
            (!v.is_empty()).then(|| v.join(", "))
        })
    }
}

/// Counters of one router (shown in metrics).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client connections, ever.
    pub connections: AtomicU64,
    /// Client connections open now.
    pub open: AtomicU64,
    /// Requests sent to the remote environment.
    pub to_remote: AtomicU64,
    /// Requests (or whole connections) sent to node services.
    pub to_node: AtomicU64,
    /// Requests answered with a refusal (no route, malformed, ambiguous framing).
    pub refused: AtomicU64,
    /// Requests whose upstream could not be reached or broke off.
    pub upstream_failed: AtomicU64,
}

impl ProxyStats {
    /// Adds one to `c`.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request by where it went.
    pub fn count(&self, d: &Dest) {
        match d {
            Dest::Remote(_) => Self::inc(&self.to_remote),
            Dest::Node(_) => Self::inc(&self.to_node),
        }
    }
}

/// Decides where each request of a connection goes.
pub trait Router: Send + Sync + 'static {
    /// The decision for one request.
    fn decide(&self, req: &RequestInfo<'_>) -> Decision;
    /// How connections to node services are announced (`front`, `host`).
    fn via(&self) -> &'static str;
    /// Where a connection goes that is not HTTP (or says nothing): `None` closes it.
    fn fallback(&self) -> Option<Dest>;
    /// The counters.
    fn stats(&self) -> &ProxyStats;
}

/// What the first bytes of a connection are.
enum Kind {
    Http2,
    Http1,
    Other,
}

/// Serves one client connection with `router`: HTTP/2 (prior knowledge), HTTP/1.x, or, for
/// anything else (or a client that says nothing for `quiet`), a plain splice to the router's
/// fallback.
pub async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    router: Arc<dyn Router>,
    gw: GatewayHandle,
    quiet: Duration,
) {
    let stats = router.stats();
    ProxyStats::inc(&stats.connections);
    stats.open.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let mut first = Vec::with_capacity(4096);
    let kind = loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout(quiet, client.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                stats.open.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            Ok(Ok(n)) => n,
            Err(_) => break Kind::Other,
        };
        first.extend_from_slice(&chunk[..n]);
        let k = first.len().min(H2_PREFACE.len());
        if first[..k] == H2_PREFACE[..k] {
            if first.len() >= H2_PREFACE.len() {
                break Kind::Http2;
            }
            continue;
        }
        break if overlay_core::http1::looks_like_request(&first) {
            Kind::Http1
        } else {
            Kind::Other
        };
    };
    match kind {
        Kind::Http2 => http2::serve(client, first, peer, router.clone(), gw).await,
        Kind::Http1 => http1::serve(client, first, peer, router.clone(), gw).await,
        Kind::Other => match router.fallback() {
            Some(d) => {
                stats.count(&d);
                upstream::splice_to(client, first, peer, &d, router.via(), &gw).await
            }
            None => ProxyStats::inc(&stats.refused),
        },
    }
    router.stats().open.fetch_sub(1, Ordering::Relaxed);
}

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
use overlay_core::traffic::capture::h2::frame::{flag, kind, FrameHead, PREFACE};
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
    /// The client spoke something else, or said nothing.
    Other,
    /// The destination opened meanwhile spoke first (a protocol where the server speaks first,
    /// or one that closed at once); its bytes.
    ServerFirst(Vec<u8>),
}

/// How [`serve`] waits for a connection's first bytes.
pub enum Sniff {
    /// Wait this long for the client to speak; a client that says nothing goes to the router's
    /// fallback.
    Quiet(Duration),
    /// Open the way to this destination meanwhile (where the connection would go whole): if it
    /// speaks first, the connection is spliced to it at once; if the client speaks HTTP/1 first,
    /// the connection serves a request that goes there; anything else is spliced to it.
    Open(Dest),
}

/// What the sniffing saw of one side.
enum Seen {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    Opened(std::io::Result<upstream::Conn>),
    Silence,
}

/// Serves one client connection with `router`: HTTP/2 (prior knowledge), HTTP/1.x, or, for
/// anything else, a plain splice to the router's fallback (see [`Sniff`] for a client that
/// says nothing).
pub async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    router: Arc<dyn Router>,
    gw: GatewayHandle,
    sniff: Sniff,
) {
    let stats = router.stats();
    ProxyStats::inc(&stats.connections);
    stats.open.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let mut first = Vec::with_capacity(4096);
    let (quiet, opened_to) = match sniff {
        Sniff::Quiet(q) => (q, None),
        Sniff::Open(d) => (HEAD_TIMEOUT, Some(d)),
    };
    let caller = upstream::CallerInfo {
        address: peer,
        forwarded_for: None,
        via: router.via(),
    };
    let (kind, pre, held) = {
        let open = async {
            match &opened_to {
                Some(d) => upstream::open(d, caller, &gw).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(open);
        let mut opening = opened_to.is_some();
        let mut pre: Option<upstream::Conn> = None;
        // An HTTP/2 server's first SETTINGS, held while the client has not spoken: it speaks
        // first too, and only the client's bytes tell whether the connection is HTTP/2.
        let mut held: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut from_server = [0u8; 4096];
        let kind = loop {
            let seen = tokio::time::timeout(quiet, async {
                match pre.as_mut() {
                    Some(up) if held.is_empty() => tokio::select! {
                        r = client.read(&mut chunk) => Seen::Client(r),
                        r = up.read(&mut from_server) => Seen::Server(r),
                    },
                    _ => tokio::select! {
                        r = client.read(&mut chunk) => Seen::Client(r),
                        c = &mut open, if opening => Seen::Opened(c),
                    },
                }
            })
            .await
            .unwrap_or(Seen::Silence);
            let n = match seen {
                Seen::Client(Ok(0)) | Seen::Client(Err(_)) => {
                    stats.open.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                Seen::Client(Ok(n)) => n,
                Seen::Server(r) => {
                    let n = r.unwrap_or(0);
                    let bytes = &from_server[..n];
                    if h2_settings(bytes) {
                        held.extend_from_slice(bytes);
                        continue;
                    }
                    break Kind::ServerFirst(bytes.to_vec());
                }
                Seen::Opened(c) => {
                    opening = false;
                    match c {
                        Ok(c) => pre = Some(c),
                        Err(e) => tracing::debug!(?opened_to, "upstream: {e}"),
                    }
                    continue;
                }
                Seen::Silence => break Kind::Other,
            };
            first.extend_from_slice(&chunk[..n]);
            let k = first.len().min(PREFACE.len());
            if first[..k] == PREFACE[..k] {
                if first.len() >= PREFACE.len() {
                    break Kind::Http2;
                }
                continue;
            }
            break if overlay_core::traffic::http1::looks_like_request(&first) {
                Kind::Http1
            } else {
                Kind::Other
            };
        };
        (kind, pre, held)
    };
    // The way opened meanwhile, with where it goes.
    let pre = match (opened_to, pre) {
        // An HTTP/2 server for an HTTP/1 client: the request opens its own way.
        (Some(_), Some(_)) if !held.is_empty() && !matches!(kind, Kind::Other) => None,
        (Some(d), Some(c)) => Some((d, c)),
        _ => None,
    };
    match kind {
        Kind::Http2 => http2::serve(client, first, peer, router.clone(), gw).await,
        Kind::Http1 => http1::serve(client, first, peer, router.clone(), gw, pre).await,
        Kind::ServerFirst(down) => {
            if let Some((d, c)) = pre {
                stats.count(&d);
                upstream::splice_conn(client, first, down, c).await;
            }
        }
        Kind::Other => match (router.fallback(), pre) {
            (Some(d), Some((p, c))) if d == p => {
                stats.count(&d);
                upstream::splice_conn(client, first, held, c).await
            }
            (Some(d), _) => {
                stats.count(&d);
                upstream::splice_to(client, first, peer, &d, router.via(), &gw).await
            }
            (None, _) => ProxyStats::inc(&stats.refused),
        },
    }
    router.stats().open.fetch_sub(1, Ordering::Relaxed);
}

/// Whether `b` starts with an HTTP/2 SETTINGS frame that is not an acknowledgement (what an
/// HTTP/2 server sends as soon as a connection opens).
fn h2_settings(b: &[u8]) -> bool {
    let Some(h) = b.get(..9).and_then(|h| <&[u8; 9]>::try_from(h).ok()) else {
        return false;
    };
    let head = FrameHead::parse(h);
    // Stream 0 exactly, the reserved bit included.
    head.kind == kind::SETTINGS && !head.has(flag::ACK) && h[5..9] == [0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::h2_settings;

    #[test]
    fn an_h2_servers_first_settings_are_told_from_other_first_bytes() {
        // SETTINGS with one setting (MAX_CONCURRENT_STREAMS = 100), as servers send it.
        let settings = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        assert!(h2_settings(&settings));
        assert!(h2_settings(&[0, 0, 0, 4, 0, 0, 0, 0, 0]), "empty SETTINGS");
        assert!(
            !h2_settings(&[0, 0, 0, 4, 1, 0, 0, 0, 0]),
            "an acknowledgement"
        );
        assert!(
            !h2_settings(&[0, 0, 0, 4, 0, 0, 0, 0, 1]),
            "not on stream 0"
        );
        assert!(!h2_settings(b"220 smtp.example.com ESMTP\r\n"));
        assert!(!h2_settings(b"banner\n"));
        assert!(!h2_settings(&[0, 0, 6, 4]), "too short");
    }
}

//! HTTP/2 (prior knowledge, as gRPC and `curl --http2-prior-knowledge` speak it) routed per
//! stream. hyper terminates the client's connection (HPACK, flow control, trailers); each
//! stream's request goes to its destination over an HTTP/2 connection the relay opens there
//! (one per destination and caller, kept for the client connection's life), bodies and
//! trailers streamed through. A stream the router refuses gets its own error response; the
//! connection's other streams go on.
//!
//! Why hyper: it is the maintained HTTP stack of the tokio ecosystem (on the h2 crate, which
//! does the framing and flow control), it streams bodies with trailers both ways (gRPC's status
//! is a trailer), and server and client come from one crate; the h2 crate alone would leave
//! body pumping and window management to us.

use super::upstream::{self, Conn};
use super::{Decision, Dest, ProxyStats, RequestInfo, Router, MAX_UPSTREAMS};
use crate::gateway::{CallerInfo, GatewayHandle};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Streams a client may have open at once.
const MAX_STREAMS: u32 = 256;
/// Flow-control windows: per stream and per connection (they bound what is buffered).
const STREAM_WINDOW: u32 = 256 * 1024;
const CONN_WINDOW: u32 = 1024 * 1024;
/// Largest header list accepted.
const MAX_HEADER_LIST: u32 = 32 * 1024;

type Body = BoxBody<Bytes, hyper::Error>;

/// An open upstream connection: where it goes, the `X-Forwarded-For` it was opened for (a
/// node hears of the caller per connection), and its request sender.
type Upstream = (Dest, Option<String>, SendRequest<Incoming>);

/// The client connection's way to its destinations.
struct Upstreams {
    list: Mutex<Vec<Upstream>>,
    peer: SocketAddr,
    router: Arc<dyn Router>,
    gw: GatewayHandle,
}

/// Serves HTTP/2 streams on `client` (`first`: bytes already read, the preface at least).
pub async fn serve(
    client: TcpStream,
    first: Vec<u8>,
    peer: SocketAddr,
    router: Arc<dyn Router>,
    gw: GatewayHandle,
) {
    let ups = Arc::new(Upstreams {
        list: Mutex::new(Vec::new()),
        peer,
        router,
        gw,
    });
    let io = TokioIo::new(Prefixed {
        first,
        at: 0,
        inner: client,
    });
    let service = hyper::service::service_fn(move |req| {
        let ups = ups.clone();
        async move { Ok::<_, Infallible>(ups.forward(req).await) }
    });
    let r = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_send_buf_size(STREAM_WINDOW as usize)
        .serve_connection(io, service)
        .await;
    if let Err(e) = r {
        tracing::debug!(%peer, "http/2 connection: {e}");
    }
}

impl Upstreams {
    /// Routes and forwards one stream.
    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let stats = self.router.stats();
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
        let fields: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("")))
            .collect();
        let info = RequestInfo {
            authority: authority.as_deref(),
            fields: &fields,
        };
        let dest = match self.router.decide(&info) {
            Decision::Go(d) => d,
            Decision::Refuse(status, why) => {
                ProxyStats::inc(&stats.refused);
                return refusal(status, &why);
            }
        };
        let forwarded_for = info.forwarded_for();
        drop(fields);
        stats.count(&dest);
        // A kept connection may have gone away: one more try on a fresh one.
        let mut req = Some(req);
        for _ in 0..2 {
            let Some(mut sender) = self.sender(&dest, &forwarded_for).await else {
                break;
            };
            if sender.ready().await.is_err() {
                self.forget(&dest, &forwarded_for).await;
                continue;
            }
            let Some(r) = req.take() else { break };
            return match sender.send_request(r).await {
                Ok(resp) => resp.map(|b| b.boxed()),
                Err(e) => {
                    tracing::debug!(?dest, "http/2 upstream: {e}");
                    ProxyStats::inc(&stats.upstream_failed);
                    refusal(502, &format!("the request to {} failed", name(&dest)))
                }
            };
        }
        ProxyStats::inc(&stats.upstream_failed);
        refusal(502, &format!("the relay could not reach {}", name(&dest)))
    }

    /// The HTTP/2 connection to `dest` for this caller, opened when needed.
    async fn sender(
        &self,
        dest: &Dest,
        forwarded_for: &Option<String>,
    ) -> Option<SendRequest<Incoming>> {
        let mut list = self.list.lock().await;
        if let Some((_, _, s)) = list
            .iter()
            .find(|(d, f, s)| d == dest && f == forwarded_for && !s.is_closed())
        {
            return Some(s.clone());
        }
        list.retain(|(_, _, s)| !s.is_closed());
        if list.len() >= MAX_UPSTREAMS {
            list.remove(0);
        }
        let caller = CallerInfo {
            address: self.peer,
            forwarded_for: forwarded_for.clone(),
            via: self.router.via(),
        };
        let conn: Conn = match upstream::open(dest, caller, &self.gw).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(?dest, "http/2 upstream: {e}");
                return None;
            }
        };
        let (sender, driver) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_send_buf_size(STREAM_WINDOW as usize)
            .handshake(TokioIo::new(conn))
            .await
            .map_err(|e| tracing::debug!(?dest, "http/2 handshake: {e}"))
            .ok()?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        list.push((dest.clone(), forwarded_for.clone(), sender.clone()));
        Some(sender)
    }

    async fn forget(&self, dest: &Dest, forwarded_for: &Option<String>) {
        self.list
            .lock()
            .await
            .retain(|(d, f, _)| !(d == dest && f == forwarded_for));
    }
}

fn name(d: &Dest) -> String {
    match d {
        Dest::Remote(a) => a.to_string(),
        Dest::Node(t) => format!("node {}'s service", t.node),
    }
}

/// A response of its own for a refused or failed stream (gRPC clients read the status).
fn refusal(status: u16, why: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{why}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

/// A connection whose first bytes were already read.
struct Prefixed {
    first: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.at < me.first.len() {
            let n = (me.first.len() - me.at).min(buf.remaining());
            buf.put_slice(&me.first[me.at..me.at + n]);
            me.at += n;
            if me.at == me.first.len() {
                me.first = Vec::new();
                me.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, b)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

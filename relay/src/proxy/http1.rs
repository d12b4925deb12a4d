//! HTTP/1.x routed per request. Each request head is read with overlay-core's parser (strict
//! framing: a request whose length servers could read in two ways is refused, never guessed),
//! the router picks its destination, and the request's bytes go there exactly as they came,
//! the body framed by the parser; the response comes back the same way. A keep-alive
//! connection can so send one request to the remote service and the next to a laptop.
//! Upgrades (101, CONNECT) turn into a plain splice with the destination of their request.
//!
//! The per-request work is kept small because a front sits in every request of the remote
//! environment's callers (issue 21, measured with `perf record` in the bench part
//! `intercept`): upstream halves are borrowed (no lock between them), the client's reads share
//! one timer per connection, and each chunk of a response is written with one call. (Bodies
//! moved with splice(2) were tried: no less CPU per 1 MiB response on the bench host, where
//! the TCP stack's send path, not the copy, is the cost.)

use super::upstream::{self, Conn, ConnRead, ConnWrite};
use super::{Decision, Dest, ProxyStats, RequestInfo, Router};
use super::{HEAD_TIMEOUT, IDLE_TIMEOUT, MAX_UPSTREAMS};
use crate::gateway::{CallerInfo, GatewayHandle};
use overlay_core::traffic::http1::{Head, HttpError, Kind, Limits, MessageParser};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Parser limits: heads only (bodies are forwarded, never kept).
const LIMITS: Limits = Limits {
    body_cap: 0,
    max_head_bytes: 32 * 1024,
    max_headers: 128,
};
/// Read size from either side.
const CHUNK: usize = 32 * 1024;
/// Methods a request may be sent again with after a kept connection turned out closed.
const IDEMPOTENT: &[&str] = &["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];

/// An upstream connection kept for later requests: where it goes and for which caller (a
/// connection to a node carries one caller, announced when it opened).
struct Upstream {
    dest: Dest,
    forwarded_for: Option<String>,
    conn: Conn,
    reused: bool,
}

/// How an exchange ended.
enum After {
    /// The connection may carry another request.
    KeepAlive,
    /// Close the client connection.
    Close,
}

/// Why an exchange could not be completed.
enum Failure {
    /// Answer the client with this status and sentence, then close.
    Answer(u16, String),
    /// Close without an answer (a response was already under way, or the client left).
    Abort,
}

/// A response relayed to the client.
struct Response {
    /// It ends the connection (`Connection: close`, HTTP/1.0, a body delimited by the close).
    close: bool,
    /// The connection switched protocols (101, or CONNECT's 2xx).
    upgraded: bool,
    /// Bytes the upstream sent after it (an upgraded protocol's first bytes).
    leftover: Vec<u8>,
}

/// Why relaying a response failed; `started`: some of it reached the client.
enum ResponseError {
    Upstream { started: bool },
    Client,
}

/// The client's read deadline: one tokio timer per connection. Each read only moves `at`;
/// the timer is re-armed when it fires before `at` (at most once per timeout), instead of a
/// timer armed and cancelled around every read (a per-request cost `perf` showed).
struct Deadline {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    fn new() -> Deadline {
        let at = Instant::now() + HEAD_TIMEOUT;
        Deadline {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// The next read may wait `d` from now.
    fn start(&mut self, d: Duration) {
        self.at = Instant::now() + d;
        if self.at < self.sleep.deadline() {
            self.sleep.as_mut().reset(self.at);
        }
    }

    /// Resolves when `at` has passed.
    async fn expired(&mut self) {
        loop {
            self.sleep.as_mut().await;
            if self.sleep.deadline() >= self.at {
                return;
            }
            let at = self.at;
            self.sleep.as_mut().reset(at);
        }
    }
}

/// What one client connection keeps between its requests (allocated once per connection).
struct ClientIo {
    /// Bytes read from the client, not yet parsed.
    buf: Vec<u8>,
    /// The current request's bytes as they came, until its destination is known.
    raw: Vec<u8>,
    /// The responses' read buffer.
    scratch: Vec<u8>,
    deadline: Deadline,
}

/// Serves HTTP/1.x requests on `client` (`first`: bytes already read) until it closes; `pre`
/// is a connection already open to a destination, for the requests that go there.
pub async fn serve(
    mut client: TcpStream,
    first: Vec<u8>,
    peer: SocketAddr,
    router: Arc<dyn Router>,
    gw: GatewayHandle,
    pre: Option<(Dest, Conn)>,
) {
    let mut pool: Vec<Upstream> = Vec::new();
    if let Some((dest, conn)) = pre {
        pool.push(Upstream {
            dest,
            forwarded_for: None,
            conn,
            // Like a kept connection: should it have closed meanwhile, a new one is opened.
            reused: true,
        });
    }
    let mut wait = HEAD_TIMEOUT;
    let mut io = ClientIo {
        buf: first,
        raw: Vec::new(),
        scratch: vec![0u8; CHUNK],
        deadline: Deadline::new(),
    };
    loop {
        let r = exchange(&mut client, &mut io, &mut pool, peer, &*router, &gw, wait).await;
        wait = IDLE_TIMEOUT;
        match r {
            Ok(After::KeepAlive) => {}
            Ok(After::Close) => break,
            Err(Failure::Answer(status, why)) => {
                ProxyStats::inc(&router.stats().refused);
                let _ = answer(&mut client, status, &why).await;
                break;
            }
            Err(Failure::Abort) => break,
        }
    }
    let _ = client.shutdown().await;
}

/// One request and its response.
async fn exchange(
    client: &mut TcpStream,
    io: &mut ClientIo,
    pool: &mut Vec<Upstream>,
    peer: SocketAddr,
    router: &dyn Router,
    gw: &GatewayHandle,
    wait: Duration,
) -> Result<After, Failure> {
    let mut parser = MessageParser::new(Kind::Request, LIMITS);
    io.raw.clear();
    let mut complete = false;
    let head = loop {
        if io.buf.is_empty() {
            let timeout = if parser.in_message() {
                HEAD_TIMEOUT
            } else {
                wait
            };
            if read_into(client, &mut io.buf, &mut io.deadline, timeout).await? == 0 {
                return if parser.in_message() {
                    Err(Failure::Abort)
                } else {
                    Ok(After::Close)
                };
            }
        }
        let (used, done) = parser.parse(&io.buf).map_err(bad_request)?;
        if used == io.buf.len() && io.raw.is_empty() {
            // The usual case, a whole request in one read: no copy.
            std::mem::swap(&mut io.raw, &mut io.buf);
            io.buf.clear();
        } else {
            io.raw.extend_from_slice(&io.buf[..used]);
            io.buf.drain(..used);
        }
        if let Some(m) = done {
            complete = true;
            break m.head;
        }
        if let Some(h) = parser.current_head() {
            break h.clone();
        }
    };
    let fields: Vec<(&str, &str)> = head.headers.iter().collect();
    let info = RequestInfo {
        authority: head.header("host"),
        fields: &fields,
    };
    let dest = match router.decide(&info) {
        Decision::Go(d) => d,
        Decision::Refuse(status, why) => return Err(Failure::Answer(status, why)),
    };
    let forwarded_for = info.forwarded_for();
    router.stats().count(&dest);
    let caller = CallerInfo {
        address: peer,
        forwarded_for: forwarded_for.clone(),
        via: router.via(),
    };
    let mut up = take(pool, &dest, &forwarded_for, caller.clone(), router, gw).await?;
    let retry = complete
        && head
            .method
            .as_deref()
            .is_some_and(|m| IDEMPOTENT.contains(&m));
    let mut sent = up.conn.write_all(&io.raw).await.is_ok();
    if !sent && up.reused {
        // A kept connection the service had closed: a new one.
        up = take(
            &mut Vec::new(),
            &dest,
            &forwarded_for,
            caller.clone(),
            router,
            gw,
        )
        .await?;
        sent = up.conn.write_all(&io.raw).await.is_ok();
    }
    if !sent {
        ProxyStats::inc(&router.stats().upstream_failed);
        return Err(Failure::Answer(502, unreachable(&dest)));
    }
    let (cr, cw) = client.split();
    let mut state = Exchange {
        cr,
        cw,
        io,
        parser: &mut parser,
        head: &head,
    };
    let mut result = state.run(&mut up, complete).await;
    if let Err((ResponseError::Upstream { started: false }, true)) = &result {
        if up.reused && retry {
            up = take(&mut Vec::new(), &dest, &forwarded_for, caller, router, gw).await?;
            result = match up.conn.write_all(&state.io.raw).await {
                Ok(()) => state.run(&mut up, true).await,
                Err(_) => Err((ResponseError::Upstream { started: false }, true)),
            };
        }
    }
    let (response, body_done) = match result {
        Ok(r) => r,
        Err((ResponseError::Upstream { started }, _)) => {
            ProxyStats::inc(&router.stats().upstream_failed);
            return if started {
                Err(Failure::Abort)
            } else {
                Err(Failure::Answer(502, unreachable(&dest)))
            };
        }
        Err((ResponseError::Client, _)) => return Err(Failure::Abort),
    };
    if response.upgraded {
        let Exchange { cr, cw, io, .. } = state;
        tunnel(cr, cw, std::mem::take(&mut io.buf), response.leftover, up).await;
        return Ok(After::Close);
    }
    let close = response.close || !body_done || wants_close(&head);
    if !close {
        up.reused = true;
        pool.push(up);
    }
    Ok(if close {
        After::Close
    } else {
        After::KeepAlive
    })
}

/// The client's halves and the request, while one exchange runs.
struct Exchange<'a> {
    cr: tcp::ReadHalf<'a>,
    cw: tcp::WriteHalf<'a>,
    io: &'a mut ClientIo,
    parser: &'a mut MessageParser,
    head: &'a Head,
}

impl Exchange<'_> {
    /// Sends the rest of the request's body up while the response comes down. The response
    /// decides: when it is complete the exchange is over, and a body not sent in full means
    /// the connection must close (its next request cannot be found). Also returns whether the
    /// body was complete; an error says whether the body was.
    async fn run(
        &mut self,
        up: &mut Upstream,
        complete: bool,
    ) -> Result<(Response, bool), (ResponseError, bool)> {
        let ClientIo {
            buf,
            scratch,
            deadline,
            ..
        } = &mut *self.io;
        let (mut ur, mut uw) = up.conn.halves();
        let body = pump_body(&mut self.cr, buf, deadline, self.parser, &mut uw, complete);
        let response = relay_response(&mut ur, &mut self.cw, self.head, scratch);
        tokio::pin!(body, response);
        let mut body_done = complete;
        let mut body_failed = false;
        loop {
            tokio::select! {
                r = &mut body, if !body_done && !body_failed => match r {
                    Ok(()) => body_done = true,
                    // The client left or sent a broken body: the response may still come.
                    Err(()) => body_failed = true,
                },
                r = &mut response => return r.map(|r| (r, body_done)).map_err(|e| (e, body_done)),
            }
        }
    }
}

/// Forwards the request body as the parser frames it; `Err` when the client left, broke the
/// framing or the upstream stopped taking it.
async fn pump_body(
    cr: &mut tcp::ReadHalf<'_>,
    buf: &mut Vec<u8>,
    deadline: &mut Deadline,
    parser: &mut MessageParser,
    up: &mut ConnWrite<'_>,
    complete: bool,
) -> Result<(), ()> {
    if complete {
        return Ok(());
    }
    loop {
        if buf.is_empty() {
            match read_into(cr, buf, deadline, IDLE_TIMEOUT).await {
                Ok(n) if n > 0 => {}
                _ => return Err(()),
            }
        }
        let (used, done) = parser.parse(buf).map_err(|_| ())?;
        up.write_all(&buf[..used]).await.map_err(|_| ())?;
        buf.drain(..used);
        if done.is_some() {
            return Ok(());
        }
        if used == 0 {
            return Err(());
        }
    }
}

/// Relays the response to `head` (interim ones included) from `up` to the client.
async fn relay_response(
    up: &mut ConnRead<'_>,
    cw: &mut tcp::WriteHalf<'_>,
    head: &Head,
    chunk: &mut [u8],
) -> Result<Response, ResponseError> {
    let mut rp = MessageParser::new(Kind::Response, LIMITS);
    rp.expect_response_to(head);
    let connect = head.method.as_deref() == Some("CONNECT");
    let mut started = false;
    loop {
        let n = up
            .read(chunk)
            .await
            .map_err(|_| ResponseError::Upstream { started })?;
        if n == 0 {
            // A body delimited by the close ends here; anything else was cut off.
            return match rp.finish() {
                Some(_) => Ok(Response {
                    close: true,
                    upgraded: false,
                    leftover: Vec::new(),
                }),
                None => Err(ResponseError::Upstream { started }),
            };
        }
        // Parse the whole chunk, then write what belongs to the response with one call.
        let mut at = 0;
        let mut broken = false;
        let mut end = None;
        while at < n {
            let Ok((used, msg)) = rp.parse(&chunk[at..n]) else {
                broken = true;
                break;
            };
            at += used;
            let Some(m) = msg else {
                if used == 0 {
                    broken = true;
                    break;
                }
                continue;
            };
            let status = m.head.status.unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                rp.expect_response_to(head);
                continue;
            }
            end = Some(m);
            break;
        }
        if at > 0 {
            cw.write_all(&chunk[..at])
                .await
                .map_err(|_| ResponseError::Client)?;
            started = true;
        }
        if broken {
            return Err(ResponseError::Upstream { started });
        }
        if let Some(m) = end {
            let status = m.head.status.unwrap_or(0);
            let upgraded = status == 101 || (connect && (200..300).contains(&status));
            return Ok(Response {
                close: upgraded || wants_close(&m.head),
                upgraded,
                leftover: chunk[at..n].to_vec(),
            });
        }
    }
}

/// After an upgrade: both ways as plain bytes until either side ends.
async fn tunnel(
    mut cr: tcp::ReadHalf<'_>,
    mut cw: tcp::WriteHalf<'_>,
    pending_up: Vec<u8>,
    pending_down: Vec<u8>,
    mut up: Upstream,
) {
    let (mut read, mut write) = up.conn.halves();
    let upward = async {
        if write.write_all(&pending_up).await.is_ok() {
            let _ = tokio::io::copy(&mut cr, &mut write).await;
        }
        let _ = write.shutdown().await;
    };
    let downward = async {
        if cw.write_all(&pending_down).await.is_ok() {
            let _ = tokio::io::copy(&mut read, &mut cw).await;
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(upward, downward);
}

/// The kept connection to `dest` for this caller, or a new one.
async fn take(
    pool: &mut Vec<Upstream>,
    dest: &Dest,
    forwarded_for: &Option<String>,
    caller: CallerInfo,
    router: &dyn Router,
    gw: &GatewayHandle,
) -> Result<Upstream, Failure> {
    // A connection to a node carries the caller announced when it opened; one into the remote
    // environment carries no such thing.
    let fits = |u: &Upstream| {
        &u.dest == dest && (matches!(dest, Dest::Remote(_)) || &u.forwarded_for == forwarded_for)
    };
    if let Some(i) = pool.iter().position(fits) {
        return Ok(pool.remove(i));
    }
    if pool.len() >= MAX_UPSTREAMS {
        pool.remove(0);
    }
    match upstream::open(dest, caller, gw).await {
        Ok(conn) => Ok(Upstream {
            dest: dest.clone(),
            forwarded_for: forwarded_for.clone(),
            conn,
            reused: false,
        }),
        Err(e) => {
            tracing::debug!(?dest, "upstream: {e}");
            ProxyStats::inc(&router.stats().upstream_failed);
            Err(Failure::Answer(502, unreachable(dest)))
        }
    }
}

fn unreachable(d: &Dest) -> String {
    match d {
        Dest::Remote(a) => format!("the relay could not reach {a}"),
        Dest::Node(t) => format!("the relay could not reach node {}'s service", t.node),
    }
}

/// Reads more from `r` into `buf`, waiting at most `timeout`; the bytes read (0: closed).
async fn read_into<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    deadline: &mut Deadline,
    timeout: Duration,
) -> Result<usize, Failure> {
    deadline.start(timeout);
    // Straight into `buf`: it is drained as it is parsed, so this stays about one read.
    buf.reserve(8192);
    tokio::select! {
        biased;
        r = r.read_buf(buf) => r.map_err(|_| Failure::Abort),
        () = deadline.expired() => Err(Failure::Abort),
    }
}

fn bad_request(e: HttpError) -> Failure {
    let status = match e {
        HttpError::HeadTooLarge(_) | HttpError::TooManyHeaders(_) => 431,
        _ => 400,
    };
    Failure::Answer(status, format!("the relay could not read the request: {e}"))
}

/// Whether the message ends its connection (`Connection: close`, or HTTP/1.0 without
/// `keep-alive`).
fn wants_close(head: &Head) -> bool {
    let tokens = |want: &str| {
        head.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    tokens("close") || (head.version == "HTTP/1.0" && !tokens("keep-alive"))
}

/// Answers with `status` and one sentence, closing.
async fn answer<W: AsyncWrite + Unpin>(w: &mut W, status: u16, why: &str) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        404 => "Not Found",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!("{why}\n");
    let r = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    w.write_all(r.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&str, &str)], version: &str) -> Head {
        Head {
            method: Some("POST".into()),
            target: Some("/".into()),
            version: version.to_string().into(),
            headers: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Head::default()
        }
    }

    #[tokio::test]
    async fn the_deadline_follows_the_last_start_with_one_timer() {
        let mut d = Deadline::new();
        // Earlier than the timer: it is re-armed.
        let t0 = Instant::now();
        d.start(Duration::from_millis(20));
        d.expired().await;
        assert!(t0.elapsed() >= Duration::from_millis(20));
        // Later than the timer: the timer fires early and re-arms itself to the new deadline.
        d.start(Duration::from_millis(10));
        d.start(Duration::from_millis(150));
        let early = tokio::time::timeout(Duration::from_millis(60), d.expired()).await;
        assert!(early.is_err(), "expired before the moved deadline");
        d.expired().await;
        assert!(Instant::now() >= d.at);
    }

    /// The parser refuses framing that servers read in different ways (request smuggling
    /// material) before the request goes anywhere; the relay answers with its reason.
    #[test]
    fn ambiguous_framing_is_answered_with_a_400_and_its_reason() {
        let answer = |req: &str| {
            let mut p = MessageParser::new(Kind::Request, LIMITS);
            match p.parse(req.as_bytes()).map_err(bad_request) {
                Err(Failure::Answer(status, why)) => Some((status, why)),
                _ => None,
            }
        };
        for (req, why) in [
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                "both Content-Length and Transfer-Encoding",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n",
                "more than one Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
                "more than one Content-Length",
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding in an HTTP/1.0 request",
            ),
        ] {
            assert_eq!(
                answer(req),
                Some((
                    400,
                    format!("the relay could not read the request: ambiguous framing: {why}")
                )),
                "{req:?}"
            );
        }
        for fine in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            assert_eq!(answer(fine), None, "{fine:?}");
        }
    }

    #[test]
    fn close_follows_connection_and_version() {
        assert!(wants_close(&head(
            &[("Connection", "keep-alive, Close")],
            "HTTP/1.1"
        )));
        assert!(!wants_close(&head(&[], "HTTP/1.1")));
        assert!(wants_close(&head(&[], "HTTP/1.0")));
        assert!(!wants_close(&head(
            &[("connection", "keep-alive")],
            "HTTP/1.0"
        )));
    }
}

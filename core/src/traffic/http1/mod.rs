//! An incremental HTTP/1.x parser for both directions of one TCP connection, for the traffic
//! inspector.
//!
//! [`Conversation`] takes the bytes of each direction as they are seen ([`Conversation::feed`])
//! and gives back finished [`Exchange`]s and the connection's fate ([`Conversation::poll`]). It
//! handles pipelining, chunked and content-length bodies, bodies delimited by the connection's
//! end, `HEAD`, 1xx/204/304 responses, and upgrades (`101 Switching Protocols`, `CONNECT`): after
//! an upgrade the rest of the connection is opaque and only counted.
//!
//! Bodies are kept up to [`Limits::body_cap`] bytes (their full length is still counted, and the
//! message is marked truncated); head sections are limited in size and header count. Memory per
//! conversation is bounded by those limits and [`MAX_PIPELINED`]. Nothing here panics on input:
//! malformed bytes end HTTP parsing with an [`HttpError`] and the rest is counted as opaque.

mod body;
mod fields;
mod message;
#[cfg(test)]
mod tests;

pub use body::BodyBuf;
pub use fields::Fields;
pub use message::{
    common_text, is_tchar, looks_like_request, request_framing, text, Framing, Head, HttpError,
    Kind, Limits, Message, MessageParser, Parsed, OBS_FOLD,
};

use bytes::Bytes;
use std::collections::VecDeque;

/// Requests waiting for their response at once; more are answered out of the capture.
pub const MAX_PIPELINED: usize = 64;
/// Client bytes held while an upgrade request waits for its answer.
pub const MAX_HELD: usize = 64 * 1024;

/// The two directions of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Client to server (requests).
    Client,
    /// Server to client (responses).
    Server,
}

/// A request with its response, as far as it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The request.
    pub request: Message,
    /// The response, if one came.
    pub response: Option<Message>,
    /// When the request's first byte was seen (caller's clock, ms).
    pub started_ms: u64,
    /// When the response's last byte was seen.
    pub ended_ms: Option<u64>,
    /// Why parsing stopped on this exchange, if it did.
    pub error: Option<String>,
}

/// What the connection turned out to carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Nothing seen yet.
    Unknown,
    /// HTTP/1.x throughout.
    Http,
    /// HTTP upgraded to WebSocket.
    Websocket,
    /// HTTP/2 (prior knowledge, or after an `Upgrade: h2c`).
    Http2,
    /// HTTP upgraded to something else, or a CONNECT tunnel.
    Upgraded,
    /// Began as HTTP, then bytes that are not.
    MalformedHttp,
    /// Not HTTP from the start.
    Tcp,
}

impl Protocol {
    /// Its name in JSON and in `overlay traffic` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Unknown => "unknown",
            Protocol::Http => "http",
            Protocol::Websocket => "websocket",
            Protocol::Http2 => "http2",
            Protocol::Upgraded => "upgraded",
            Protocol::MalformedHttp => "malformed_http",
            Protocol::Tcp => "tcp",
        }
    }
}

/// What a connection was upgraded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeKind {
    /// `Upgrade: websocket`.
    Websocket,
    /// `Upgrade: h2c`.
    H2c,
    /// Anything else, or a CONNECT tunnel.
    Other,
}

/// A switch of protocols (`101`, or a `2xx` to CONNECT): what follows is not HTTP/1.x.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// To what.
    pub kind: UpgradeKind,
    /// The request that asked for it.
    pub request: Message,
    /// When that request began.
    pub started_ms: u64,
    /// Bytes of each side (client, server) already seen after the switch.
    pub tails: [Vec<u8>; 2],
}

/// Output of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A finished (or abandoned) exchange.
    Exchange(Exchange),
}

/// Both directions of one connection.
#[derive(Debug)]
pub struct Conversation {
    limits: Limits,
    client: MessageParser,
    server: MessageParser,
    /// Requests parsed, waiting for a response, with their start time.
    pending: VecDeque<(Message, u64)>,
    /// Method of the requests the server parser has not answered yet, in order.
    protocol: Protocol,
    /// Set when HTTP parsing stopped: everything after is opaque.
    opaque: bool,
    /// Why it stopped.
    error: Option<String>,
    client_started: Option<u64>,
    /// A final response that came before its request's body ended.
    early: Option<(Message, u64)>,
    /// Client bytes that came while an upgrade request waited for its answer.
    held: Vec<u8>,
    /// Some of them did not fit.
    held_overflow: bool,
    /// The switch of protocols, once the server agreed, until taken.
    upgrade: Option<Upgrade>,
    out: VecDeque<Output>,
    /// Bytes seen per direction.
    pub bytes_client: u64,
    /// Bytes seen from the server.
    pub bytes_server: u64,
}

impl Conversation {
    /// A conversation with the given limits.
    pub fn new(limits: Limits) -> Self {
        Conversation {
            client: MessageParser::new(Kind::Request, limits),
            server: MessageParser::new(Kind::Response, limits),
            limits,
            pending: VecDeque::new(),
            protocol: Protocol::Unknown,
            opaque: false,
            error: None,
            client_started: None,
            early: None,
            held: Vec::new(),
            held_overflow: false,
            upgrade: None,
            out: VecDeque::new(),
            bytes_client: 0,
            bytes_server: 0,
        }
    }

    /// What the connection carries so far.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Why HTTP parsing stopped, if it did.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The switch of protocols, once (the caller follows the rest of the connection).
    pub fn take_upgrade(&mut self) -> Option<Upgrade> {
        self.upgrade.take()
    }

    /// Feeds bytes seen from `side` at `now_ms`.
    pub fn feed(&mut self, side: Side, data: &[u8], now_ms: u64) {
        self.feed_in(side, data, None, now_ms);
    }

    /// Feeds bytes seen from `side` at `now_ms` that lie in `chunk`, a read the caller shares:
    /// a response's body that lies whole in it is kept as a view of it, not copied. Exchanges
    /// given out by the next [`poll`](Self::poll)s may hold such views; a response that waits
    /// for its request's end gets a copy of its own.
    pub fn feed_in(&mut self, side: Side, data: &[u8], chunk: Option<&Bytes>, now_ms: u64) {
        let shared = side == Side::Server && chunk.is_some();
        if shared {
            self.server.set_chunk(chunk);
        }
        self.count(side, data);
        self.parse(side, data, now_ms);
        if shared {
            self.server.set_chunk(None);
        }
    }

    fn count(&mut self, side: Side, data: &[u8]) {
        match side {
            Side::Client => self.bytes_client += data.len() as u64,
            Side::Server => self.bytes_server += data.len() as u64,
        }
    }

    fn parse(&mut self, side: Side, mut data: &[u8], now_ms: u64) {
        if side == Side::Client && self.client.is_paused() && !self.opaque {
            self.hold(data);
            return;
        }
        if self.protocol == Protocol::Unknown && side == Side::Client && !data.is_empty() {
            self.protocol = if message::looks_like_request(data) {
                Protocol::Http
            } else {
                Protocol::Tcp
            };
            if self.protocol == Protocol::Tcp {
                self.opaque = true;
            }
        }
        if self.protocol == Protocol::Unknown && side == Side::Server && !data.is_empty() {
            // The server spoke first: not a protocol we parse.
            self.protocol = Protocol::Tcp;
            self.opaque = true;
        }
        while !data.is_empty() && !self.opaque {
            let step = match side {
                Side::Client => {
                    if self.client.is_paused() {
                        self.hold(data);
                        break;
                    }
                    if self.client.is_idle() {
                        self.client_started.get_or_insert(now_ms);
                    }
                    self.client.parse_in(data)
                }
                Side::Server => {
                    if self.server.is_idle() {
                        // The response parser needs to know what it answers.
                        // A response may also come while the request's body is still being
                        // sent (`100 Continue`, an early error).
                        let answered = self
                            .pending
                            .front()
                            .map(|(req, _)| &req.head)
                            .or_else(|| self.client.current_head());
                        match answered {
                            Some(head) => self.server.expect_response_to(head),
                            None => {
                                self.stop("a response came without a request".into(), None);
                                break;
                            }
                        }
                    }
                    self.server.parse_in(data)
                }
            };
            let (used, ended) = match step {
                Ok(x) => x,
                Err(e) => {
                    self.stop(e.to_string(), Some(side));
                    break;
                }
            };
            data = data.get(used..).unwrap_or(&[]);
            if !ended {
                if used == 0 {
                    break;
                }
                continue;
            }
            match side {
                Side::Client => {
                    let msg = self.client.take_message();
                    self.request_done(msg, now_ms)
                }
                Side::Server => {
                    let msg = self.server.take_message();
                    self.response_done(msg, now_ms)
                }
            }
            if let Some(u) = self.upgrade.as_mut() {
                // What the server sent after the switch belongs to the new protocol.
                if side == Side::Server && u.tails[1].is_empty() {
                    u.tails[1] = data.to_vec();
                }
                break;
            }
        }
    }

    /// An upgrade or CONNECT waits for its answer: whose protocol these client bytes speak
    /// is not known yet.
    fn hold(&mut self, data: &[u8]) {
        let room = MAX_HELD.saturating_sub(self.held.len());
        self.held_overflow |= data.len() > room;
        self.held
            .extend_from_slice(data.get(..room.min(data.len())).unwrap_or(&[]));
    }

    fn request_done(&mut self, msg: Message, now_ms: u64) {
        let started = self.client_started.take().unwrap_or(now_ms);
        let connect = msg.head.method.as_deref() == Some("CONNECT");
        let asks_upgrade = msg.head.header("upgrade").is_some()
            && msg.head.headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("connection")
                    && v.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            });
        if self.pending.len() >= MAX_PIPELINED {
            // Far more pipelined requests than any client sends: record and forget the oldest.
            if let Some((req, t)) = self.pending.pop_front() {
                self.emit(
                    req,
                    None,
                    t,
                    None,
                    Some("too many pipelined requests".into()),
                );
            }
        }
        self.pending.push_back((msg, started));
        if let Some((resp, t)) = self.early.take() {
            self.response_done(resp, t);
            return;
        }
        if connect || asks_upgrade {
            // Whatever follows on the client side belongs to the tunnel or the new protocol, if
            // the server agrees; the response decides.
            self.client.pause();
        }
    }

    fn response_done(&mut self, msg: Message, now_ms: u64) {
        let status = msg.head.status.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            // Interim response: the final one follows for the same request.
            return;
        }
        let Some((req, started)) = self.pending.pop_front() else {
            // The request is still sending its body: pair them when it ends.
            if self.client.current_head().is_some() {
                // It waits beyond this read: its body must not hold on to it.
                let mut msg = msg;
                msg.body.detach();
                self.early = Some((msg, now_ms));
            }
            return;
        };
        let connect = req.head.method.as_deref() == Some("CONNECT");
        let upgraded = status == 101 || (connect && (200..300).contains(&status));
        if upgraded {
            let to = |p: &str| {
                req.head
                    .header("upgrade")
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case(p))
            };
            let kind = if connect {
                UpgradeKind::Other
            } else if to("websocket") {
                UpgradeKind::Websocket
            } else if to("h2c") {
                UpgradeKind::H2c
            } else {
                UpgradeKind::Other
            };
            self.protocol = match kind {
                UpgradeKind::Websocket => Protocol::Websocket,
                UpgradeKind::H2c => Protocol::Http2,
                UpgradeKind::Other => Protocol::Upgraded,
            };
            self.opaque = true;
            self.upgrade = Some(Upgrade {
                kind,
                request: req.clone(),
                started_ms: started,
                tails: [std::mem::take(&mut self.held), Vec::new()],
            });
        } else if self.client.is_paused() {
            self.client.resume();
            let held = std::mem::take(&mut self.held);
            self.emit(req, Some(msg), started, Some(now_ms), None);
            // The upgrade was refused: the held bytes are HTTP/1.x after all.
            self.parse(Side::Client, &held, now_ms);
            return;
        }
        self.emit(req, Some(msg), started, Some(now_ms), None);
    }

    fn emit(
        &mut self,
        request: Message,
        response: Option<Message>,
        started_ms: u64,
        ended_ms: Option<u64>,
        error: Option<String>,
    ) {
        self.out.push_back(Output::Exchange(Exchange {
            request,
            response,
            started_ms,
            ended_ms,
            error,
        }));
    }

    fn stop(&mut self, why: String, side: Option<Side>) {
        self.opaque = true;
        if self.protocol == Protocol::Http {
            self.protocol = Protocol::MalformedHttp;
        }
        // A request whose head was readable is still worth showing.
        match side {
            Some(Side::Client) => {
                if let Some(partial) = self.client.take_partial() {
                    let t = self.client_started.take().unwrap_or(0);
                    self.pending.push_back((partial, t));
                }
            }
            Some(Side::Server) => {
                if let Some(partial) = self.server.take_partial() {
                    if let Some((req, t)) = self.pending.pop_front() {
                        self.emit(req, Some(partial), t, None, Some(why.clone()));
                    }
                }
            }
            None => {}
        }
        if let Some((req, t)) = self.pending.pop_front() {
            self.emit(req, None, t, None, Some(why.clone()));
        }
        self.error = Some(why);
    }

    /// The connection ended at `now_ms`: bodies delimited by the close end here, and requests
    /// without a response are given out as they are.
    pub fn finish(&mut self, now_ms: u64) {
        if !self.opaque {
            if let Some(msg) = self.server.finish() {
                self.response_done(msg, now_ms);
            }
        }
        let why = if self.opaque {
            None
        } else if self.client.in_message() || self.server.in_message() {
            Some("the connection closed in the middle of a message".to_string())
        } else {
            None
        };
        if let Some(partial) = self.server.take_partial() {
            if let Some((req, t)) = self.pending.pop_front() {
                self.emit(req, Some(partial), t, None, why.clone());
            }
        }
        if let Some(partial) = self.client.take_partial() {
            let t = self.client_started.take().unwrap_or(now_ms);
            if let Some((resp, end)) = self.early.take() {
                self.emit(partial, Some(resp), t, Some(end), why.clone());
            } else {
                self.pending.push_back((partial, t));
            }
        }
        while let Some((req, t)) = self.pending.pop_front() {
            let e = why
                .clone()
                .or_else(|| Some("no response before the connection closed".into()));
            self.emit(req, None, t, None, e);
        }
        self.opaque = true;
    }

    /// Whether [`poll`](Self::poll) has an output to give.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next output, in order.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The limits in use.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

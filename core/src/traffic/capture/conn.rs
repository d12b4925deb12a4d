//! One connection's capture: bytes of both directions in, records out.
//!
//! The connection starts as HTTP/1.x ([`crate::traffic::http1::Conversation`]) unless the client opens
//! with the HTTP/2 preface; an upgrade answered by the server hands the rest of the connection
//! to the HTTP/2 decoder (`h2c`) or the WebSocket message follower, with the bytes of both
//! sides that came after the switch.

use super::h2::{frame::PREFACE, H2Conn};
use super::record::{Direction, FlowEnd, MessageRecord, Process, Record, RecordKind, RemoteCaller};
use super::ws::{WsConn, WsLog};
use crate::traffic::http1::{Conversation, Exchange, Limits, Output, Protocol, Side, UpgradeKind};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

/// Who talks to whom, fixed for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnMeta {
    /// The local service involved.
    pub service: Arc<str>,
    /// In or out.
    pub direction: Direction,
    /// Client `ip:port`.
    pub client: Arc<str>,
    /// Client name.
    pub client_name: Option<Arc<str>>,
    /// Server `ip:port`.
    pub server: Arc<str>,
    /// Server name.
    pub server_name: Option<Arc<str>>,
}

/// What decodes the connection now.
#[derive(Debug)]
enum Decoder {
    Http1(Box<Conversation>),
    H2(Box<H2Conn>),
    Ws(Box<WsConn>),
    /// Nothing more to decode (only counted).
    Opaque,
}

/// Turns one connection's bytes into exchange records, and a flow record at the end when the
/// connection was not plain HTTP.
#[derive(Debug)]
pub struct ConnectionCapture {
    meta: ConnMeta,
    limits: Limits,
    decoder: Decoder,
    /// What the connection carries, once known.
    protocol: Protocol,
    /// Why decoding stopped.
    note: Option<String>,
    started_ms: u64,
    bytes: [u64; 2],
    /// Bytes were missed in at least one direction.
    incomplete: bool,
    closed: bool,
    client_process: Option<Process>,
    remote_caller: Option<RemoteCaller>,
    /// The client's first bytes, while fewer than tell the protocol.
    first: Vec<u8>,
    /// What the server sent before the client said anything.
    server_first: Vec<u8>,
    out: VecDeque<Record>,
}

/// Server bytes held before the client's first bytes.
const MAX_FIRST: usize = 64 * 1024;

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

impl ConnectionCapture {
    /// A connection that opened at `now_ms`.
    pub fn new(meta: ConnMeta, limits: Limits, now_ms: u64) -> Self {
        ConnectionCapture {
            meta,
            limits,
            decoder: Decoder::Http1(Box::new(Conversation::new(limits))),
            protocol: Protocol::Unknown,
            note: None,
            started_ms: now_ms,
            bytes: [0, 0],
            incomplete: false,
            closed: false,
            client_process: None,
            remote_caller: None,
            first: Vec::new(),
            server_first: Vec::new(),
            out: VecDeque::new(),
        }
    }

    /// Names the local process that opened the connection (its records so far and from now
    /// on show it as the client).
    pub fn set_client_process(&mut self, p: Process) {
        let name: Arc<str> = format!("{} ({})", p.command, p.pid).into();
        for r in self.out.iter_mut() {
            r.client_name = Some(name.clone());
            r.client_process = Some(p.clone());
        }
        self.meta.client_name = Some(name);
        self.client_process = Some(p);
    }

    /// Sets the real caller behind the relay.
    pub fn set_remote_caller(&mut self, c: RemoteCaller) {
        self.remote_caller = Some(c);
    }

    /// Bytes seen from `side`.
    pub fn data(&mut self, side: Side, bytes: &[u8], now_ms: u64) {
        self.data_in(side, bytes, None, now_ms);
    }

    /// Bytes seen from `side` that lie in `chunk`, when the caller shares its read: an HTTP/1.x
    /// response's body that lies whole in it is kept as a view of it until the ring copies it
    /// ([`Ring::push`](super::Ring::push)), instead of being copied out of it first
    /// ([`Conversation::feed_in`]). Records polled after this call may hold such views.
    pub fn data_in(&mut self, side: Side, bytes: &[u8], chunk: Option<&Bytes>, now_ms: u64) {
        if self.closed {
            return;
        }
        if let Some(b) = self.bytes.get_mut(idx(side)) {
            *b += bytes.len() as u64;
        }
        if self.protocol == Protocol::Unknown && side == Side::Server && !bytes.is_empty() {
            // An HTTP/2 server sends its SETTINGS without waiting for the client's preface:
            // held until the client's first bytes tell the protocol.
            let room = MAX_FIRST.saturating_sub(self.server_first.len());
            if bytes.len() <= room {
                self.server_first.extend_from_slice(bytes);
                return;
            }
            self.protocol = Protocol::Tcp;
            self.decoder = Decoder::Opaque;
            return;
        }
        if self.protocol == Protocol::Unknown && side == Side::Client && !bytes.is_empty() {
            // The first client bytes tell HTTP/2 with prior knowledge from HTTP/1.x; a very
            // short first read waits for the next.
            self.first.extend_from_slice(bytes);
            let n = self.first.len().min(PREFACE.len());
            let preface = self.first.get(..n) == PREFACE.get(..n);
            if preface && n < 3 {
                return;
            }
            let server_first = std::mem::take(&mut self.server_first);
            if preface {
                self.protocol = Protocol::Http2;
                self.decoder = Decoder::H2(Box::new(H2Conn::new(self.limits)));
            } else if !server_first.is_empty() {
                // The server spoke first and it is not HTTP/2: not a protocol we decode.
                self.protocol = Protocol::Tcp;
                self.decoder = Decoder::Opaque;
            }
            let first = std::mem::take(&mut self.first);
            self.feed(side, &first, None, now_ms);
            self.feed(Side::Server, &server_first, None, now_ms);
            return;
        }
        self.feed(side, bytes, chunk, now_ms);
    }

    fn feed(&mut self, side: Side, bytes: &[u8], chunk: Option<&Bytes>, now_ms: u64) {
        match &mut self.decoder {
            Decoder::Http1(conv) => {
                conv.feed_in(side, bytes, chunk, now_ms);
                if let Some(u) = conv.take_upgrade() {
                    self.drain(now_ms);
                    // The decoder is replaced: what it finished becomes records now.
                    self.take_exchanges();
                    let [client_tail, server_tail] = u.tails;
                    self.decoder = match u.kind {
                        UpgradeKind::H2c => Decoder::H2(Box::new(H2Conn::upgraded(
                            self.limits,
                            u.request,
                            u.started_ms,
                        ))),
                        UpgradeKind::Websocket => {
                            let path = u.request.head.target.unwrap_or_default();
                            Decoder::Ws(Box::new(WsConn::new(&path, self.limits.body_cap)))
                        }
                        UpgradeKind::Other => Decoder::Opaque,
                    };
                    self.feed(Side::Client, &client_tail, None, now_ms);
                    self.feed(Side::Server, &server_tail, None, now_ms);
                }
            }
            Decoder::H2(h2) => h2.feed(side, bytes, now_ms),
            Decoder::Ws(ws) => ws.feed(side, bytes, now_ms),
            Decoder::Opaque => {}
        }
        self.drain(now_ms);
    }

    /// Bytes from `side` were missed (`len` of them, when known): parsing cannot continue,
    /// so what was parsed is given out and the rest is only counted.
    pub fn gap(&mut self, side: Side, len: u64, now_ms: u64) {
        if self.closed {
            return;
        }
        if let Some(b) = self.bytes.get_mut(idx(side)) {
            *b += len;
        }
        if !self.incomplete {
            self.incomplete = true;
            match &mut self.decoder {
                Decoder::Http1(conv) => conv.finish(now_ms),
                Decoder::H2(h2) => h2.gap(side),
                Decoder::Ws(ws) => ws.gap(),
                Decoder::Opaque => {}
            }
            self.drain(now_ms);
        }
    }

    /// The connection ended.
    pub fn close(&mut self, end: FlowEnd, now_ms: u64) {
        if self.closed {
            return;
        }
        self.closed = true;
        let mut websocket = None;
        match std::mem::replace(&mut self.decoder, Decoder::Opaque) {
            Decoder::Http1(mut conv) => {
                conv.finish(now_ms);
                self.decoder = Decoder::Http1(conv);
                self.drain(now_ms);
            }
            Decoder::H2(mut h2) => {
                h2.finish(now_ms);
                self.decoder = Decoder::H2(h2);
                self.drain(now_ms);
            }
            Decoder::Ws(ws) => websocket = Some(ws.finish()),
            Decoder::Opaque => {}
        }
        let plain = matches!(self.protocol, Protocol::Http | Protocol::Http2);
        if !plain || self.incomplete || self.note.is_some() {
            let protocol = match self.protocol {
                Protocol::Unknown => Protocol::Tcp,
                p => p,
            };
            let r = self.flow(protocol, end, websocket, now_ms);
            self.queue(r);
        }
    }

    fn flow(
        &self,
        protocol: Protocol,
        end: FlowEnd,
        websocket: Option<WsLog>,
        now_ms: u64,
    ) -> Record {
        let kind = RecordKind::Flow {
            protocol,
            bytes_up: self.bytes[0],
            bytes_down: self.bytes[1],
            end,
            incomplete: self.incomplete || websocket.as_ref().is_some_and(|w| w.lost),
            note: self.note.clone(),
            websocket,
        };
        self.record(
            self.started_ms,
            Some(now_ms.saturating_sub(self.started_ms)),
            kind,
        )
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether [`poll`](Self::poll) has a record to give.
    pub fn has_record(&self) -> bool {
        !self.out.is_empty()
            || match &self.decoder {
                Decoder::Http1(conv) => conv.has_output(),
                Decoder::H2(h2) => h2.has_output(),
                Decoder::Ws(_) | Decoder::Opaque => false,
            }
    }

    /// The next record (its id is 0 until the ring assigns one).
    pub fn poll(&mut self) -> Option<Record> {
        // Records made ahead come first: whatever the decoder held was put before them.
        if let Some(r) = self.out.pop_front() {
            return Some(r);
        }
        let (e, g) = self.next_exchange()?;
        Some(self.exchange(e, g))
    }

    /// The decoder's next finished exchange.
    fn next_exchange(&mut self) -> Option<(Exchange, Option<super::grpc::GrpcSummary>)> {
        match &mut self.decoder {
            Decoder::Http1(conv) => conv.poll().map(|Output::Exchange(e)| (e, None)),
            Decoder::H2(h2) => h2.poll(),
            Decoder::Ws(_) | Decoder::Opaque => None,
        }
    }

    /// Queues a record made ahead (a flow, a WebSocket log): after whatever the decoder
    /// finished before it.
    fn queue(&mut self, r: Record) {
        self.take_exchanges();
        self.out.push_back(r);
    }

    /// Makes a record out of everything the decoder finished, before a record that must come
    /// after them is queued (or the decoder is replaced).
    fn take_exchanges(&mut self) {
        while let Some((e, g)) = self.next_exchange() {
            let r = self.exchange(e, g);
            self.out.push_back(r);
        }
    }

    fn record(&self, started_ms: u64, duration_ms: Option<u64>, kind: RecordKind) -> Record {
        Record {
            id: 0,
            service: self.meta.service.clone(),
            direction: self.meta.direction,
            client: self.meta.client.clone(),
            client_name: self.meta.client_name.clone(),
            client_process: self.client_process.clone(),
            remote_caller: self.remote_caller.clone(),
            server: self.meta.server.clone(),
            server_name: self.meta.server_name.clone(),
            started_ms,
            duration_ms,
            kind,
        }
    }

    fn exchange(&self, e: Exchange, grpc: Option<super::grpc::GrpcSummary>) -> Record {
        let duration = e.ended_ms.map(|t| t.saturating_sub(e.started_ms));
        self.record(
            e.started_ms,
            duration,
            RecordKind::Exchange {
                request: MessageRecord::from(e.request),
                response: e.response.map(MessageRecord::from),
                error: e.error,
                grpc,
            },
        )
    }

    /// Takes in what the decoder noticed. Its finished exchanges stay with it until
    /// [`poll`](Self::poll) makes each a record: a record is 840 bytes, and one made here went
    /// into a queue and out again on its way to the ring.
    fn drain(&mut self, now_ms: u64) {
        let mut logs = Vec::new();
        match &mut self.decoder {
            Decoder::Http1(conv) => {
                if self.protocol == Protocol::Unknown || conv.protocol() != Protocol::Unknown {
                    self.protocol = conv.protocol();
                }
                if let Some(e) = conv.error() {
                    self.note = Some(e.to_string());
                }
            }
            Decoder::H2(h2) => {
                self.protocol = Protocol::Http2;
                if let Some(e) = h2.error() {
                    self.note = Some(e.to_string());
                }
            }
            Decoder::Ws(ws) => logs = ws.take_full(),
            Decoder::Opaque => {}
        }
        for log in logs {
            let r = self.flow(Protocol::Websocket, FlowEnd::Open, Some(log), now_ms);
            self.queue(r);
        }
    }
}

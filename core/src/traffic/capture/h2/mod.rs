//! A passive HTTP/2 decoder for both directions of one connection (prior-knowledge h2c, or h2c
//! after an HTTP/1.1 `Upgrade`): every stream becomes one exchange with method, path, status,
//! headers, trailers and bodies; gRPC calls get their service, method, status and message
//! counts ([`super::grpc`]).
//!
//! Header blocks are decoded with `loona-hpack`, one decoder (and dynamic table) per direction.
//! A decoder's table is bounded by what the other side allowed in SETTINGS and by our own cap
//! [`MAX_TABLE`]; an encoder that goes past either, or a header block we could not read whole,
//! leaves that direction's table unknown: later headers of that direction are then recorded as
//! unknown instead of guessed.
//!
//! Memory per connection: two frame readers ([`frame::MAX_PAYLOAD`] each), a header block of at
//! most [`MAX_BLOCK`] bytes per direction (and, while it is decoded, its rewrite with plain
//! strings), two HPACK tables, at most [`MAX_STREAMS`] open streams, and kept body bytes within
//! [`Limits::body_cap`] per body and four times that over the connection's open streams.
//! Nothing here panics on input (fuzz target `h2`).

pub mod frame;
mod huffman;
#[cfg(test)]
mod tests;

use super::grpc::{self, GrpcSummary, MessageCounter};
use crate::traffic::http1::{common_text, text, Exchange, Fields, Head, Limits, Message, Side};
use frame::{flag, kind, Event, FrameReader};
use std::collections::{BTreeMap, VecDeque};

/// Largest HPACK dynamic table followed per direction, whatever SETTINGS allow.
pub const MAX_TABLE: usize = 64 * 1024;
/// Largest header block (HEADERS or PUSH_PROMISE and its CONTINUATIONs) decoded.
pub const MAX_BLOCK: usize = 256 * 1024;
/// Largest rewrite buffer kept between header blocks (typical blocks are far smaller).
const KEEP_SCRATCH: usize = 16 * 1024;
/// Streams followed at once; the oldest is given out unfinished when more open.
pub const MAX_STREAMS: usize = 256;
/// The default HPACK table size (RFC 9113, 6.5.2).
const DEFAULT_TABLE: usize = 4096;

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

fn who(side: Side) -> &'static str {
    match side {
        Side::Client => "client",
        Side::Server => "server",
    }
}

/// One direction of a stream.
#[derive(Debug, Default)]
struct Half {
    msg: Message,
    /// Headers arrived (the final ones, for responses).
    has_head: bool,
    ended: bool,
    grpc: MessageCounter,
}

#[derive(Debug)]
struct Stream {
    halves: [Half; 2],
    started_ms: u64,
    ended_ms: Option<u64>,
    error: Option<String>,
}

/// A header block being collected.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    /// For PUSH_PROMISE: the promised stream.
    promised: Option<u32>,
    buf: Vec<u8>,
    /// Too long to decode: the direction's table is lost once it ends.
    overflow: bool,
}

/// A finished stream: the exchange, and the gRPC summary for gRPC calls.
pub type H2Exchange = (Exchange, Option<GrpcSummary>);

struct State {
    limits: Limits,
    hpack: [loona_hpack::Decoder<'static>; 2],
    /// Why a direction's HPACK table is unknown, once it is.
    lost: [Option<String>; 2],
    block: [Option<Block>; 2],
    streams: BTreeMap<u32, Stream>,
    /// Body bytes kept over the open streams.
    kept: usize,
    /// Where a block's fields are decoded, kept between blocks (warm, and grown once) before
    /// they are copied into the record's own, exactly sized list.
    scratch: Fields,
    /// A block rewritten with plain strings, and one string decoded: kept between blocks.
    plain: Vec<u8>,
    huffman: Vec<u8>,
    out: VecDeque<H2Exchange>,
    /// Why decoding stopped, if it did.
    error: Option<String>,
}

/// Both directions of one HTTP/2 connection.
pub struct H2Conn {
    readers: [FrameReader; 2],
    st: State,
}

impl std::fmt::Debug for H2Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Conn")
            .field("streams", &self.st.streams.len())
            .field("error", &self.st.error)
            .finish()
    }
}

impl H2Conn {
    /// A connection whose client starts with the preface (prior knowledge).
    pub fn new(limits: Limits) -> H2Conn {
        let decoder = || {
            let mut d = loona_hpack::Decoder::new();
            d.set_max_allowed_table_size(DEFAULT_TABLE);
            d
        };
        H2Conn {
            readers: [FrameReader::new(true), FrameReader::new(false)],
            st: State {
                limits,
                hpack: [decoder(), decoder()],
                lost: [None, None],
                block: [None, None],
                streams: BTreeMap::new(),
                kept: 0,
                scratch: Fields::new(),
                plain: Vec::new(),
                huffman: Vec::new(),
                out: VecDeque::new(),
                error: None,
            },
        }
    }

    /// A connection upgraded from HTTP/1.1 (`Upgrade: h2c`, answered `101`): `request` is
    /// stream 1, sent whole already; its response comes as HTTP/2.
    pub fn upgraded(limits: Limits, mut request: Message, started_ms: u64) -> H2Conn {
        let mut c = H2Conn::new(limits);
        c.st.kept += request.body.len();
        request.complete = true;
        let mut s = Stream {
            halves: [Half::default(), Half::default()],
            started_ms,
            ended_ms: None,
            error: None,
        };
        s.halves[0] = Half {
            msg: request,
            has_head: true,
            ended: true,
            grpc: MessageCounter::default(),
        };
        c.st.streams.insert(1, s);
        c
    }

    /// Why decoding stopped, if it did.
    pub fn error(&self) -> Option<&str> {
        self.st.error.as_deref()
    }

    /// Bytes seen from `side` at `now_ms`.
    pub fn feed(&mut self, side: Side, mut data: &[u8], now_ms: u64) {
        let i = idx(side);
        while self.st.error.is_none() {
            let Some(reader) = self.readers.get_mut(i) else {
                return;
            };
            match reader.next(&mut data) {
                Ok(Some(ev)) => self.st.event(side, ev, now_ms),
                Ok(None) => return,
                Err(e) => self.st.stop(e.to_string()),
            }
        }
    }

    /// Bytes of `side` were missed: frames can no longer be found, so decoding stops.
    pub fn gap(&mut self, side: Side) {
        self.st
            .stop(format!("bytes from the {} were not captured", who(side)));
    }

    /// The connection ended: unfinished streams are given out as they are.
    pub fn finish(&mut self, now_ms: u64) {
        let ids: Vec<u32> = self.st.streams.keys().copied().collect();
        for id in ids {
            self.st.emit(
                id,
                Some("the connection closed before the stream ended".into()),
                now_ms,
            );
        }
    }

    /// Whether [`poll`](Self::poll) has a finished stream to give.
    pub fn has_output(&self) -> bool {
        !self.st.out.is_empty()
    }

    /// The next finished stream.
    pub fn poll(&mut self) -> Option<H2Exchange> {
        self.st.out.pop_front()
    }
}

impl State {
    fn stop(&mut self, why: String) {
        if self.error.is_none() {
            self.error = Some(why.clone());
            let ids: Vec<u32> = self.streams.keys().copied().collect();
            for id in ids {
                self.emit(id, Some(why.clone()), 0);
            }
        }
    }

    fn event(&mut self, side: Side, ev: Event<'_>, now_ms: u64) {
        match ev {
            Event::Data { stream, bytes } => self.data(side, stream, bytes),
            Event::DataEnd { stream, end_stream } => {
                if end_stream {
                    self.end(side, stream, now_ms);
                }
            }
            Event::Frame(head, payload) => match head.kind {
                kind::HEADERS | kind::PUSH_PROMISE => {
                    self.headers_start(side, head, payload, now_ms)
                }
                kind::CONTINUATION => self.continuation(side, head, payload, now_ms),
                kind::SETTINGS if !head.has(flag::ACK) => self.settings(side, payload),
                kind::RST_STREAM => {
                    let code = payload
                        .and_then(|p| p.get(..4))
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .unwrap_or(0);
                    if self.streams.contains_key(&head.stream) {
                        let why = format!("reset by the {}: {}", who(side), reason(code));
                        self.emit(head.stream, Some(why), now_ms);
                    }
                }
                _ => {}
            },
        }
    }

    /// SETTINGS from `side` bound the table of the headers `side` receives.
    fn settings(&mut self, side: Side, payload: Option<&[u8]>) {
        let Some(p) = payload else { return };
        for s in p.chunks_exact(6) {
            if u16::from_be_bytes([s[0], s[1]]) == 0x1 {
                let size = u32::from_be_bytes([s[2], s[3], s[4], s[5]]) as usize;
                let other = 1 - idx(side);
                if let Some(d) = self.hpack.get_mut(other) {
                    // The largest size allowed so far: a smaller one takes effect only once the
                    // peer acknowledged it, and we do not follow the acknowledgements.
                    d.set_max_allowed_table_size(size.clamp(DEFAULT_TABLE, MAX_TABLE));
                }
            }
        }
    }

    fn headers_start(
        &mut self,
        side: Side,
        head: frame::FrameHead,
        payload: Option<&[u8]>,
        now: u64,
    ) {
        let i = idx(side);
        let push = head.kind == kind::PUSH_PROMISE;
        let mut block = Block {
            stream: head.stream,
            end_stream: !push && head.has(flag::END_STREAM),
            promised: None,
            buf: Vec::new(),
            overflow: payload.is_none(),
        };
        if let Some(p) = payload {
            // Strip padding, the priority fields, the promised stream id.
            let mut p = p;
            let mut pad = 0usize;
            if head.has(flag::PADDED) {
                let Some((&n, rest)) = p.split_first() else {
                    return self.stop("a padded frame without its pad length".into());
                };
                pad = usize::from(n);
                p = rest;
            }
            let skip = if push {
                4
            } else if head.has(flag::PRIORITY) {
                5
            } else {
                0
            };
            if push {
                block.promised = p
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff);
            }
            let fragment = p
                .len()
                .checked_sub(pad)
                .filter(|end| *end >= skip)
                .and_then(|end| p.get(skip..end));
            let Some(fragment) = fragment else {
                return self.stop("a header frame with more padding than payload".into());
            };
            block.buf.extend_from_slice(fragment);
        }
        if let Some(slot) = self.block.get_mut(i) {
            *slot = Some(block);
        }
        if head.has(flag::END_HEADERS) {
            self.block_done(side, now);
        }
    }

    fn continuation(
        &mut self,
        side: Side,
        head: frame::FrameHead,
        payload: Option<&[u8]>,
        now: u64,
    ) {
        let i = idx(side);
        let Some(Some(b)) = self.block.get_mut(i) else {
            return self.stop("a CONTINUATION frame without a header block".into());
        };
        if b.stream != head.stream {
            return self.stop("a CONTINUATION frame of another stream".into());
        }
        match payload {
            Some(p) if b.buf.len() + p.len() <= MAX_BLOCK => b.buf.extend_from_slice(p),
            _ => {
                b.overflow = true;
                b.buf = Vec::new();
            }
        }
        if head.has(flag::END_HEADERS) {
            self.block_done(side, now);
        }
    }

    fn block_done(&mut self, side: Side, now: u64) {
        let i = idx(side);
        let Some(block) = self.block.get_mut(i).and_then(Option::take) else {
            return;
        };
        let headers = self.decode(side, &block);
        match block.promised {
            Some(promised) => {
                // A pushed response's request: the promised stream, its request already whole.
                self.open(promised, now);
                if let Some(s) = self.streams.get_mut(&promised) {
                    let h = &mut s.halves[0];
                    apply_head(&mut h.msg.head, headers.as_ref(), Side::Client);
                    h.has_head = true;
                    h.ended = true;
                }
            }
            None => self.headers(side, block.stream, block.end_stream, headers.as_ref(), now),
        }
        if let Some(mut f) = headers {
            f.clear();
            self.scratch = f;
        }
    }

    /// The decoded fields, or `None` when this direction's table is unknown.
    fn decode(&mut self, side: Side, block: &Block) -> Option<Fields> {
        let i = idx(side);
        if self.lost.get(i).is_some_and(Option::is_some) {
            return None;
        }
        let why = if block.overflow {
            Some(format!("a header block over {MAX_BLOCK} bytes"))
        } else {
            let max_headers = self.limits.max_headers;
            let max_bytes = self.limits.max_head_bytes;
            let mut fields = std::mem::take(&mut self.scratch);
            let mut bytes = 0usize;
            let d = self.hpack.get_mut(i)?;
            let rewritten = huffman::plain_block(&block.buf, &mut self.plain, &mut self.huffman);
            let input = if rewritten { &self.plain } else { &block.buf };
            let r = d.decode_with_cb(input, |k, v| {
                bytes += k.len() + v.len();
                // Beyond the limits fields are decoded (the table must follow) but not kept.
                if fields.len() < max_headers && bytes <= max_bytes {
                    fields.push(&text(&k), &text(&v));
                }
            });
            // A rare large block does not keep its buffers for the connection's lifetime.
            if self.plain.capacity() > KEEP_SCRATCH {
                self.plain = Vec::new();
            }
            if self.huffman.capacity() > KEEP_SCRATCH {
                self.huffman = Vec::new();
            }
            match r {
                Ok(()) => return Some(fields),
                Err(e) => Some(format!("HPACK: {e:?}")),
            }
        };
        if let Some(slot) = self.lost.get_mut(i) {
            *slot = why;
        }
        None
    }

    fn open(&mut self, id: u32, now: u64) {
        if self.streams.contains_key(&id) {
            return;
        }
        if self.streams.len() >= MAX_STREAMS {
            if let Some(&oldest) = self.streams.keys().next() {
                self.emit(oldest, Some("too many open streams to follow".into()), now);
            }
        }
        self.streams.insert(
            id,
            Stream {
                halves: [Half::default(), Half::default()],
                started_ms: now,
                ended_ms: None,
                error: None,
            },
        );
    }

    fn headers(
        &mut self,
        side: Side,
        id: u32,
        end_stream: bool,
        fields: Option<&Fields>,
        now: u64,
    ) {
        if side == Side::Client {
            self.open(id, now);
        }
        let lost = self.lost.get(idx(side)).cloned().flatten();
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let h = &mut s.halves[idx(side)];
        match fields {
            None => {
                s.error = Some(format!(
                    "headers from the {} unknown ({})",
                    who(side),
                    lost.unwrap_or_default()
                ));
                h.has_head = true;
            }
            Some(f) if !h.has_head => {
                let mut head = Head::default();
                apply_head(&mut head, Some(f), side);
                let interim = head.status.is_some_and(|c| (100..200).contains(&c));
                if !interim {
                    h.msg.head = head;
                    h.has_head = true;
                }
            }
            Some(f) if h.msg.trailers.is_empty() => h.msg.trailers = f.clone(),
            Some(f) => h.msg.trailers.extend(f),
        }
        if end_stream {
            self.end(side, id, now);
        }
    }

    fn data(&mut self, side: Side, id: u32, bytes: &[u8]) {
        let budget = self.limits.body_cap.saturating_mul(4);
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let h = &mut s.halves[idx(side)];
        h.grpc.feed(bytes);
        let m = &mut h.msg;
        m.body_len += bytes.len() as u64;
        let room = self
            .limits
            .body_cap
            .saturating_sub(m.body.len())
            .min(budget.saturating_sub(self.kept));
        let keep = bytes.len().min(room);
        m.body.extend_from_slice(bytes.get(..keep).unwrap_or(&[]));
        self.kept += keep;
        if keep < bytes.len() {
            m.truncated = true;
        }
    }

    fn end(&mut self, side: Side, id: u32, now: u64) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let h = &mut s.halves[idx(side)];
        h.ended = true;
        h.msg.complete = h.has_head;
        if s.halves.iter().all(|h| h.ended) {
            s.ended_ms = Some(now);
            self.emit(id, None, now);
        }
    }

    /// Gives the stream out as an exchange and forgets it.
    fn emit(&mut self, id: u32, why: Option<String>, now: u64) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        let [req, resp] = s.halves;
        self.kept = self
            .kept
            .saturating_sub(req.msg.body.len() + resp.msg.body.len());
        let grpc = summary(&req, &resp);
        let ended_ms = s.ended_ms.or((why.is_some() && now > 0).then_some(now));
        let exchange = Exchange {
            request: req.msg,
            response: resp.has_head.then_some(resp.msg),
            started_ms: s.started_ms,
            ended_ms,
            error: s.error.or(why),
        };
        self.out.push_back((exchange, grpc));
    }
}

/// Fills `head` from decoded fields: pseudo-headers into the start line, the rest (and
/// `:authority`, `:scheme`, `:protocol`) into the header list.
fn apply_head(head: &mut Head, fields: Option<&Fields>, side: Side) {
    head.version = "HTTP/2".into();
    let Some(fields) = fields else { return };
    head.headers = Fields::with_capacity(fields.len(), fields.text_len());
    for (k, v) in fields {
        match k {
            ":method" if side == Side::Client => head.method = Some(common_text(v.as_bytes())),
            ":path" if side == Side::Client => head.target = Some(v.to_string()),
            ":status" if side == Side::Server => head.status = v.parse().ok(),
            _ => head.headers.push(k, v),
        }
    }
    if head.target.is_none() && head.method.as_deref() == Some("CONNECT") {
        head.target = head.header(":authority").map(str::to_string);
    }
}

fn summary(req: &Half, resp: &Half) -> Option<GrpcSummary> {
    if !grpc::is_grpc(req.msg.head.header("content-type")) {
        return None;
    }
    let (service, method) = grpc::service_method(req.msg.head.target.as_deref()?)?;
    // Trailers, or the headers of a trailers-only answer.
    let find = |name: &str| {
        resp.msg
            .trailers
            .iter()
            .chain(resp.msg.head.headers.iter())
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    };
    Some(GrpcSummary {
        service,
        method,
        status: find("grpc-status").and_then(|s| s.trim().parse().ok()),
        message: find("grpc-message").map(grpc::decode_message),
        requests: req.grpc.count,
        responses: resp.grpc.count,
        compressed: req.grpc.compressed || resp.grpc.compressed,
    })
}

/// An HTTP/2 error code's name (RFC 9113, 7).
fn reason(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x5 => "STREAM_CLOSED",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0xb => "ENHANCE_YOUR_CALM",
        _ => return format!("error code {code:#x}"),
    };
    name.to_string()
}

//! One direction of an HTTP/1.x connection: a sequence of messages.

use super::body::{view_of, BodyBuf};
use super::fields::Fields;
use bytes::Bytes;
use std::borrow::Cow;
use std::fmt;

/// Why bytes are not HTTP/1.x.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request or status line is malformed.
    #[error("malformed {0} line")]
    StartLine(&'static str),
    /// A header line is malformed.
    #[error("malformed header line")]
    Header,
    /// More header lines than allowed.
    #[error("more than {0} header lines")]
    TooManyHeaders(usize),
    /// The head section is larger than allowed.
    #[error("header section larger than {0} bytes")]
    HeadTooLarge(usize),
    /// Content-Length is not a number, or two disagree.
    #[error("bad Content-Length")]
    ContentLength,
    /// A Transfer-Encoding a request may not have.
    #[error("unsupported Transfer-Encoding")]
    TransferEncoding,
    /// A chunk size line is malformed.
    #[error("bad chunk size")]
    ChunkSize,
    /// The CRLF after a chunk's data is missing.
    #[error("missing CRLF after chunk data")]
    ChunkEnd,
    /// Framing servers read in different ways (request smuggling material): the request is
    /// recorded as it was, the rest of the connection is not guessed at.
    #[error("ambiguous framing: {0}")]
    Ambiguous(&'static str),
}

/// What a parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Requests (the client's side).
    Request,
    /// Responses (the server's side).
    Response,
}

/// Size limits; every buffer a parser keeps is bounded by these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of body kept per message; the rest is counted only.
    pub body_cap: usize,
    /// Largest head section (start line and headers).
    pub max_head_bytes: usize,
    /// Most header lines.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_cap: 1 << 20,
            max_head_bytes: 64 * 1024,
            max_headers: 128,
        }
    }
}

/// The start line and headers of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    /// Request method (the common ones without an allocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Cow<'static, str>>,
    /// Request target (path and query, usually).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Response status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Response reason phrase (the common ones without an allocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'static, str>>,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: Cow<'static, str>,
    /// Header lines in order, names as sent.
    pub headers: Fields,
}

impl Head {
    /// Where its allocations start (target, and header text with its spans; null for none),
    /// for a prefetch.
    pub fn heap(&self) -> [*const u8; 2] {
        let fields = self.headers.heap();
        let target = self
            .target
            .as_ref()
            .filter(|t| t.capacity() > 0)
            .map_or(std::ptr::null(), |t| t.as_ptr());
        [target, fields]
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.find(name)
    }

    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        let t = self.target.as_deref().unwrap_or("");
        t.split(['?', '#']).next().unwrap_or(t)
    }
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.method, &self.status) {
            (Some(m), _) => write!(
                f,
                "{m} {} {}",
                self.target.as_deref().unwrap_or(""),
                self.version
            ),
            (None, Some(s)) => write!(
                f,
                "{} {s} {}",
                self.version,
                self.reason.as_deref().unwrap_or("")
            ),
            (None, None) => write!(f, "{}", self.version),
        }
    }
}

/// One parsed message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Start line and headers.
    pub head: Head,
    /// The body (de-chunked) up to the cap.
    pub body: BodyBuf,
    /// The body's full length.
    pub body_len: u64,
    /// Whether `body` holds less than `body_len`.
    pub truncated: bool,
    /// Whether the message ended properly (false: cut by an error or the connection's end).
    pub complete: bool,
    /// Trailer fields (HTTP/2 trailers; gRPC's status is there).
    pub trailers: Fields,
}

/// Result of one [`MessageParser::parse`] step: bytes used and maybe a finished message.
pub type Parsed = (usize, Option<Message>);

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// This many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection closes (responses).
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a size line.
    Size,
    /// Reading chunk data.
    Data(u64),
    /// Expecting the CRLF after data; how many of its bytes were seen.
    DataEnd(u8),
    /// Reading trailer lines.
    Trailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Head,
    Body(Framing),
    Chunked(Chunk),
    /// No parsing until resumed (after a CONNECT request).
    Paused,
    /// The head was read but its framing refused: nothing more is parsed.
    Rejected,
}

/// Longest chunk-size or trailer line kept.
const MAX_LINE: usize = 4096;

/// Parses one direction's messages incrementally.
#[derive(Debug)]
pub struct MessageParser {
    kind: Kind,
    limits: Limits,
    state: State,
    buf: Vec<u8>,
    msg: Message,
    /// The response being read answers a HEAD request.
    answers_head: bool,
    /// The response being read answers a CONNECT request.
    answers_connect: bool,
    trailers: usize,
    /// The read being parsed, when the caller shares it: a body that lies whole in it is kept
    /// as a view of it.
    chunk: Option<Bytes>,
}

impl MessageParser {
    /// A parser for `kind` messages.
    pub fn new(kind: Kind, limits: Limits) -> Self {
        MessageParser {
            kind,
            limits,
            state: State::Idle,
            buf: Vec::new(),
            msg: Message::default(),
            answers_head: false,
            answers_connect: false,
            trailers: 0,
            chunk: None,
        }
    }

    /// Shares the read that the next calls of [`parse`](Self::parse) take their bytes from
    /// (`None`: copy bodies as usual). Bodies that lie whole in it become views of it.
    pub fn set_chunk(&mut self, chunk: Option<&Bytes>) {
        self.chunk = chunk.cloned();
    }

    /// Between messages.
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// Inside a message (some of it seen).
    pub fn in_message(&self) -> bool {
        !matches!(self.state, State::Idle | State::Paused)
    }

    /// The head of the message whose body is being read.
    pub fn current_head(&self) -> Option<&Head> {
        matches!(self.state, State::Body(_) | State::Chunked(_)).then_some(&self.msg.head)
    }

    /// Sets what the next response answers (its framing depends on the request).
    pub fn expect_response_to(&mut self, request: &Head) {
        self.answers_head = request.method.as_deref() == Some("HEAD");
        self.answers_connect = request.method.as_deref() == Some("CONNECT");
    }

    /// Stops parsing until [`MessageParser::resume`].
    pub fn pause(&mut self) {
        self.state = State::Paused;
    }

    /// Whether it is paused.
    pub fn is_paused(&self) -> bool {
        self.state == State::Paused
    }

    /// Parses again after a pause.
    pub fn resume(&mut self) {
        if self.state == State::Paused {
            self.state = State::Idle;
        }
    }

    /// The message in progress, if its head was read; the parser starts over.
    pub fn take_partial(&mut self) -> Option<Message> {
        let had_head = matches!(
            self.state,
            State::Body(_) | State::Chunked(_) | State::Rejected
        );
        self.state = State::Idle;
        self.buf.clear();
        let msg = std::mem::take(&mut self.msg);
        had_head.then_some(msg)
    }

    /// The connection ended: a body delimited by the close is complete.
    pub fn finish(&mut self) -> Option<Message> {
        if self.state == State::Body(Framing::UntilClose) {
            self.state = State::Idle;
            let mut m = std::mem::take(&mut self.msg);
            m.complete = true;
            return Some(m);
        }
        None
    }

    /// Reads from `data`; returns how many bytes were used and the message if one ended.
    /// Call again with the rest while bytes remain.
    pub fn parse(&mut self, data: &[u8]) -> Result<Parsed, HttpError> {
        let (used, ended) = self.parse_in(data)?;
        Ok((used, ended.then(|| self.take_message())))
    }

    /// The message that [`parse_in`](Self::parse_in) said ended.
    pub fn take_message(&mut self) -> Message {
        std::mem::take(&mut self.msg)
    }

    /// [`parse`](Self::parse), but a message that ended stays in the parser, to be taken with
    /// [`take_message`](Self::take_message) before the next call (which starts the next one):
    /// a message is 256 bytes, and handing it out in the result moved it once per function
    /// it went through.
    pub fn parse_in(&mut self, data: &[u8]) -> Result<(usize, bool), HttpError> {
        match self.state {
            State::Paused | State::Rejected => Ok((0, false)),
            State::Idle => {
                // Empty lines (CRLF or LF) between messages are allowed; a CR without its LF
                // is not.
                let skip = empty_lines(data).map_err(|_| {
                    HttpError::StartLine(match self.kind {
                        Kind::Request => "request",
                        Kind::Response => "status",
                    })
                })?;
                if skip == data.len() {
                    return Ok((skip, false));
                }
                self.state = State::Head;
                self.buf.clear();
                self.msg = Message::default();
                let (used, ended) = self.parse_head(data.get(skip..).unwrap_or(&[]))?;
                Ok((skip + used, ended))
            }
            State::Head => self.parse_head(data),
            State::Body(f) => Ok(self.parse_body(f, data)),
            State::Chunked(c) => self.parse_chunked(c, data),
        }
    }

    fn parse_head(&mut self, data: &[u8]) -> Result<(usize, bool), HttpError> {
        let max = self.limits.max_head_bytes;
        if self.buf.is_empty() {
            // The common case: the whole head in this chunk, parsed where it is (a response's
            // body after it is not copied).
            let window = data
                .get(..data.len().min(max.saturating_add(4)))
                .unwrap_or(data);
            if let Some(end) = find_head_end(window) {
                if end > max {
                    return Err(HttpError::HeadTooLarge(max));
                }
                let noted = parse_head(
                    self.kind,
                    data.get(..end).unwrap_or(&[]),
                    self.limits.max_headers,
                    &mut self.msg.head,
                );
                return self.head_parsed(noted, end, data.len() - end);
            }
        }
        // Look for the blank line, also across the boundary of the previous call.
        let start = self.buf.len().saturating_sub(3);
        let room = max.saturating_sub(self.buf.len());
        let take = data.len().min(room.saturating_add(4));
        self.buf.extend_from_slice(data.get(..take).unwrap_or(data));
        let end = find_head_end(self.buf.get(start..).unwrap_or(&[])).map(|e| start + e);
        let Some(end) = end else {
            if self.buf.len() > max {
                return Err(HttpError::HeadTooLarge(max));
            }
            return Ok((take, false));
        };
        if end > max {
            return Err(HttpError::HeadTooLarge(max));
        }
        let used_here = end - (self.buf.len() - take);
        let noted = parse_head(
            self.kind,
            self.buf.get(..end).unwrap_or(&[]),
            self.limits.max_headers,
            &mut self.msg.head,
        );
        self.buf.clear();
        self.head_parsed(noted, used_here, data.len().saturating_sub(used_here))
    }

    /// A head was read into the message (`used_here` bytes of this call's data, `after` bytes
    /// follow it there): its framing tells what follows.
    fn head_parsed(
        &mut self,
        noted: Result<Noted, HttpError>,
        used_here: usize,
        after: usize,
    ) -> Result<(usize, bool), HttpError> {
        // A head that failed to parse is not shown (the state stays `Head`): what it holds
        // so far is dropped with the message.
        let noted = noted?;
        let framing = if noted.folded {
            Err(HttpError::Ambiguous(OBS_FOLD))
        } else {
            self.framing(&self.msg.head, noted)
        };
        let framing = match framing {
            Ok(f) => f,
            Err(e) => {
                // The head is worth showing with the reason; its body cannot be found.
                self.state = State::Rejected;
                return Err(e);
            }
        };
        if let Framing::Length(n) = framing {
            // One allocation for a body that came with its head, not one per growth; never
            // more than what came (a Content-Length alone reserves nothing).
            let keep = n.min(self.limits.body_cap as u64).min(after as u64) as usize;
            // A body whole in a shared read becomes a view of it: nothing to allocate.
            if self.chunk.is_none() || n > after as u64 {
                self.msg.body.reserve_exact(keep);
            }
        }
        match framing {
            Framing::None | Framing::Length(0) => {
                self.state = State::Idle;
                self.msg.complete = true;
                Ok((used_here, true))
            }
            Framing::Chunked => {
                self.state = State::Chunked(Chunk::Size);
                Ok((used_here, false))
            }
            f => {
                self.state = State::Body(f);
                Ok((used_here, false))
            }
        }
    }

    fn framing(&self, head: &Head, noted: Noted) -> Result<Framing, HttpError> {
        if self.kind == Kind::Response {
            let s = head.status.unwrap_or(0);
            if (100..200).contains(&s) || s == 204 || s == 304 || self.answers_head {
                return Ok(Framing::None);
            }
            if self.answers_connect && (200..300).contains(&s) {
                return Ok(Framing::None);
            }
        }
        match self.kind {
            Kind::Request => framing_of_request(head, noted),
            Kind::Response => Ok(response_framing(head, noted)),
        }
    }

    /// Keeps a piece of the body; `whole`: it is all of it.
    fn keep_body(&mut self, bytes: &[u8], whole: bool) {
        if whole && bytes.len() <= self.limits.body_cap {
            if let Some(v) = self.chunk.as_ref().and_then(|c| view_of(c, bytes)) {
                self.msg.body_len = bytes.len() as u64;
                self.msg.body = BodyBuf::view(v);
                return;
            }
        }
        self.msg.body_len += bytes.len() as u64;
        let room = self.limits.body_cap.saturating_sub(self.msg.body.len());
        let keep = bytes.len().min(room);
        self.msg
            .body
            .extend_from_slice(bytes.get(..keep).unwrap_or(&[]));
        if keep < bytes.len() {
            self.msg.truncated = true;
        }
    }

    fn parse_body(&mut self, f: Framing, data: &[u8]) -> (usize, bool) {
        match f {
            Framing::Length(remaining) => {
                let n = (data.len() as u64).min(remaining) as usize;
                let whole = n as u64 == remaining && self.msg.body_len == 0;
                self.keep_body(data.get(..n).unwrap_or(&[]), whole);
                let left = remaining - n as u64;
                if left == 0 {
                    self.state = State::Idle;
                    self.msg.complete = true;
                    (n, true)
                } else {
                    self.state = State::Body(Framing::Length(left));
                    (n, false)
                }
            }
            Framing::UntilClose => {
                self.keep_body(data, false);
                (data.len(), false)
            }
            Framing::None | Framing::Chunked => (0, false),
        }
    }

    fn parse_chunked(&mut self, c: Chunk, data: &[u8]) -> Result<(usize, bool), HttpError> {
        match c {
            Chunk::Size => {
                let Some((line, used)) = self.line(data, HttpError::ChunkSize)? else {
                    return Ok((data.len(), false));
                };
                let size = parse_chunk_size(&line)?;
                self.state = State::Chunked(if size == 0 {
                    self.trailers = 0;
                    Chunk::Trailer
                } else {
                    Chunk::Data(size)
                });
                Ok((used, false))
            }
            Chunk::Data(remaining) => {
                let n = (data.len() as u64).min(remaining) as usize;
                self.keep_body(data.get(..n).unwrap_or(&[]), false);
                let left = remaining - n as u64;
                self.state = State::Chunked(if left == 0 {
                    Chunk::DataEnd(0)
                } else {
                    Chunk::Data(left)
                });
                Ok((n, false))
            }
            Chunk::DataEnd(seen) => {
                let mut used = 0;
                let mut seen = seen;
                for b in data {
                    match (seen, *b) {
                        (0, b'\r') => seen = 1,
                        (1, b'\n') => {
                            used += 1;
                            self.state = State::Chunked(Chunk::Size);
                            return Ok((used, false));
                        }
                        _ => return Err(HttpError::ChunkEnd),
                    }
                    used += 1;
                }
                self.state = State::Chunked(Chunk::DataEnd(seen));
                Ok((used, false))
            }
            Chunk::Trailer => {
                let Some((line, used)) = self.line(data, HttpError::Header)? else {
                    return Ok((data.len(), false));
                };
                if line.is_empty() || line == b"\r" {
                    self.state = State::Idle;
                    self.msg.complete = true;
                    return Ok((used, true));
                }
                self.trailers += 1;
                if self.trailers > self.limits.max_headers {
                    return Err(HttpError::TooManyHeaders(self.limits.max_headers));
                }
                Ok((used, false))
            }
        }
    }

    /// Collects one line (without its line end) into `buf`, bounded by [`MAX_LINE`].
    fn line(
        &mut self,
        data: &[u8],
        too_long: HttpError,
    ) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
        match data.iter().position(|b| *b == b'\n') {
            Some(i) => {
                if self.buf.len() + i > MAX_LINE {
                    return Err(too_long);
                }
                self.buf.extend_from_slice(data.get(..i).unwrap_or(&[]));
                // The CR stays: chunk-size lines must end in CRLF, trailers may not.
                let line = std::mem::take(&mut self.buf);
                Ok(Some((line, i + 1)))
            }
            None => {
                if self.buf.len() + data.len() > MAX_LINE {
                    return Err(too_long);
                }
                self.buf.extend_from_slice(data);
                Ok(None)
            }
        }
    }
}

/// `b` without the spaces and tabs (RFC 9110 OWS) at its ends.
fn trim_ows(b: &[u8]) -> &[u8] {
    let ows = |c: &u8| *c == b' ' || *c == b'\t';
    let start = b.iter().position(|c| !ows(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ows(c)).map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or(&[])
}

/// Why a head with a folded line (obs-fold) is refused ([`HttpError::Ambiguous`]).
pub const OBS_FOLD: &str = "a folded header line (obs-fold)";

/// Where the head section ends (just past the blank line), in `buf`.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    // Line ends found a vector at a time (find_byte): heads are parsed on the splice's task,
    // per message.
    let mut from = 0;
    while let Some(i) = buf
        .get(from..)
        .and_then(|b| find_byte(b'\n', b))
        .map(|i| from + i)
    {
        if buf.get(i + 1) == Some(&b'\n') {
            return Some(i + 2);
        }
        if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
            return Some(i + 3);
        }
        from = i + 1;
    }
    None
}

/// The first `needle` in `hay`. On x86-64 this is memchr's SSE2 search, called directly: SSE2
/// is part of every x86-64 CPU, and the run-time choice of memchr's widest search is a call
/// through a pointer that cannot be inlined, which on header lines (20 to 60 bytes) cost more
/// than the search.
#[inline]
fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(one) = memchr::arch::x86_64::sse2::memchr::One::new(needle) {
        return one.find(hay);
    }
    memchr::memchr(needle, hay)
}

/// How many `needle`s `hay` holds (see [`find_byte`]).
#[inline]
fn count_byte(needle: u8, hay: &[u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if let Some(one) = memchr::arch::x86_64::sse2::memchr::One::new(needle) {
        return one.count(hay);
    }
    memchr::memchr_iter(needle, hay).count()
}

/// Token characters (RFC 9110 `tchar`), by byte.
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// Whether `b` may appear in a token, such as a field name or a method (RFC 9110 `tchar`).
pub fn is_tchar(b: u8) -> bool {
    TCHAR.get(usize::from(b)).copied().unwrap_or(false)
}

/// The pieces of `bytes` between line feeds, as `<[u8]>::split` gives them (a last, possibly
/// empty, piece after the last line feed), found with [`find_byte`].
struct Lines<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let r = self.rest?;
        match find_byte(b'\n', r) {
            Some(i) => {
                self.rest = r.get(i + 1..);
                r.get(..i)
            }
            None => {
                self.rest = None;
                Some(r)
            }
        }
    }
}

/// Whether the first bytes a client sent can start an HTTP/1.x request.
pub fn looks_like_request(data: &[u8]) -> bool {
    let data = {
        let skip = data
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        data.get(skip..).unwrap_or(&[])
    };
    let method: Vec<u8> = data
        .iter()
        .take(24)
        .take_while(|b| **b != b' ')
        .copied()
        .collect();
    if method.is_empty() || !method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-') {
        return false;
    }
    // A space must follow soon, unless the data ends first.
    method.len() < 24 && (data.len() == method.len() || data.get(method.len()) == Some(&b' '))
}

/// What parsing a head noticed on the way, for its framing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Noted {
    /// A folded line (obs-fold), left out of the fields.
    folded: bool,
    /// A Transfer-Encoding field.
    transfer_encoding: bool,
    /// A Content-Length field.
    content_length: bool,
}

impl Noted {
    /// Notes a field named `name` if framing reads it (names told apart by length first: most
    /// heads have neither, or only a Content-Length).
    fn field(&mut self, name: &[u8]) {
        match name.len() {
            17 => self.transfer_encoding |= name.eq_ignore_ascii_case(b"transfer-encoding"),
            14 => self.content_length |= name.eq_ignore_ascii_case(b"content-length"),
            _ => {}
        }
    }
}

/// Parses a head into `head`, a fresh one (filled where it lies, not built and moved: a head
/// is 152 bytes, moved twice per message before); returns what its framing needs to know of it.
fn parse_head(
    kind: Kind,
    bytes: &[u8],
    max_headers: usize,
    head: &mut Head,
) -> Result<Noted, HttpError> {
    let (first, block) = match find_byte(b'\n', bytes) {
        Some(i) => (
            bytes.get(..i).unwrap_or(&[]),
            bytes.get(i + 1..).unwrap_or(&[]),
        ),
        None => (bytes, &[][..]),
    };
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    match kind {
        Kind::Request => request_line(first, head)?,
        Kind::Response => status_line(first, head)?,
    }
    // At most a field per line after the first.
    let fields = count_byte(b'\n', block).min(max_headers);
    // The header lines as text: when they are UTF-8 (nearly always), one check and one copy
    // for all of them, and each field a piece of that copy.
    let utf8 = std::str::from_utf8(block).ok();
    head.headers = match utf8 {
        Some(t) => Fields::over(t, fields),
        None => Fields::with_capacity(fields, block.len()),
    };
    // No byte a value may not hold anywhere in the lines: the values need no check of their
    // own (one pass over all the lines runs a vector at a time; per value, most are too short).
    let clean = values_clean(block);
    let mut noted = Noted::default();
    let mut at = 0;
    for line in (Lines { rest: Some(block) }) {
        let start = at;
        at += line.len() + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            // Obsolete line folding: some servers join the lines, others refuse. The head is
            // still shown (without the folded line), marked.
            noted.folded = true;
            continue;
        }
        let colon = find_byte(b':', line).ok_or(HttpError::Header)?;
        let name = line.get(..colon).unwrap_or(&[]);
        if name.is_empty() || !name.iter().fold(true, |ok, &b| ok & is_tchar(b)) {
            return Err(HttpError::Header);
        }
        // The fields framing reads, noted here rather than found in another pass.
        noted.field(name);
        if head.headers.len() >= max_headers {
            return Err(HttpError::TooManyHeaders(max_headers));
        }
        // Only spaces and tabs around a value (OWS): a bare CR or form feed stays in it, to be
        // refused below as httparse refuses it.
        let raw = line.get(colon + 1..).unwrap_or(&[]);
        let value = trim_ows(raw);
        if !clean && !value_ok(value) {
            return Err(HttpError::Header);
        }
        // Where the trimmed value lies in the line (OWS is ASCII: char boundaries); `value`
        // is a piece of `raw`.
        let lead = (value.as_ptr() as usize).saturating_sub(raw.as_ptr() as usize);
        let v = start + colon + 1 + lead;
        if utf8.is_none()
            || !head
                .headers
                .push_span(start..start + colon, v..v + value.len())
        {
            head.headers.push(&text(name), &text(value));
        }
    }
    Ok(noted)
}

/// Field values: visible characters, spaces, tabs and obs-text; no other control characters
/// (a stray CR among them). Checked without an early exit, so that the loop runs a vector at
/// a time.
fn value_ok(value: &[u8]) -> bool {
    !value.iter().fold(false, |bad, &b| {
        bad | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
    })
}

/// Whether header lines hold no byte a value may not: no control character but tabs and line
/// ends, and every CR followed by its LF.
fn values_clean(lines: &[u8]) -> bool {
    let controls = lines.iter().fold(false, |bad, &b| {
        bad | ((b < 0x20) & (b != b'\t') & (b != b'\r') & (b != b'\n')) | (b == 0x7f)
    });
    let next = lines.get(1..).unwrap_or(&[]);
    let bare_cr = lines
        .iter()
        .zip(next)
        .fold(false, |bad, (&b, &n)| bad | ((b == b'\r') & (n != b'\n')));
    !controls && !bare_cr && lines.last() != Some(&b'\r')
}

/// `b` as text, borrowed when it is UTF-8. `from_utf8` checks ASCII a word at a time, where
/// `from_utf8_lossy` walks its chunks first; invalid bytes still become replacement characters.
pub fn text(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

fn version(v: &[u8]) -> Option<Cow<'static, str>> {
    match v {
        b"HTTP/1.1" => Some(Cow::Borrowed("HTTP/1.1")),
        b"HTTP/1.0" => Some(Cow::Borrowed("HTTP/1.0")),
        _ => None,
    }
}

/// Methods and reason phrases seen in most messages: kept without an allocation (a record's
/// allocations are what the full ring frees at each new one).
const COMMON: &[&str] = &[
    // The most common reason first: methods differ from it in length, so it costs them one
    // comparison of lengths.
    "OK",
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "HEAD",
    "OPTIONS",
    "PATCH",
    "CONNECT",
    "TRACE",
    "Created",
    "Accepted",
    "No Content",
    "Partial Content",
    "Moved Permanently",
    "Found",
    "See Other",
    "Not Modified",
    "Temporary Redirect",
    "Permanent Redirect",
    "Bad Request",
    "Unauthorized",
    "Forbidden",
    "Not Found",
    "Method Not Allowed",
    "Conflict",
    "Too Many Requests",
    "Internal Server Error",
    "Bad Gateway",
    "Service Unavailable",
    "Gateway Timeout",
    "Switching Protocols",
    "Continue",
];

/// `bytes` as text, borrowed from [`COMMON`] when it is one of those.
pub fn common_text(bytes: &[u8]) -> Cow<'static, str> {
    match COMMON.iter().find(|c| c.as_bytes() == bytes) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(String::from_utf8_lossy(bytes).into_owned()),
    }
}

fn request_line(line: &[u8], head: &mut Head) -> Result<(), HttpError> {
    let bad = HttpError::StartLine("request");
    let mut parts = line.split(|b| *b == b' ');
    let method = parts.next().ok_or(bad.clone())?;
    let target = parts.next().ok_or(bad.clone())?;
    let ver = parts.next().ok_or(bad.clone())?;
    if parts.next().is_some()
        || method.is_empty()
        || !method.iter().all(|b| is_tchar(*b))
        || target.is_empty()
        || !target.iter().all(|b| b.is_ascii_graphic() || *b >= 0x80)
    {
        return Err(bad);
    }
    let Ok(target) = std::str::from_utf8(target) else {
        return Err(bad);
    };
    head.version = version(ver).ok_or(bad)?;
    head.method = Some(common_text(method));
    head.target = Some(target.to_owned());
    Ok(())
}

fn status_line(line: &[u8], head: &mut Head) -> Result<(), HttpError> {
    let bad = HttpError::StartLine("status");
    let mut parts = line.splitn(3, |b| *b == b' ');
    let ver = version(parts.next().ok_or(bad.clone())?).ok_or(bad.clone())?;
    let code = parts.next().ok_or(bad.clone())?;
    if code.len() != 3 || !code.iter().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    let status = code.iter().fold(0u16, |a, b| a * 10 + u16::from(b - b'0'));
    head.status = Some(status);
    head.reason = parts.next().map(common_text);
    head.version = ver;
    Ok(())
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    // chunk-size [ BWS ";" chunk-ext ]: hex digits only, optionally spaces or tabs and the
    // extensions (ignored). The line must have ended in CRLF.
    let line = line.strip_suffix(b"\r").ok_or(HttpError::ChunkSize)?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (size, rest) = line.split_at(digits);
    let rest = trim_ows(rest);
    if size.is_empty()
        || size.len() > 16
        || !(rest.is_empty() || rest.first() == Some(&b';'))
        || rest.iter().any(|b| b.is_ascii_control() && *b != b'\t')
    {
        return Err(HttpError::ChunkSize);
    }
    let mut n: u64 = 0;
    for b in size {
        let d = (*b as char).to_digit(16).ok_or(HttpError::ChunkSize)?;
        n = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(HttpError::ChunkSize)?;
    }
    Ok(n)
}

/// How many bytes of empty lines (CRLF or LF) `data` starts with; a CR not followed by LF is
/// an error (a partial CR at the end waits).
fn empty_lines(data: &[u8]) -> Result<usize, HttpError> {
    let mut i = 0;
    loop {
        match (data.get(i), data.get(i + 1)) {
            (Some(b'\n'), _) => i += 1,
            (Some(b'\r'), Some(b'\n')) => i += 2,
            (Some(b'\r'), None) => return Ok(i),
            (Some(b'\r'), Some(_)) => return Err(HttpError::StartLine("request")),
            _ => return Ok(i),
        }
    }
}

/// A request's body framing as a strict server reads it (RFC 9112, 6.1 and 6.3): chunked when
/// Transfer-Encoding ends in `chunked` (any other coding is refused), else Content-Length,
/// else no body. Both together, or more than one Content-Length, are ambiguous: servers and
/// proxies disagree on them, so the capture does not pick one.
pub fn request_framing(head: &Head) -> Result<Framing, HttpError> {
    framing_of_request(head, framing_fields(head))
}

/// [`request_framing`], told whether the head has a Transfer-Encoding and a Content-Length.
fn framing_of_request(head: &Head, noted: Noted) -> Result<Framing, HttpError> {
    let (te, cl) = (noted.transfer_encoding, noted.content_length);
    if !te && !cl {
        return Ok(Framing::None);
    }
    let values = |name: &str| -> Vec<&str> {
        head.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .collect()
    };
    let te = values("transfer-encoding");
    let cl = values("content-length");
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err(HttpError::Ambiguous(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if head.version == "HTTP/1.0" {
            return Err(HttpError::Ambiguous(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        let chunked = te
            .iter()
            .filter(|c| c.eq_ignore_ascii_case("chunked"))
            .count();
        let last = te.last().is_some_and(|c| c.eq_ignore_ascii_case("chunked"));
        if !last || chunked > 1 || te.iter().any(|c| c.is_empty()) {
            return Err(HttpError::TransferEncoding);
        }
        return Ok(Framing::Chunked);
    }
    match cl.as_slice() {
        [] => Ok(Framing::None),
        [one] => {
            if one.is_empty() || !one.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::ContentLength);
            }
            one.parse()
                .map(Framing::Length)
                .map_err(|_| HttpError::ContentLength)
        }
        _ => Err(HttpError::Ambiguous("more than one Content-Length")),
    }
}

/// Whether the head has a Transfer-Encoding field, and a Content-Length one, in one pass over
/// its fields (for heads the parser did not note them in).
fn framing_fields(head: &Head) -> Noted {
    let mut noted = Noted::default();
    for (name, _) in &head.headers {
        noted.field(name.as_bytes());
    }
    noted
}

/// A response's framing as clients read it (lenient: the capture follows what the client did).
fn response_framing(head: &Head, noted: Noted) -> Framing {
    let (te, cl) = (noted.transfer_encoding, noted.content_length);
    if !te && !cl {
        return Framing::UntilClose;
    }
    if te {
        let codings: Vec<&str> = head
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if let Some(last) = codings.last() {
            return if last.eq_ignore_ascii_case("chunked") {
                Framing::Chunked
            } else {
                Framing::UntilClose
            };
        }
    }
    let mut length: Option<u64> = None;
    for (_, v) in head
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        for part in v.split(',') {
            match part.trim().parse::<u64>() {
                Ok(n) if length.is_none_or(|l| l == n) => length = Some(n),
                // A bad or conflicting length: clients read to the close.
                _ => return Framing::UntilClose,
            }
        }
    }
    length.map_or(Framing::UntilClose, Framing::Length)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time search the vector one replaced.
    fn find_head_end_bytewise(buf: &[u8]) -> Option<usize> {
        (0..buf.len()).find_map(|i| {
            let at = |k: usize| buf.get(i + k).copied();
            match (at(0), at(1), at(2)) {
                (Some(b'\n'), Some(b'\n'), _) => Some(i + 2),
                (Some(b'\n'), Some(b'\r'), Some(b'\n')) => Some(i + 3),
                _ => None,
            }
        })
    }

    #[test]
    fn line_search_agrees_with_the_bytewise_one() {
        // Every string of up to 7 bytes over the alphabet that matters.
        let alphabet = [b'\n', b'\r', b'a', b':'];
        let mut cases: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..7 {
            let next: Vec<Vec<u8>> = cases
                .iter()
                .filter(|c| c.len() < 7)
                .flat_map(|c| {
                    alphabet.iter().map(move |b| {
                        let mut c = c.clone();
                        c.push(*b);
                        c
                    })
                })
                .collect();
            cases.extend(next);
            cases.sort();
            cases.dedup();
        }
        for c in &cases {
            assert_eq!(find_head_end(c), find_head_end_bytewise(c), "{c:?}");
            let ours: Vec<&[u8]> = Lines { rest: Some(c) }.collect();
            let std: Vec<&[u8]> = c.split(|b| *b == b'\n').collect();
            assert_eq!(ours, std, "{c:?}");
        }
        for b in 0..=255u8 {
            let want = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), want, "{b}");
        }
    }

    #[test]
    fn byte_searches_agree_with_the_plain_ones() {
        // Lengths on both sides of the vector searches' 16 and 64 bytes, the needle nowhere,
        // once or twice at every place, from every offset of the allocation.
        let mut buf = [b'a'; 200];
        for len in 0..140 {
            for start in 0..17 {
                let hay = &mut buf[start..start + len];
                hay.fill(b'a');
                assert_eq!(find_byte(b'\n', hay), None);
                assert_eq!(count_byte(b'\n', hay), 0);
                for at in 0..len {
                    hay.fill(b'a');
                    hay[at] = b'\n';
                    hay[len - 1 - (len - 1 - at) / 2] = b'\n';
                    let plain = hay.iter().position(|b| *b == b'\n');
                    let n = hay.iter().filter(|b| **b == b'\n').count();
                    assert_eq!(find_byte(b'\n', hay), plain, "{len} {start} {at}");
                    assert_eq!(count_byte(b'\n', hay), n, "{len} {start} {at}");
                }
            }
        }
    }

    /// A head parsed into a fresh one, with what its framing needs.
    fn parse_head(
        kind: Kind,
        bytes: &[u8],
        max_headers: usize,
    ) -> Result<(Head, Noted), HttpError> {
        let mut head = Head::default();
        super::parse_head(kind, bytes, max_headers, &mut head).map(|n| (head, n))
    }

    /// The head parser before it checked and copied all header lines at once: every value
    /// checked and copied on its own.
    fn parse_head_per_field(
        kind: Kind,
        bytes: &[u8],
        max_headers: usize,
    ) -> Result<(Head, bool), HttpError> {
        let mut folded = false;
        let mut lines = Lines { rest: Some(bytes) }.map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let first = lines.next().unwrap_or(&[]);
        let mut head = Head::default();
        match kind {
            Kind::Request => request_line(first, &mut head)?,
            Kind::Response => status_line(first, &mut head)?,
        }
        for line in lines {
            if line.is_empty() {
                break;
            }
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                folded = true;
                continue;
            }
            let colon = find_byte(b':', line).ok_or(HttpError::Header)?;
            let name = line.get(..colon).unwrap_or(&[]);
            if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
                return Err(HttpError::Header);
            }
            if head.headers.len() >= max_headers {
                return Err(HttpError::TooManyHeaders(max_headers));
            }
            let value = trim_ows(line.get(colon + 1..).unwrap_or(&[]));
            if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(HttpError::Header);
            }
            head.headers.push(&text(name), &text(value));
        }
        Ok((head, folded))
    }

    #[test]
    fn head_parse_agrees_with_the_per_field_one() {
        let names: [&[u8]; 6] = [
            b"Host",
            b"Content-Length",
            b"transfer-encoding",
            b"Content-Lengthy",
            b"Bad Name",
            b"",
        ];
        let seps: [&[u8]; 4] = [b":", b": ", b":\t ", b" :"];
        let values: [&[u8]; 12] = [
            b"a",
            b" b \t",
            b"c\r",
            b"\rc",
            b"\x0cd",
            b"e\x7f",
            "caf\u{e9}".as_bytes(),
            b"\xff\xfe",
            b"",
            b"\t",
            b"x\ry",
            b"\x00",
        ];
        let ends: [&[u8]; 2] = [b"\r\n", b"\n"];
        let mut lines: Vec<Vec<u8>> = vec![b" folded\r\n".to_vec(), b"\t\xff\n".to_vec()];
        for n in names {
            for s in seps {
                for v in values {
                    for e in ends {
                        lines.push([n, s, v, e].concat());
                    }
                }
            }
        }
        let starts: [(Kind, &[u8]); 3] = [
            (Kind::Request, b"GET /a HTTP/1.1\r\n"),
            (Kind::Response, b"HTTP/1.1 200 OK\r\n"),
            (Kind::Response, b"HTTP/1.0 404 \xff\n"),
        ];
        let mut cases = 0;
        for (kind, start) in starts {
            for (i, a) in lines.iter().enumerate() {
                // Two-line heads for a sample of pairs, one-line heads for every line.
                for b in lines.iter().skip(i % 7).step_by(23).map(Some).chain([None]) {
                    for end in [&b"\r\n"[..], b"\n", b"\r"] {
                        let mut head = start.to_vec();
                        head.extend_from_slice(a);
                        if let Some(b) = b {
                            head.extend_from_slice(b);
                        }
                        head.extend_from_slice(end);
                        for max in [1, 8] {
                            let ours = parse_head(kind, &head, max);
                            let theirs = parse_head_per_field(kind, &head, max);
                            let text = String::from_utf8_lossy(&head);
                            // The framing fields noted on the way are those a pass finds.
                            if let Ok((h, noted)) = &ours {
                                let pass = framing_fields(h);
                                assert_eq!(
                                    (noted.transfer_encoding, noted.content_length),
                                    (pass.transfer_encoding, pass.content_length),
                                    "{text:?}"
                                );
                            }
                            let ours = ours.map(|(h, noted)| (h, noted.folded));
                            assert_eq!(ours, theirs, "{text:?}");
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert!(cases > 10_000, "{cases}");
    }

    #[test]
    fn a_parsed_heads_fields_are_pieces_of_its_lines() {
        let head = b"GET / HTTP/1.1\r\nHost:  a b \t\r\nX-Empty:\r\nAccept: */*\r\n\r\n";
        let (h, noted) = parse_head(Kind::Request, head, 8).unwrap();
        assert!(!noted.folded);
        let pairs: Vec<(&str, &str)> = h.headers.iter().collect();
        assert_eq!(pairs, [("Host", "a b"), ("X-Empty", ""), ("Accept", "*/*")]);
        // One copy of the header lines, not one per name and value.
        assert_eq!(
            h.headers.text_len(),
            head.len() - b"GET / HTTP/1.1\r\n".len()
        );
    }
}

//! One direction of an HTTP/1.x connection: a sequence of messages.

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
    /// Request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request target (path and query, usually).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Response status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Response reason phrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Header lines in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
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
    pub body: Vec<u8>,
    /// The body's full length.
    pub body_len: u64,
    /// Whether `body` holds less than `body_len`.
    pub truncated: bool,
    /// Whether the message ended properly (false: cut by an error or the connection's end).
    pub complete: bool,
    /// Trailer fields (HTTP/2 trailers; gRPC's status is there).
    pub trailers: Vec<(String, String)>,
}

/// Result of one [`MessageParser::parse`] step: bytes used and maybe a finished message.
pub type Parsed = (usize, Option<Message>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
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
        }
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
        let had_head = matches!(self.state, State::Body(_) | State::Chunked(_));
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
        match self.state {
            State::Paused => Ok((0, None)),
            State::Idle => {
                // Stray CRLFs between messages are allowed.
                let skip = data
                    .iter()
                    .take_while(|b| **b == b'\r' || **b == b'\n')
                    .count();
                if skip == data.len() {
                    return Ok((skip, None));
                }
                self.state = State::Head;
                self.buf.clear();
                self.msg = Message::default();
                let (used, msg) = self.parse_head(data.get(skip..).unwrap_or(&[]))?;
                Ok((skip + used, msg))
            }
            State::Head => self.parse_head(data),
            State::Body(f) => Ok(self.parse_body(f, data)),
            State::Chunked(c) => self.parse_chunked(c, data),
        }
    }

    fn parse_head(&mut self, data: &[u8]) -> Result<Parsed, HttpError> {
        // Look for the blank line, also across the boundary of the previous call.
        let start = self.buf.len().saturating_sub(3);
        let room = self.limits.max_head_bytes.saturating_sub(self.buf.len());
        let take = data.len().min(room.saturating_add(4));
        self.buf.extend_from_slice(data.get(..take).unwrap_or(data));
        let end = find_head_end(self.buf.get(start..).unwrap_or(&[])).map(|e| start + e);
        let Some(end) = end else {
            if self.buf.len() > self.limits.max_head_bytes {
                return Err(HttpError::HeadTooLarge(self.limits.max_head_bytes));
            }
            return Ok((take, None));
        };
        if end > self.limits.max_head_bytes {
            return Err(HttpError::HeadTooLarge(self.limits.max_head_bytes));
        }
        let used_here = end - (self.buf.len() - take);
        let head_bytes = self.buf.get(..end).unwrap_or(&[]).to_vec();
        self.buf.clear();
        let head = parse_head(self.kind, &head_bytes, self.limits.max_headers)?;
        let framing = self.framing(&head)?;
        self.msg.head = head;
        match framing {
            Framing::None | Framing::Length(0) => {
                self.state = State::Idle;
                let mut m = std::mem::take(&mut self.msg);
                m.complete = true;
                Ok((used_here, Some(m)))
            }
            Framing::Chunked => {
                self.state = State::Chunked(Chunk::Size);
                Ok((used_here, None))
            }
            f => {
                self.state = State::Body(f);
                Ok((used_here, None))
            }
        }
    }

    fn framing(&self, head: &Head) -> Result<Framing, HttpError> {
        if self.kind == Kind::Response {
            let s = head.status.unwrap_or(0);
            if (100..200).contains(&s) || s == 204 || s == 304 || self.answers_head {
                return Ok(Framing::None);
            }
            if self.answers_connect && (200..300).contains(&s) {
                return Ok(Framing::None);
            }
        }
        let te: Vec<&str> = head
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if let Some(last) = te.last() {
            if last.eq_ignore_ascii_case("chunked") {
                return Ok(Framing::Chunked);
            }
            return match self.kind {
                Kind::Request => Err(HttpError::TransferEncoding),
                Kind::Response => Ok(Framing::UntilClose),
            };
        }
        let mut length: Option<u64> = None;
        for (_, v) in head
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            for part in v.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(HttpError::ContentLength);
                }
                let n: u64 = part.parse().map_err(|_| HttpError::ContentLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(HttpError::ContentLength);
                }
                length = Some(n);
            }
        }
        Ok(match (length, self.kind) {
            (Some(n), _) => Framing::Length(n),
            (None, Kind::Request) => Framing::None,
            (None, Kind::Response) => Framing::UntilClose,
        })
    }

    fn keep_body(&mut self, bytes: &[u8]) {
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

    fn parse_body(&mut self, f: Framing, data: &[u8]) -> Parsed {
        match f {
            Framing::Length(remaining) => {
                let n = (data.len() as u64).min(remaining) as usize;
                self.keep_body(data.get(..n).unwrap_or(&[]));
                let left = remaining - n as u64;
                if left == 0 {
                    self.state = State::Idle;
                    let mut m = std::mem::take(&mut self.msg);
                    m.complete = true;
                    (n, Some(m))
                } else {
                    self.state = State::Body(Framing::Length(left));
                    (n, None)
                }
            }
            Framing::UntilClose => {
                self.keep_body(data);
                (data.len(), None)
            }
            Framing::None | Framing::Chunked => (0, None),
        }
    }

    fn parse_chunked(&mut self, c: Chunk, data: &[u8]) -> Result<Parsed, HttpError> {
        match c {
            Chunk::Size => {
                let Some((line, used)) = self.line(data, HttpError::ChunkSize)? else {
                    return Ok((data.len(), None));
                };
                let size = parse_chunk_size(&line)?;
                self.state = State::Chunked(if size == 0 {
                    self.trailers = 0;
                    Chunk::Trailer
                } else {
                    Chunk::Data(size)
                });
                Ok((used, None))
            }
            Chunk::Data(remaining) => {
                let n = (data.len() as u64).min(remaining) as usize;
                self.keep_body(data.get(..n).unwrap_or(&[]));
                let left = remaining - n as u64;
                self.state = State::Chunked(if left == 0 {
                    Chunk::DataEnd(0)
                } else {
                    Chunk::Data(left)
                });
                Ok((n, None))
            }
            Chunk::DataEnd(seen) => {
                let mut used = 0;
                let mut seen = seen;
                for b in data {
                    match (seen, *b) {
                        (0, b'\r') => seen = 1,
                        (0, b'\n') | (1, b'\n') => {
                            used += 1;
                            self.state = State::Chunked(Chunk::Size);
                            return Ok((used, None));
                        }
                        _ => return Err(HttpError::ChunkEnd),
                    }
                    used += 1;
                }
                self.state = State::Chunked(Chunk::DataEnd(seen));
                Ok((used, None))
            }
            Chunk::Trailer => {
                let Some((line, used)) = self.line(data, HttpError::Header)? else {
                    return Ok((data.len(), None));
                };
                if line.is_empty() {
                    self.state = State::Idle;
                    let mut m = std::mem::take(&mut self.msg);
                    m.complete = true;
                    return Ok((used, Some(m)));
                }
                self.trailers += 1;
                if self.trailers > self.limits.max_headers {
                    return Err(HttpError::TooManyHeaders(self.limits.max_headers));
                }
                Ok((used, None))
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
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
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

/// Where the head section ends (just past the blank line), in `buf`.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf.get(i) == Some(&b'\n') {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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

fn parse_head(kind: Kind, bytes: &[u8], max_headers: usize) -> Result<Head, HttpError> {
    let mut lines = bytes
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().unwrap_or(&[]);
    let mut head = match kind {
        Kind::Request => request_line(first)?,
        Kind::Response => status_line(first)?,
    };
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            // Obsolete line folding.
            return Err(HttpError::Header);
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(HttpError::Header)?;
        let name = line.get(..colon).unwrap_or(&[]);
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(HttpError::Header);
        }
        if head.headers.len() >= max_headers {
            return Err(HttpError::TooManyHeaders(max_headers));
        }
        let value = line.get(colon + 1..).unwrap_or(&[]).trim_ascii();
        head.headers.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Ok(head)
}

fn version(v: &[u8]) -> Option<String> {
    match v {
        b"HTTP/1.1" | b"HTTP/1.0" => Some(String::from_utf8_lossy(v).into_owned()),
        _ => None,
    }
}

fn request_line(line: &[u8]) -> Result<Head, HttpError> {
    let bad = HttpError::StartLine("request");
    let mut parts = line.split(|b| *b == b' ');
    let method = parts.next().ok_or(bad.clone())?;
    let target = parts.next().ok_or(bad.clone())?;
    let ver = parts.next().ok_or(bad.clone())?;
    if parts.next().is_some()
        || method.is_empty()
        || !method.iter().all(|b| is_tchar(*b))
        || target.is_empty()
        || !target.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(bad);
    }
    Ok(Head {
        method: Some(String::from_utf8_lossy(method).into_owned()),
        target: Some(String::from_utf8_lossy(target).into_owned()),
        version: version(ver).ok_or(bad)?,
        ..Head::default()
    })
}

fn status_line(line: &[u8]) -> Result<Head, HttpError> {
    let bad = HttpError::StartLine("status");
    let mut parts = line.splitn(3, |b| *b == b' ');
    let ver = version(parts.next().ok_or(bad.clone())?).ok_or(bad.clone())?;
    let code = parts.next().ok_or(bad.clone())?;
    if code.len() != 3 || !code.iter().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    let status = code.iter().fold(0u16, |a, b| a * 10 + u16::from(b - b'0'));
    let reason = parts
        .next()
        .map(|r| String::from_utf8_lossy(r).into_owned());
    Ok(Head {
        status: Some(status),
        reason,
        version: ver,
        ..Head::default()
    })
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    // Extensions after ';' are ignored.
    let size = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or(&[])
        .trim_ascii();
    if size.is_empty() || size.len() > 16 {
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

//! Following the server-to-client bytes of a proxied connection far enough to end it well: did
//! the server switch to WebSocket (`HTTP/1.x 101`), and is the stream between two frames, where
//! a close frame can be put in without cutting one of the server's frames (RFC 6455, 5.2).
//! [`FrameReader`] is the frame-boundary follower itself; the traffic capture uses it too, to
//! cut both directions of a WebSocket into messages (`capture::ws`).
//!
//! Used when a restart's drain timeout closes connections the old process still has: WebSocket
//! clients then get close code 1012 (Service Restart) instead of a reset. Works on any split of
//! the stream into chunks; never panics on any input (fuzz target `wsframe`).

/// Close code 1012: the service is restarting (IANA WebSocket close code registry).
pub const SERVICE_RESTART: u16 = 1012;

/// The longest response head looked through for its end; a longer one is not followed.
const MAX_HEAD: usize = 16 * 1024;

/// Where the stream is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Before the first response's status line is complete: its first bytes so far.
    Start(Vec<u8>),
    /// In the head of the 101 response: bytes of it seen, and the last three bytes.
    Head { seen: usize, last: [u8; 3] },
    /// In WebSocket frames.
    Frames(FrameReader),
    /// Not a WebSocket connection (or one this tracker lost track of).
    Other,
}

/// A WebSocket frame header (RFC 6455, 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The last frame of a message.
    pub fin: bool,
    /// The three reserved bits (non-zero only with an extension such as permessage-deflate).
    pub rsv: u8,
    /// The opcode (0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong).
    pub opcode: u8,
    /// The masking key (frames from clients carry one).
    pub mask: Option<[u8; 4]>,
    /// Payload bytes that follow the header.
    pub payload_len: u64,
}

/// What a [`FrameReader`] found in the bytes it was given, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameEvent<'a> {
    /// A frame's header is complete (a frame with an empty payload gets no `Payload`).
    Header(FrameHeader),
    /// Payload bytes of the current frame, still masked if the frame is.
    Payload(&'a [u8]),
}

/// Position inside a sequence of frames: follows frame boundaries over any split of the
/// stream into chunks. Memory: one header (14 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FrameReader {
    /// The header bytes of the current frame seen so far (at most 14).
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
}

impl FrameReader {
    /// A reader at a frame boundary.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// The header length once its first two bytes are known.
    fn header_size(&self) -> Option<usize> {
        if self.header_len < 2 {
            return None;
        }
        let b1 = self.header[1];
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        Some(2 + ext + mask)
    }

    /// The complete header in `self.header`.
    fn parsed(&self) -> FrameHeader {
        let h = &self.header;
        let b1 = h[1] & 0x7f;
        let (payload_len, at) = match b1 {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = (h[1] & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        FrameHeader {
            fin: h[0] & 0x80 != 0,
            rsv: (h[0] >> 4) & 0x7,
            opcode: h[0] & 0x0f,
            mask,
            payload_len,
        }
    }

    /// Consumes frame bytes from `data`, telling `on` about headers and payload pieces.
    pub fn feed<'a>(&mut self, mut data: &'a [u8], mut on: impl FnMut(FrameEvent<'a>)) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.payload_left -= n as u64;
                on(FrameEvent::Payload(&data[..n]));
                data = &data[n..];
                continue;
            }
            let want = self.header_size().unwrap_or(2);
            let n = (want - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            // Two bytes tell the full size; the loop then takes the rest of the header.
            if self.header_size() == Some(self.header_len) {
                let h = self.parsed();
                self.payload_left = h.payload_len;
                self.header_len = 0;
                on(FrameEvent::Header(h));
            }
        }
    }

    /// Whether the stream is between two frames.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0
    }
}

/// Follows one connection's server-to-client stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    state: State,
}

impl Default for Upgrade {
    fn default() -> Self {
        Self::new()
    }
}

impl Upgrade {
    /// A tracker at the start of a connection.
    pub fn new() -> Self {
        Upgrade {
            state: State::Start(Vec::new()),
        }
    }

    /// Takes the next bytes the server sent.
    pub fn feed(&mut self, mut data: &[u8]) {
        loop {
            match &mut self.state {
                State::Start(first) => {
                    const STATUS: usize = b"HTTP/1.1 101".len();
                    let n = (STATUS - first.len()).min(data.len());
                    first.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if first.len() < STATUS {
                        return;
                    }
                    let switching = (first.starts_with(b"HTTP/1.1 ")
                        || first.starts_with(b"HTTP/1.0 "))
                        && first.ends_with(b"101");
                    self.state = if switching {
                        State::Head {
                            seen: STATUS,
                            last: [0; 3],
                        }
                    } else {
                        State::Other
                    };
                }
                State::Head { seen, last } => {
                    let mut end = None;
                    for (i, &b) in data.iter().enumerate() {
                        if *last == *b"\r\n\r" && b == b'\n' {
                            end = Some(i + 1);
                            break;
                        }
                        *last = [last[1], last[2], b];
                    }
                    match end {
                        Some(i) => {
                            data = &data[i..];
                            self.state = State::Frames(FrameReader::new());
                        }
                        None => {
                            *seen = seen.saturating_add(data.len());
                            if *seen > MAX_HEAD {
                                self.state = State::Other;
                            }
                            return;
                        }
                    }
                }
                State::Frames(f) => {
                    f.feed(data, |_| {});
                    return;
                }
                State::Other => return,
            }
        }
    }

    /// Whether the server switched the connection to WebSocket.
    pub fn is_websocket(&self) -> bool {
        matches!(self.state, State::Head { .. } | State::Frames(_))
    }

    /// Whether a close frame can be sent to the client now: between two of the server's frames.
    pub fn at_frame_boundary(&self) -> bool {
        matches!(&self.state, State::Frames(f) if f.at_boundary())
    }
}

/// An unmasked close frame (server to client) with `code` and no reason.
pub const fn close_frame(code: u16) -> [u8; 4] {
    let c = code.to_be_bytes();
    [0x88, 0x02, c[0], c[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANDSHAKE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

    fn stream() -> Vec<u8> {
        let mut s = HANDSHAKE.to_vec();
        s.extend_from_slice(&[0x81, 0x05]);
        s.extend_from_slice(b"hello");
        // 300-byte binary frame: 16-bit length.
        s.extend_from_slice(&[0x82, 126, 0x01, 0x2c]);
        s.extend_from_slice(&[7u8; 300]);
        // A ping.
        s.extend_from_slice(&[0x89, 0x00]);
        s
    }

    #[test]
    fn test_parse_follows_frames_in_any_split() {
        let s = stream();
        for split in [1, 2, 3, 7, 64, s.len()] {
            let mut u = Upgrade::new();
            for chunk in s.chunks(split) {
                u.feed(chunk);
            }
            assert!(u.is_websocket());
            assert!(u.at_frame_boundary(), "split {split}");
        }
        let mut u = Upgrade::new();
        u.feed(&s[..HANDSHAKE.len() + 4]);
        assert!(u.is_websocket() && !u.at_frame_boundary(), "inside 'hello'");
        u.feed(&s[HANDSHAKE.len() + 4..HANDSHAKE.len() + 7]);
        assert!(u.at_frame_boundary());
        u.feed(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0]);
        assert!(!u.at_frame_boundary(), "inside a 64-bit length frame");
    }

    #[test]
    fn other_responses_are_not_websocket() {
        let mut u = Upgrade::new();
        u.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!u.is_websocket() && !u.at_frame_boundary());
        let mut u = Upgrade::new();
        u.feed(b"SSH-2.0-OpenSSH");
        assert!(!u.is_websocket());
        let mut u = Upgrade::new();
        u.feed(b"HTTP/1.1 10");
        assert!(!u.is_websocket());
        u.feed(b"1 Switching");
        assert!(u.is_websocket() && !u.at_frame_boundary(), "head not over");
    }

    #[test]
    fn test_emit_close_frame() {
        assert_eq!(close_frame(SERVICE_RESTART), [0x88, 0x02, 0x03, 0xf4]);
    }
}

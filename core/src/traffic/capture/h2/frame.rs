//! HTTP/2 frames (RFC 9113, section 4) read from one direction of a connection, over any split
//! of the stream into chunks.
//!
//! DATA payloads are handed out as they come (padding removed), never buffered, so a 16 MiB
//! frame costs nothing; other frames are collected whole up to [`MAX_PAYLOAD`] bytes and
//! skipped (reported without payload) beyond. Memory: one frame header and at most
//! [`MAX_PAYLOAD`] bytes. Nothing here panics on input.

/// The client connection preface (RFC 9113, 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest non-DATA frame payload collected; larger ones are skipped.
pub const MAX_PAYLOAD: usize = 256 * 1024;

/// Frame types.
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, PUSH_PROMISE, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
    /// PADDED (DATA, HEADERS, PUSH_PROMISE).
    pub const PADDED: u8 = 0x8;
    /// PRIORITY (HEADERS).
    pub const PRIORITY: u8 = 0x20;
}

/// A frame's 9-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Payload length.
    pub len: u32,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (the reserved bit cleared).
    pub stream: u32,
}

impl FrameHead {
    /// Parses the 9 header bytes.
    pub fn parse(b: &[u8; 9]) -> FrameHead {
        FrameHead {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Whether `f` is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// What the reader found, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole frame other than DATA, its payload as sent (padding included), or `None` when
    /// it was longer than [`MAX_PAYLOAD`] and skipped.
    Frame(FrameHead, Option<&'a [u8]>),
    /// DATA payload bytes of `stream`, padding removed.
    Data {
        /// The stream.
        stream: u32,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// A DATA frame ended.
    DataEnd {
        /// The stream.
        stream: u32,
        /// Its END_STREAM flag.
        end_stream: bool,
    },
}

/// Why the bytes are not HTTP/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The client did not start with the connection preface.
    #[error("the client did not send the HTTP/2 connection preface")]
    Preface,
    /// A DATA frame's padding is longer than the frame.
    #[error("a DATA frame with more padding than payload")]
    Padding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cur {
    /// Between frames.
    Idle,
    /// A DATA frame: waiting for its pad length byte.
    DataPadLen { head: FrameHead },
    /// A DATA frame's data: bytes left, then padding.
    Data {
        head: FrameHead,
        left: u32,
        pad: u32,
    },
    /// A DATA frame's padding.
    DataPad { head: FrameHead, left: u32 },
    /// Another frame, collected in `buf` (or skipped): bytes left.
    Other {
        head: FrameHead,
        left: u32,
        keep: bool,
    },
}

/// One direction's frames.
#[derive(Debug, Clone)]
pub struct FrameReader {
    /// Preface bytes still expected (the client's direction only).
    preface_left: usize,
    head: [u8; 9],
    head_len: usize,
    cur: Cur,
    buf: Vec<u8>,
}

impl FrameReader {
    /// A reader for the client's direction (expects the preface) or the server's.
    pub fn new(client: bool) -> FrameReader {
        FrameReader {
            preface_left: if client { PREFACE.len() } else { 0 },
            head: [0; 9],
            head_len: 0,
            cur: Cur::Idle,
            buf: Vec::new(),
        }
    }

    /// The next event from `data` (consuming what it used), or `None` when `data` is used up.
    pub fn next<'s, 'd: 's>(
        &'s mut self,
        data: &mut &'d [u8],
    ) -> Result<Option<Event<'s>>, FrameError> {
        loop {
            if self.preface_left > 0 {
                let at = PREFACE.len() - self.preface_left;
                let n = self.preface_left.min(data.len());
                if data.get(..n) != PREFACE.get(at..at + n) {
                    return Err(FrameError::Preface);
                }
                self.preface_left -= n;
                *data = data.get(n..).unwrap_or(&[]);
            }
            match self.cur {
                Cur::Idle => {
                    if data.is_empty() {
                        return Ok(None);
                    }
                    let n = (9 - self.head_len).min(data.len());
                    for (slot, b) in self.head.iter_mut().skip(self.head_len).zip(data.iter()) {
                        *slot = *b;
                    }
                    self.head_len += n;
                    *data = data.get(n..).unwrap_or(&[]);
                    if self.head_len < 9 {
                        return Ok(None);
                    }
                    self.head_len = 0;
                    let head = FrameHead::parse(&self.head);
                    if head.kind == kind::DATA {
                        if head.has(flag::PADDED) {
                            if head.len == 0 {
                                return Err(FrameError::Padding);
                            }
                            self.cur = Cur::DataPadLen { head };
                        } else {
                            self.cur = Cur::Data {
                                head,
                                left: head.len,
                                pad: 0,
                            };
                        }
                    } else {
                        self.buf.clear();
                        self.cur = Cur::Other {
                            head,
                            left: head.len,
                            keep: head.len as usize <= MAX_PAYLOAD,
                        };
                    }
                }
                Cur::DataPadLen { head } => {
                    let Some((&pad, rest)) = data.split_first() else {
                        return Ok(None);
                    };
                    *data = rest;
                    let pad = u32::from(pad);
                    let left = head.len.checked_sub(1 + pad).ok_or(FrameError::Padding)?;
                    self.cur = Cur::Data { head, left, pad };
                }
                Cur::Data { head, left, pad } => {
                    if left == 0 {
                        self.cur = Cur::DataPad { head, left: pad };
                        continue;
                    }
                    if data.is_empty() {
                        return Ok(None);
                    }
                    let n = (left as usize).min(data.len());
                    let (bytes, rest) = data.split_at(n);
                    *data = rest;
                    self.cur = Cur::Data {
                        head,
                        left: left - n as u32,
                        pad,
                    };
                    return Ok(Some(Event::Data {
                        stream: head.stream,
                        bytes,
                    }));
                }
                Cur::DataPad { head, left } => {
                    let n = (left as usize).min(data.len());
                    *data = data.get(n..).unwrap_or(&[]);
                    if left as usize > n {
                        self.cur = Cur::DataPad {
                            head,
                            left: left - n as u32,
                        };
                        return Ok(None);
                    }
                    self.cur = Cur::Idle;
                    return Ok(Some(Event::DataEnd {
                        stream: head.stream,
                        end_stream: head.has(flag::END_STREAM),
                    }));
                }
                Cur::Other { head, left, keep } => {
                    let n = (left as usize).min(data.len());
                    if keep {
                        self.buf.extend_from_slice(data.get(..n).unwrap_or(&[]));
                    }
                    *data = data.get(n..).unwrap_or(&[]);
                    if left as usize > n {
                        self.cur = Cur::Other {
                            head,
                            left: left - n as u32,
                            keep,
                        };
                        return Ok(None);
                    }
                    self.cur = Cur::Idle;
                    let payload = keep.then_some(self.buf.as_slice());
                    return Ok(Some(Event::Frame(head, payload)));
                }
            }
        }
    }
}

/// Appends one frame to `out` (for tests and fuzz seeds).
pub fn emit(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(r: &mut FrameReader, data: &[u8], split: usize) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in data.chunks(split) {
            let mut d = chunk;
            while let Some(ev) = r.next(&mut d).unwrap() {
                out.push(match ev {
                    Event::Frame(h, p) => format!("frame {} {:?}", h.kind, p.map(|p| p.len())),
                    Event::Data { stream, bytes } => format!("data {stream} {bytes:?}"),
                    Event::DataEnd { stream, end_stream } => format!("end {stream} {end_stream}"),
                });
            }
        }
        // Adjacent data pieces of one stream, joined, so splits compare equal.
        let mut joined: Vec<String> = Vec::new();
        for e in out {
            match (joined.last_mut(), e.strip_prefix("data ")) {
                (Some(last), Some(rest)) if last.starts_with("data ") => {
                    let add = rest.split_once(' ').map(|x| x.1).unwrap_or("");
                    last.pop();
                    last.push_str(", ");
                    last.push_str(add.trim_start_matches('['));
                }
                _ => joined.push(e),
            }
        }
        joined
    }

    #[test]
    fn test_parse_frames_in_any_split() {
        let mut s = PREFACE.to_vec();
        emit(&mut s, kind::SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]);
        emit(&mut s, kind::DATA, flag::END_STREAM, 1, b"abc");
        // Padded: pad length 2, data "xy", two bytes of padding.
        emit(&mut s, kind::DATA, flag::PADDED, 3, &[2, b'x', b'y', 0, 0]);
        emit(&mut s, kind::HEADERS, flag::END_HEADERS, 3, &[0x82]);
        let want = events(&mut FrameReader::new(true), &s, s.len());
        assert_eq!(
            want,
            [
                "frame 4 Some(6)",
                "data 1 [97, 98, 99]",
                "end 1 true",
                "data 3 [120, 121]",
                "end 3 false",
                "frame 1 Some(1)"
            ]
        );
        for split in [1, 2, 5, 9, 10] {
            assert_eq!(events(&mut FrameReader::new(true), &s, split), want);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut r = FrameReader::new(true);
        let mut d: &[u8] = b"GET / HTTP/1.1\r\n";
        assert_eq!(r.next(&mut d), Err(FrameError::Preface));
        let mut r = FrameReader::new(false);
        let mut s = Vec::new();
        emit(&mut s, kind::DATA, flag::PADDED, 1, &[9, 1]);
        let mut d = s.as_slice();
        assert_eq!(r.next(&mut d), Err(FrameError::Padding));
        // A huge non-DATA frame is skipped, not buffered.
        let mut r = FrameReader::new(false);
        let mut s = Vec::new();
        emit(&mut s, kind::HEADERS, 0, 1, &vec![0u8; MAX_PAYLOAD + 1]);
        let mut d = s.as_slice();
        let ev = r.next(&mut d).unwrap();
        assert!(matches!(ev, Some(Event::Frame(_, None))));
    }
}

//! WebSocket framing (RFC 6455, section 5) for WireGuard datagrams: one binary message each.
//!
//! Only what the overlay needs: unfragmented binary messages up to [`MAX_PAYLOAD`] bytes, and
//! ping, pong and close. The client masks (the RFC requires it, and some proxies check), the
//! server does not. Continuation frames, reserved bits and text messages are errors: neither
//! side ever sends them, so they mean someone else is talking. Once [`FrameBuffer::next_frame`]
//! returned an error the stream is to be closed. Parsing never panics (fuzz target
//! `stream_frame`).

/// The largest payload accepted: a WireGuard datagram is never longer (a UDP datagram's limit).
pub const MAX_PAYLOAD: usize = 65535;
/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER: usize = 14;
/// Control frames (ping, pong, close) carry at most this much (RFC 6455, 5.5).
const MAX_CONTROL: usize = 125;

/// Which end of the stream this is: it decides who masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The node: sends masked frames, expects unmasked ones.
    Client,
    /// The relay: sends unmasked frames, expects masked ones.
    Server,
}

/// The kinds of frame the overlay uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// A WireGuard datagram.
    Binary,
    /// The other end closes.
    Close,
    /// Asks for a pong.
    Ping,
    /// Answers a ping.
    Pong,
}

impl Opcode {
    fn code(self) -> u8 {
        match self {
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }
}

/// Why a stream's bytes are not frames the overlay accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame longer than [`MAX_PAYLOAD`] (or a control frame over 125 bytes).
    #[error("a frame of {len} bytes is over the limit of {limit}")]
    TooLong {
        /// The length the header announced.
        len: u64,
        /// The limit for this kind of frame.
        limit: usize,
    },
    /// A fragment, a text message, reserved bits or an unknown opcode.
    #[error("a frame the overlay does not use (first byte {0:#04x})")]
    Unsupported(u8),
    /// Masked when it must not be, or the other way round.
    #[error("a frame with the wrong masking for its direction")]
    Masking,
}

/// One complete frame, its payload unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Its kind.
    pub opcode: Opcode,
    /// Its payload.
    pub payload: &'a [u8],
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

/// Parses the header at the start of `b`; `Ok(None)` when more bytes are needed.
fn parse_header(b: &[u8], expect: Role) -> Result<Option<Header>, FrameError> {
    let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else {
        return Ok(None);
    };
    // FIN set, no reserved bits: one unfragmented frame.
    let opcode = match b0 {
        0x82 => Opcode::Binary,
        0x88 => Opcode::Close,
        0x89 => Opcode::Ping,
        0x8A => Opcode::Pong,
        other => return Err(FrameError::Unsupported(other)),
    };
    let masked = b1 & 0x80 != 0;
    // The relay (server) reads what clients send: masked. The node reads unmasked.
    if masked != (expect == Role::Server) {
        return Err(FrameError::Masking);
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(l) => (u64::from(u16::from_be_bytes([l[0], l[1]])), 4),
            None => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(l) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(l);
                (u64::from_be_bytes(a), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let limit = if opcode == Opcode::Binary {
        MAX_PAYLOAD
    } else {
        MAX_CONTROL
    };
    if len > limit as u64 {
        return Err(FrameError::TooLong { len, limit });
    }
    let mask = if masked {
        let Some(m) = b.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some(Header {
        opcode,
        mask,
        header_len: at,
        // Checked against the limit above: fits.
        payload_len: len as usize,
    }))
}

fn apply_mask(mask: [u8; 4], payload: &mut [u8]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends one frame with `payload` to `out`; `mask` is given by the client (random per
/// frame, see RFC 6455 10.3) and `None` by the server. A payload over [`MAX_PAYLOAD`] is the
/// caller's bug: it is not sent (returns false).
pub fn encode(opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) -> bool {
    let limit = if opcode == Opcode::Binary {
        MAX_PAYLOAD
    } else {
        MAX_CONTROL
    };
    if payload.len() > limit {
        return false;
    }
    out.push(0x80 | opcode.code());
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(m | n as u8),
        n => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    let start = match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.len()
        }
        None => out.len(),
    };
    out.extend_from_slice(payload);
    if let Some(k) = mask {
        apply_mask(k, &mut out[start..]);
    }
    true
}

/// Bytes read from a stream, cut into frames. Holds at most two frames' worth of bytes
/// ([`FrameBuffer::CAPACITY`]): the reader never reads more than fits.
pub struct FrameBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    expect: Role,
}

impl FrameBuffer {
    /// Bytes buffered at most: a whole largest frame and as much again for the next read.
    pub const CAPACITY: usize = 2 * (MAX_HEADER + MAX_PAYLOAD);

    /// An empty buffer for frames sent by the other end of `me`.
    pub fn new(me: Role) -> FrameBuffer {
        FrameBuffer {
            buf: vec![0u8; Self::CAPACITY],
            start: 0,
            end: 0,
            expect: match me {
                Role::Client => Role::Client,
                Role::Server => Role::Server,
            },
        }
    }

    /// Where the next read goes; never empty while frames are taken out as they complete.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end + MAX_HEADER + MAX_PAYLOAD > self.buf.len() && self.start > 0 {
            // Compact: a partial frame moves to the front, so a whole one always fits.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that the last read put `n` bytes into [`FrameBuffer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies `bytes` in (for tests and bytes that came with the upgrade); returns how many fit.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = bytes.len().min(spare.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
        n
    }

    /// The next complete frame, unmasked; `Ok(None)` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        let b = &self.buf[self.start..self.end];
        let Some(h) = parse_header(b, self.expect)? else {
            return Ok(None);
        };
        let total = h.header_len + h.payload_len;
        if b.len() < total {
            return Ok(None);
        }
        let from = self.start + h.header_len;
        let to = self.start + total;
        self.start = to;
        let payload = &mut self.buf[from..to];
        if let Some(m) = h.mask {
            apply_mask(m, payload);
        }
        Ok(Some(Frame {
            opcode: h.opcode,
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 5.7: a masked "Hello" (as a text frame there; binary here).
    const MASKED_HELLO: [u8; 11] = [
        0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];

    #[test]
    fn test_parse() {
        let mut fb = FrameBuffer::new(Role::Server);
        fb.push(&MASKED_HELLO);
        let f = fb.next_frame().expect("valid").expect("complete");
        assert_eq!(f.opcode, Opcode::Binary);
        assert_eq!(f.payload, b"Hello");
        assert_eq!(fb.next_frame(), Ok(None));
    }

    #[test]
    fn test_emit() {
        let mut out = Vec::new();
        assert!(encode(
            Opcode::Binary,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
            &mut out
        ));
        assert_eq!(out, MASKED_HELLO);
        out.clear();
        assert!(encode(Opcode::Pong, b"Hi", None, &mut out));
        assert_eq!(out, [0x8a, 0x02, b'H', b'i']);
    }

    #[test]
    fn roundtrip_all_sizes_byte_by_byte_and_in_bulk() {
        for &(role, mask) in &[(Role::Server, Some([9, 8, 7, 6])), (Role::Client, None)] {
            let mut wire = Vec::new();
            let sizes = [0usize, 1, 125, 126, 127, 1400, 65535];
            for &n in &sizes {
                let p: Vec<u8> = (0..n).map(|i| i as u8).collect();
                assert!(encode(Opcode::Binary, &p, mask, &mut wire));
            }
            // Byte by byte: partial headers and payloads wait for more.
            let mut fb = FrameBuffer::new(role);
            let mut got = Vec::new();
            for b in &wire {
                assert_eq!(fb.push(&[*b]), 1);
                while let Some(f) = fb.next_frame().expect("valid") {
                    got.push(f.payload.to_vec());
                }
            }
            assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), sizes);
            for p in &got {
                assert!(p.iter().enumerate().all(|(i, b)| *b == i as u8));
            }
        }
    }

    #[test]
    fn limits_and_foreign_frames_are_errors() {
        let mut fb = FrameBuffer::new(Role::Server);
        // 65536 bytes announced with a 64-bit length.
        fb.push(&[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4]);
        assert_eq!(
            fb.next_frame(),
            Err(FrameError::TooLong {
                len: 65536,
                limit: MAX_PAYLOAD
            })
        );
        for first in [0x81u8, 0x02, 0x80, 0xc2, 0x83] {
            let mut fb = FrameBuffer::new(Role::Server);
            fb.push(&[first, 0x80, 1, 2, 3, 4]);
            assert_eq!(fb.next_frame(), Err(FrameError::Unsupported(first)));
        }
        let mut fb = FrameBuffer::new(Role::Server);
        fb.push(&[0x82, 0x01, 0xaa]);
        assert_eq!(
            fb.next_frame(),
            Err(FrameError::Masking),
            "unmasked to the server"
        );
        let mut fb = FrameBuffer::new(Role::Client);
        fb.push(&MASKED_HELLO);
        assert_eq!(
            fb.next_frame(),
            Err(FrameError::Masking),
            "masked to the client"
        );
        let mut fb = FrameBuffer::new(Role::Client);
        fb.push(&[0x89, 126, 0, 126]);
        assert!(matches!(fb.next_frame(), Err(FrameError::TooLong { .. })));
        assert!(!encode(
            Opcode::Binary,
            &[0; MAX_PAYLOAD + 1],
            None,
            &mut Vec::new()
        ));
    }

    #[test]
    fn the_buffer_always_has_room_for_a_whole_frame() {
        let mut wire = Vec::new();
        for _ in 0..5 {
            encode(Opcode::Binary, &[7; MAX_PAYLOAD], None, &mut wire);
        }
        let mut fb = FrameBuffer::new(Role::Client);
        let mut rest = &wire[..];
        let mut frames = 0;
        while !rest.is_empty() {
            // Odd-sized reads, as a socket gives them.
            let n = fb.push(&rest[..rest.len().min(40_000)]);
            assert!(n > 0, "a read must always find room");
            rest = &rest[n..];
            while let Some(f) = fb.next_frame().expect("valid") {
                assert_eq!(f.payload.len(), MAX_PAYLOAD);
                frames += 1;
            }
        }
        assert_eq!(frames, 5);
    }
}

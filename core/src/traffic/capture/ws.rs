//! WebSocket messages of a captured connection after its `101`: each message with its direction,
//! opcode, size and data (text, or base64 for binary), control frames, and the close code and
//! reason. Frame boundaries come from [`crate::traffic::wsframe::FrameReader`], the same follower a
//! restart's drain uses.
//!
//! Bounded: each message keeps at most [`MAX_MESSAGE_DATA`] bytes, a log at most
//! [`MAX_MESSAGES`] messages and [`Limits::body_cap`](crate::traffic::http1::Limits) bytes of data; when a
//! log is full it is handed out ([`WsConn::take_full`]) and a new one starts. Never panics.

use crate::traffic::http1::Side;
use crate::traffic::wsframe::{FrameEvent, FrameHeader, FrameReader};
use base64::Engine;
use serde::ser::SerializeStruct;
use serde::Serialize;

/// Messages kept in one log (one record).
pub const MAX_MESSAGES: usize = 500;
/// Data bytes kept of one message.
pub const MAX_MESSAGE_DATA: usize = 16 * 1024;

/// One message (or control frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsMessage {
    /// Who sent it.
    pub from: Side,
    /// `text`, `binary`, `close`, `ping`, `pong` or `opcode N`.
    pub opcode: String,
    /// Its full size (all fragments, unmasked payload).
    pub size: u64,
    /// The bytes kept.
    pub data: Vec<u8>,
    /// Fewer bytes kept than it had.
    pub truncated: bool,
    /// Compressed with an extension (RSV1: permessage-deflate); shown as sent.
    pub compressed: bool,
    /// When its first frame was seen (ms since the epoch).
    pub at_ms: u64,
}

impl Serialize for WsMessage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("WsMessage", 7)?;
        st.serialize_field("from", &self.from)?;
        st.serialize_field("opcode", &self.opcode)?;
        st.serialize_field("size", &self.size)?;
        st.serialize_field("truncated", &self.truncated)?;
        st.serialize_field("compressed", &self.compressed)?;
        st.serialize_field("at_ms", &self.at_ms)?;
        let text = (self.opcode != "binary" && !self.compressed)
            .then(|| std::str::from_utf8(&self.data).ok())
            .flatten();
        match text {
            Some(t) => st.serialize_field("text", t)?,
            None => st.serialize_field(
                "base64",
                &base64::engine::general_purpose::STANDARD.encode(&self.data),
            )?,
        }
        st.end()
    }
}

/// How the WebSocket was closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WsClose {
    /// Who sent the first close frame.
    pub from: Side,
    /// Its status code, if it had one.
    pub code: Option<u16>,
    /// Its reason.
    pub reason: String,
}

/// A WebSocket conversation (or a part of one, when it had more than [`MAX_MESSAGES`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WsLog {
    /// The upgrade request's target.
    pub path: String,
    /// The messages, in the order seen.
    pub messages: Vec<WsMessage>,
    /// Messages in this part, all counted.
    pub count: u64,
    /// The close handshake, once seen.
    pub close: Option<WsClose>,
    /// Which part of the conversation this is (0: the first).
    pub part: u32,
    /// Frames could not be followed any more (bytes were missed).
    pub lost: bool,
}

impl WsLog {
    /// Approximate bytes held.
    pub fn size(&self) -> usize {
        self.messages
            .iter()
            .map(|m| m.data.len() + 64)
            .sum::<usize>()
            + self.path.len()
            + 64
    }
}

/// A message being assembled from frames.
#[derive(Debug, Default)]
struct Partial {
    msg: Option<WsMessage>,
    /// The current frame: its header and the payload offset (for unmasking).
    frame: Option<(FrameHeader, u64)>,
    /// The current control frame (interleaved inside a fragmented message).
    control: Option<WsMessage>,
}

/// Both directions of one WebSocket connection.
#[derive(Debug)]
pub struct WsConn {
    readers: [FrameReader; 2],
    partial: [Partial; 2],
    log: WsLog,
    full: Vec<WsLog>,
    kept: usize,
    data_cap: usize,
}

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

fn opcode_name(op: u8) -> String {
    match op {
        1 => "text".into(),
        2 => "binary".into(),
        8 => "close".into(),
        9 => "ping".into(),
        10 => "pong".into(),
        n => format!("opcode {n}"),
    }
}

impl WsConn {
    /// A conversation upgraded at `path`, keeping at most `data_cap` bytes per log.
    pub fn new(path: &str, data_cap: usize) -> WsConn {
        WsConn {
            readers: [FrameReader::new(), FrameReader::new()],
            partial: [Partial::default(), Partial::default()],
            log: WsLog {
                path: path.to_string(),
                ..WsLog::default()
            },
            full: Vec::new(),
            kept: 0,
            data_cap,
        }
    }

    /// Bytes from `side` at `now_ms`.
    pub fn feed(&mut self, side: Side, data: &[u8], now_ms: u64) {
        if self.log.lost {
            return;
        }
        let i = idx(side);
        let (Some(reader), Some(p)) = (self.readers.get_mut(i), self.partial.get_mut(i)) else {
            return;
        };
        let mut done: Vec<WsMessage> = Vec::new();
        let room = self.data_cap.saturating_sub(self.kept);
        let mut kept = 0usize;
        reader.feed(data, |ev| match ev {
            FrameEvent::Header(h) => {
                p.frame = Some((h, 0));
                let m = |op: u8| WsMessage {
                    from: side,
                    opcode: opcode_name(op),
                    size: 0,
                    data: Vec::new(),
                    truncated: false,
                    compressed: h.rsv & 0x4 != 0,
                    at_ms: now_ms,
                };
                if h.opcode >= 8 {
                    p.control = Some(m(h.opcode));
                } else if h.opcode != 0 || p.msg.is_none() {
                    // A new message (or a continuation without a start: kept as its own).
                    if let Some(old) = p.msg.take() {
                        done.push(old);
                    }
                    p.msg = Some(m(h.opcode));
                }
                if h.payload_len == 0 {
                    finish_frame(p, &mut done);
                }
            }
            FrameEvent::Payload(bytes) => {
                let Some((h, off)) = p.frame.as_mut() else {
                    return;
                };
                let target = if h.opcode >= 8 {
                    p.control.as_mut()
                } else {
                    p.msg.as_mut()
                };
                if let Some(m) = target {
                    m.size += bytes.len() as u64;
                    let can = MAX_MESSAGE_DATA
                        .saturating_sub(m.data.len())
                        .min(room.saturating_sub(kept));
                    let take = bytes.len().min(can);
                    for (j, b) in bytes.iter().take(take).enumerate() {
                        let k = h.mask.map_or(0, |k| k[((*off + j as u64) % 4) as usize]);
                        m.data.push(b ^ k);
                    }
                    kept += take;
                    m.truncated |= take < bytes.len();
                }
                *off += bytes.len() as u64;
                if *off >= h.payload_len {
                    finish_frame(p, &mut done);
                }
            }
        });
        self.kept += kept;
        for m in done {
            self.push(m);
        }
    }

    fn push(&mut self, m: WsMessage) {
        if m.opcode == "close" && self.log.close.is_none() {
            let code = m.data.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            let reason = String::from_utf8_lossy(m.data.get(2..).unwrap_or(&[])).into_owned();
            self.log.close = Some(WsClose {
                from: m.from,
                code,
                reason,
            });
        }
        self.log.count += 1;
        self.log.messages.push(m);
        if self.log.messages.len() >= MAX_MESSAGES || self.kept >= self.data_cap {
            let next = WsLog {
                path: self.log.path.clone(),
                part: self.log.part + 1,
                ..WsLog::default()
            };
            self.full.push(std::mem::replace(&mut self.log, next));
            self.kept = 0;
        }
    }

    /// Bytes were missed: frames can no longer be followed.
    pub fn gap(&mut self) {
        self.log.lost = true;
    }

    /// Logs that filled up since the last call.
    pub fn take_full(&mut self) -> Vec<WsLog> {
        std::mem::take(&mut self.full)
    }

    /// The connection ended: the rest of the log, unfinished messages included.
    pub fn finish(mut self) -> WsLog {
        for i in 0..2 {
            let p = std::mem::take(&mut self.partial[i]);
            for m in p.msg.into_iter().chain(p.control) {
                self.log.count += 1;
                self.log.messages.push(WsMessage {
                    truncated: true,
                    ..m
                });
            }
        }
        self.log.messages.sort_by_key(|m| m.at_ms);
        self.log
    }
}

/// The current frame is over: a control frame or a final fragment completes a message.
fn finish_frame(p: &mut Partial, done: &mut Vec<WsMessage>) {
    let Some((h, _)) = p.frame.take() else {
        return;
    };
    if h.opcode >= 8 {
        if let Some(c) = p.control.take() {
            done.push(c);
        }
    } else if h.fin {
        if let Some(m) = p.msg.take() {
            done.push(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let key = [1, 2, 3, 4];
        let mut f = vec![first, 0x80 | payload.len() as u8];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    #[test]
    fn test_parse_messages_both_ways_in_any_split() {
        let mut client = masked(0x81, b"hello");
        // A fragmented text message with a ping in the middle.
        client.extend(masked(0x01, b"frag"));
        client.extend(masked(0x89, b"p"));
        client.extend(masked(0x80, b"ment"));
        client.extend(masked(0x88, b"\x03\xe8bye"));
        let mut server = vec![0x82, 0x03, 0xff, 0x00, 0x01];
        server.extend_from_slice(&[0x88, 0x02, 0x03, 0xe8]);
        for split in [1, 2, 5, 1000] {
            let mut ws = WsConn::new("/chat", 1 << 20);
            for (t, c) in client.chunks(split).enumerate() {
                ws.feed(Side::Client, c, t as u64);
            }
            for c in server.chunks(split) {
                ws.feed(Side::Server, c, 1000);
            }
            let log = ws.finish();
            let got: Vec<(Side, &str, String)> = log
                .messages
                .iter()
                .map(|m| {
                    (
                        m.from,
                        m.opcode.as_str(),
                        String::from_utf8_lossy(&m.data).into_owned(),
                    )
                })
                .collect();
            assert_eq!(
                got[0],
                (Side::Client, "text", "hello".into()),
                "split {split}"
            );
            assert!(got.contains(&(Side::Client, "ping", "p".into())));
            assert!(got.contains(&(Side::Client, "text", "fragment".into())));
            assert!(got.iter().any(|m| m.0 == Side::Server && m.1 == "binary"));
            let close = log.close.unwrap();
            assert_eq!(
                (close.from, close.code, close.reason.as_str()),
                (Side::Client, Some(1000), "bye")
            );
            assert_eq!(log.count, 6);
            let json = serde_json::to_value(&log.messages[0]).unwrap();
            assert_eq!(json["text"], "hello");
        }
    }

    #[test]
    fn logs_are_bounded() {
        let mut ws = WsConn::new("/", 1 << 20);
        let one = [0x81u8, 0x01, b'x'];
        for _ in 0..(MAX_MESSAGES * 2 + 3) {
            ws.feed(Side::Server, &one, 0);
        }
        let full = ws.take_full();
        assert_eq!(full.len(), 2);
        assert_eq!((full[1].part, full[1].messages.len()), (1, MAX_MESSAGES));
        assert_eq!(ws.finish().messages.len(), 3);
        // A huge frame keeps only the first bytes.
        let mut ws = WsConn::new("/", 1 << 20);
        let mut big = vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        big.extend(vec![0u8; 65536]);
        ws.feed(Side::Server, &big, 0);
        let log = ws.finish();
        assert_eq!(log.messages[0].size, 65536);
        assert_eq!(log.messages[0].data.len(), MAX_MESSAGE_DATA);
        assert!(log.messages[0].truncated);
    }
}

//! gRPC over a captured HTTP/2 exchange: the service and method from `:path`, the status from
//! the trailers, and the length-prefixed messages of each body (gRPC over HTTP/2, "Length-Prefixed
//! Message": a compressed flag, a 4-byte length, the message).
//!
//! While the exchange is captured only counts are kept ([`MessageCounter`], a few bytes per
//! direction); the messages are cut out of the captured bodies when a record is viewed
//! ([`messages`]), and decoded there ([`super::protobuf`], [`super::schema`]).

use base64::Engine;
use serde::Serialize;

/// What the list shows of a gRPC call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GrpcSummary {
    /// `package.Service`.
    pub service: String,
    /// The method.
    pub method: String,
    /// `grpc-status`, when the call ended with one.
    pub status: Option<u32>,
    /// `grpc-message`, percent-decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Messages the client sent.
    pub requests: u64,
    /// Messages the server sent.
    pub responses: u64,
    /// Some message had its compressed flag set (`grpc-encoding` names the codec).
    pub compressed: bool,
}

impl GrpcSummary {
    /// The status's name (`OK`, `NOT_FOUND`, ...).
    pub fn status_name(&self) -> Option<&'static str> {
        self.status.map(status_name)
    }
}

/// Whether a content type is gRPC's (`application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| {
        let c = c.trim().to_ascii_lowercase();
        c == "application/grpc"
            || c.starts_with("application/grpc+")
            || c.starts_with("application/grpc;")
    })
}

/// `("pkg.Service", "Method")` from a `:path` of `/pkg.Service/Method`.
pub fn service_method(path: &str) -> Option<(String, String)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service.to_string(), method.to_string()))
}

/// The name of a gRPC status code.
pub fn status_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}

/// Decodes a `grpc-message` value (percent-encoded UTF-8).
pub fn decode_message(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = (c == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(x) => {
                out.push(x);
                i += 3;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Counts the length-prefixed messages of one direction as its bytes pass, whatever is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageCounter {
    prefix: [u8; 5],
    prefix_len: u8,
    left: u64,
    /// Messages whose prefix was seen.
    pub count: u64,
    /// Some message had its compressed flag set.
    pub compressed: bool,
}

impl MessageCounter {
    /// Takes the next body bytes.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.left -= n as u64;
                data = data.get(n..).unwrap_or(&[]);
                continue;
            }
            let at = usize::from(self.prefix_len);
            let n = (5 - at).min(data.len());
            for (slot, b) in self.prefix.iter_mut().skip(at).zip(data.iter()) {
                *slot = *b;
            }
            self.prefix_len += n as u8;
            data = data.get(n..).unwrap_or(&[]);
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                self.count += 1;
                self.compressed |= self.prefix[0] & 1 != 0;
                let p = self.prefix;
                self.left = u64::from(u32::from_be_bytes([p[1], p[2], p[3], p[4]]));
            }
        }
    }
}

/// One message cut out of a captured body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The compressed flag.
    pub compressed: bool,
    /// The length its prefix announced.
    pub len: u32,
    /// The bytes captured (fewer than `len` when the body was truncated).
    pub data: &'a [u8],
}

/// The messages of a captured body, in order; the last may be cut short by the body cap.
pub fn messages(body: &[u8]) -> Vec<Message<'_>> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(p) = rest.get(..5) {
        let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
        let end = (5 + len as usize).min(rest.len());
        out.push(Message {
            compressed: p[0] & 1 != 0,
            len,
            data: rest.get(5..end).unwrap_or(&[]),
        });
        rest = rest.get(end..).unwrap_or(&[]);
    }
    out
}

/// A message as the inspector shows it: its size, and its fields decoded without a schema and,
/// when one is known, with it.
pub fn message_view(
    m: &Message<'_>,
    schema: Option<Result<serde_json::Value, String>>,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "compressed": m.compressed,
        "len": m.len,
        "captured": m.data.len(),
    });
    if m.compressed {
        // Compressed with the codec `grpc-encoding` names: shown as bytes, not decoded.
        v["base64"] = base64::engine::general_purpose::STANDARD
            .encode(m.data)
            .into();
        return v;
    }
    if (m.data.len() as u64) < u64::from(m.len) {
        v["truncated"] = true.into();
    }
    match super::protobuf::decode(m.data) {
        Some(fields) => v["fields"] = super::protobuf::to_json(&fields),
        None => {
            v["base64"] = base64::engine::general_purpose::STANDARD
                .encode(m.data)
                .into()
        }
    }
    match schema {
        Some(Ok(json)) => v["json"] = json,
        Some(Err(e)) => v["schema_error"] = e.into(),
        None => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_path_status_and_message() {
        assert_eq!(
            service_method("/helloworld.Greeter/SayHello"),
            Some(("helloworld.Greeter".into(), "SayHello".into()))
        );
        assert_eq!(service_method("/nope"), None);
        assert_eq!(service_method("/a/b/c"), None);
        assert!(is_grpc(Some("application/grpc")));
        assert!(is_grpc(Some("application/grpc+proto")));
        assert!(!is_grpc(Some("application/grpc-web")));
        assert!(!is_grpc(None));
        assert_eq!(status_name(5), "NOT_FOUND");
        assert_eq!(
            decode_message("no%20such%20user%F0%9F%98%80%"),
            "no such user😀%"
        );
    }

    #[test]
    fn counts_and_cuts_messages_over_any_split() {
        let mut body = vec![0, 0, 0, 0, 3, 1, 2, 3];
        body.extend_from_slice(&[1, 0, 0, 0, 0]);
        body.extend_from_slice(&[0, 0, 0, 0, 2, 9]);
        for split in [1, 2, 3, 7, body.len()] {
            let mut c = MessageCounter::default();
            for chunk in body.chunks(split) {
                c.feed(chunk);
            }
            assert_eq!(c.count, 3, "split {split}");
            assert!(c.compressed);
        }
        let m = messages(&body);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].data, &[1, 2, 3]);
        assert!(m[1].compressed && m[1].data.is_empty());
        assert_eq!((m[2].len, m[2].data), (2, &[9u8][..]), "cut short");
        assert!(messages(&[0, 0]).is_empty());
    }
}

//! Exchange and flow records.

use super::grpc::GrpcSummary;
use super::ws::WsLog;
use crate::traffic::http1::{Fields, Head, Message, Protocol};
use base64::Engine;
use serde::ser::SerializeStruct;
use serde::Serialize;
use std::sync::Arc;

/// Which way a connection went, seen from the local service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// A caller connected to a local service (through its listener).
    In,
    /// A local process connected to an overlay address (seen on the TUN).
    Out,
}

impl Direction {
    /// `in` or `out`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowEnd {
    /// Closed normally.
    Closed,
    /// Reset.
    Reset,
    /// Nothing seen for a long time; the capture gave up on it.
    Idle,
    /// Dropped to make room for newer connections.
    Evicted,
    /// An I/O error on one side.
    Error,
    /// Still open: the record holds a part of a long WebSocket conversation.
    Open,
}

/// A captured body: up to the cap, with its full length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    /// The bytes kept (in the ring, a view of its body log: a clone shares them).
    pub data: bytes::Bytes,
    /// The full length seen.
    pub len: u64,
    /// Fewer bytes kept than seen.
    pub truncated: bool,
}

impl Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Body", 4)?;
        st.serialize_field("len", &self.len)?;
        st.serialize_field("truncated", &self.truncated)?;
        st.serialize_field("captured", &self.data.len())?;
        match std::str::from_utf8(&self.data) {
            Ok(text) => st.serialize_field("text", text)?,
            Err(_) => st.serialize_field(
                "base64",
                &base64::engine::general_purpose::STANDARD.encode(&self.data),
            )?,
        }
        st.end()
    }
}

/// A request or response as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRecord {
    /// Start line and headers.
    #[serde(flatten)]
    pub head: Head,
    /// The body.
    pub body: Body,
    /// Whether the message ended properly.
    pub complete: bool,
    /// Trailer fields (HTTP/2; gRPC's status).
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub trailers: Fields,
}

impl From<Message> for MessageRecord {
    fn from(m: Message) -> Self {
        MessageRecord {
            head: m.head,
            body: Body {
                data: m.body.into(),
                len: m.body_len,
                truncated: m.truncated,
            },
            complete: m.complete,
            trailers: m.trailers,
        }
    }
}

/// The local process behind a connection's socket (laptop-local callers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Process {
    /// Its process id.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub command: String,
}

/// Who really called, when the connection came through the relay and it said so (the caller's
/// address, and what the caller's proxy said in `X-Forwarded-For`). The relay announces it for
/// callbacks, the Host router and intercepted requests at its fronts
/// (`overlay_core::transport::control::CallerNotice`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RemoteCaller {
    /// The caller's `ip:port` as the relay saw it.
    pub address: String,
    /// `X-Forwarded-For` as the caller's proxy sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<String>,
}

/// What a record holds.
// Exchanges are the common case; boxing them would only add an allocation per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecordKind {
    /// An HTTP request and its response.
    Exchange {
        /// The request.
        request: MessageRecord,
        /// The response, if one came.
        response: Option<MessageRecord>,
        /// Why the exchange is incomplete or malformed.
        error: Option<String>,
        /// gRPC: service, method, status, message counts.
        #[serde(skip_serializing_if = "Option::is_none")]
        grpc: Option<GrpcSummary>,
    },
    /// A connection that was not (only) HTTP.
    Flow {
        /// What it carried.
        protocol: Protocol,
        /// Bytes from the client.
        bytes_up: u64,
        /// Bytes from the server.
        bytes_down: u64,
        /// How it ended.
        end: FlowEnd,
        /// Some bytes were not seen (capture queue full, packets missing).
        incomplete: bool,
        /// Why HTTP parsing stopped, for malformed HTTP.
        note: Option<String>,
        /// The messages, for WebSocket.
        #[serde(skip_serializing_if = "Option::is_none")]
        websocket: Option<WsLog>,
    },
}

/// One captured exchange or flow. The connection's names are shared by its records (one
/// allocation per connection, not five per record: a record's allocations are what a full ring
/// frees, cold, at each new one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Assigned by the ring, increasing.
    pub id: u64,
    /// The local service involved (the callee for `in`, the caller for `out`).
    pub service: Arc<str>,
    /// In or out.
    pub direction: Direction,
    /// Client `ip:port`.
    pub client: Arc<str>,
    /// Client name, when known: a service, this node, or a local process.
    pub client_name: Option<Arc<str>>,
    /// The local process that called, for laptop-local callers, when it could be known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_process: Option<Process>,
    /// The real caller behind the relay, when the relay said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_caller: Option<RemoteCaller>,
    /// Server `ip:port` (the overlay address callers used).
    pub server: Arc<str>,
    /// Server name, when known.
    pub server_name: Option<Arc<str>>,
    /// Start, ms since the Unix epoch.
    pub started_ms: u64,
    /// How long it took, when it ended.
    pub duration_ms: Option<u64>,
    /// The content.
    #[serde(flatten)]
    pub kind: RecordKind,
}

/// What a [`Summary`] stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SummaryKind {
    /// An HTTP request and its response.
    Exchange,
    /// A connection that is not HTTP.
    Flow,
    /// Plain flows of one caller to one server, collapsed (`collapse=1`).
    Group,
}

/// A record without headers and bodies: what lists show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    /// Record id.
    pub id: u64,
    /// `exchange` or `flow`.
    #[serde(rename = "type")]
    pub kind: SummaryKind,
    /// Local service.
    pub service: String,
    /// In or out.
    pub direction: Direction,
    /// Client `ip:port`.
    pub client: String,
    /// Client name.
    pub client_name: Option<String>,
    /// Server `ip:port`.
    pub server: String,
    /// Server name.
    pub server_name: Option<String>,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// Duration.
    pub duration_ms: Option<u64>,
    /// Request method.
    pub method: Option<String>,
    /// Request target.
    pub path: Option<String>,
    /// Response status.
    pub status: Option<u16>,
    /// Request body length.
    pub request_bytes: u64,
    /// Response body length (or bytes down for flows).
    pub response_bytes: u64,
    /// A body was truncated in the capture.
    pub truncated: bool,
    /// Error or note.
    pub error: Option<String>,
    /// Flow protocol.
    pub protocol: Option<Protocol>,
    /// `HTTP/1.1` or `HTTP/2`, for exchanges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The local process that called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_process: Option<Process>,
    /// The real caller behind the relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_caller: Option<RemoteCaller>,
    /// gRPC calls: `package.Service/Method`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_method: Option<String>,
    /// gRPC calls: the status code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// gRPC calls: the status's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status_name: Option<String>,
    /// WebSocket flows: messages in the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// Groups: the filter value (`group=KEY`) that lists the members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Groups: members in this page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Groups: the oldest member's id in this page (`id` is the newest's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_id: Option<u64>,
}

impl Record {
    /// Where its heads' allocations start, for a prefetch before it is dropped.
    pub fn heap(&self) -> impl Iterator<Item = *const u8> + '_ {
        self.request()
            .into_iter()
            .chain(self.response())
            .flat_map(|m| m.head.heap())
    }

    /// Approximate bytes this record holds, for the ring's cap.
    pub fn size(&self) -> usize {
        // Names and values, and 16 bytes per field for where it ends.
        let fields = |f: &Fields| f.text_len() + 16 * f.len();
        let head = |h: &Head| fields(&h.headers) + h.target.as_ref().map_or(0, String::len);
        let msg = |m: &MessageRecord| head(&m.head) + m.body.data.len() + fields(&m.trailers) + 64;
        256 + self.service.len()
            + match &self.kind {
                RecordKind::Exchange {
                    request, response, ..
                } => msg(request) + response.as_ref().map_or(0, msg),
                RecordKind::Flow { websocket, .. } => {
                    64 + websocket.as_ref().map_or(0, WsLog::size)
                }
            }
    }

    /// The request, for exchanges.
    pub fn request(&self) -> Option<&MessageRecord> {
        match &self.kind {
            RecordKind::Exchange { request, .. } => Some(request),
            RecordKind::Flow { .. } => None,
        }
    }

    /// The response, for exchanges that have one.
    pub fn response(&self) -> Option<&MessageRecord> {
        match &self.kind {
            RecordKind::Exchange { response, .. } => response.as_ref(),
            RecordKind::Flow { .. } => None,
        }
    }

    /// The list view of this record.
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            id: self.id,
            kind: SummaryKind::Exchange,
            service: self.service.to_string(),
            direction: self.direction,
            client: self.client.to_string(),
            client_name: self.client_name.as_deref().map(str::to_string),
            server: self.server.to_string(),
            server_name: self.server_name.as_deref().map(str::to_string),
            started_ms: self.started_ms,
            duration_ms: self.duration_ms,
            method: None,
            path: None,
            status: None,
            request_bytes: 0,
            response_bytes: 0,
            truncated: false,
            error: None,
            protocol: None,
            version: None,
            client_process: self.client_process.clone(),
            remote_caller: self.remote_caller.clone(),
            grpc_method: None,
            grpc_status: None,
            grpc_status_name: None,
            messages: None,
            group: None,
            count: None,
            first_id: None,
        };
        match &self.kind {
            RecordKind::Exchange {
                request,
                response,
                error,
                grpc,
            } => {
                s.method = request.head.method.as_deref().map(str::to_string);
                s.path = request.head.target.clone();
                s.status = response.as_ref().and_then(|r| r.head.status);
                s.request_bytes = request.body.len;
                s.response_bytes = response.as_ref().map_or(0, |r| r.body.len);
                s.truncated =
                    request.body.truncated || response.as_ref().is_some_and(|r| r.body.truncated);
                s.error = error.clone();
                s.version = Some(request.head.version.to_string());
                if let Some(g) = grpc {
                    s.grpc_method = Some(format!("{}/{}", g.service, g.method));
                    s.grpc_status = g.status;
                    s.grpc_status_name = g.status_name().map(str::to_string);
                }
            }
            RecordKind::Flow {
                protocol,
                bytes_up,
                bytes_down,
                note,
                websocket,
                ..
            } => {
                s.kind = SummaryKind::Flow;
                s.request_bytes = *bytes_up;
                s.response_bytes = *bytes_down;
                s.error = note.clone();
                s.protocol = Some(*protocol);
                if let Some(ws) = websocket {
                    s.path = Some(ws.path.clone());
                    s.messages = Some(ws.count);
                }
            }
        }
        s
    }
}

impl Summary {
    /// One line for `overlay traffic`: `id in|out client -> server METHOD path status size time`.
    pub fn line(&self) -> String {
        let who = |name: &Option<String>, addr: &str| match name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => addr.to_string(),
        };
        let route = format!(
            "{} -> {}",
            who(&self.client_name, &self.client),
            who(&self.server_name, &self.server)
        );
        let time = self
            .duration_ms
            .map(|d| format!("{d}ms"))
            .unwrap_or_else(|| "-".into());
        let mut line = match self.kind {
            SummaryKind::Exchange => format!(
                "#{} {:<3} {:<10} {} {} {} {} {}B {}",
                self.id,
                self.direction.as_str(),
                self.service,
                route,
                self.method.as_deref().unwrap_or("-"),
                self.path.as_deref().unwrap_or("-"),
                self.status.map_or("-".to_string(), |s| s.to_string()),
                self.response_bytes,
                time
            ),
            SummaryKind::Flow => format!(
                "#{} {:<3} {:<10} {} {} up {}B down {}B {}",
                self.id,
                self.direction.as_str(),
                self.service,
                route,
                self.protocol.map(Protocol::as_str).unwrap_or_default(),
                self.request_bytes,
                self.response_bytes,
                time
            ),
            SummaryKind::Group => format!(
                "#{} {:<3} {:<10} {} {} x{} up {}B down {}B (flows collapsed)",
                self.id,
                self.direction.as_str(),
                self.service,
                route,
                self.protocol.map(Protocol::as_str).unwrap_or_default(),
                self.count.unwrap_or(0),
                self.request_bytes,
                self.response_bytes
            ),
        };
        if let Some(g) = &self.grpc_method {
            let status = self.grpc_status_name.as_deref().unwrap_or("-");
            line.push_str(&format!(" grpc {g} {status}"));
        }
        if let Some(n) = self.messages {
            line.push_str(&format!(" {n} messages"));
        }
        if self.truncated {
            line.push_str(" (truncated)");
        }
        if let Some(e) = &self.error {
            line.push_str(&format!(" [{e}]"));
        }
        line
    }
}

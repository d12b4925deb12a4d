//! Replay of a captured request to the same service, optionally edited.

use overlay_core::traffic::capture::mask;
use overlay_core::traffic::capture::{Body, MessageRecord, Record};
use overlay_core::traffic::http1::{Conversation, Fields, Limits, Output, Side};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a replay may take in all.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Changes to the captured request.
#[derive(Debug, Default, Deserialize)]
pub struct Edits {
    /// New method.
    pub method: Option<String>,
    /// New target (path and query).
    pub path: Option<String>,
    /// Replaces every header when given.
    pub headers: Option<Vec<(String, String)>>,
    /// New body (text).
    pub body: Option<String>,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Not an exchange.
    #[error("record {0} is not an HTTP exchange")]
    NotExchange(u64),
    /// The captured body is incomplete.
    #[error(
        "the captured request body was truncated ({0} of {1} bytes); replay it with an edited body"
    )]
    Truncated(usize, u64),
    /// A field is not usable in a request line or header.
    #[error("the edited {0} contains characters a request cannot carry")]
    BadEdit(&'static str),
    /// Address of the record.
    #[error("the record's server address {0} is not usable")]
    Address(String),
    /// Connecting or talking to the service.
    #[error("replay to {0} failed: {1}")]
    Io(SocketAddr, std::io::Error),
    /// No answer in time.
    #[error("{0} did not answer within {1} s")]
    Timeout(SocketAddr, u64),
    /// The answer was not HTTP.
    #[error("{0} answered with something that is not an HTTP response")]
    NotHttp(SocketAddr),
}

fn clean(s: &str, what: &'static str, allow_space: bool) -> Result<(), ReplayError> {
    if s.is_empty()
        || s.bytes()
            .any(|b| b == b'\r' || b == b'\n' || (!allow_space && b == b' '))
    {
        return Err(ReplayError::BadEdit(what));
    }
    Ok(())
}

/// The bytes of the request to send: the captured one with the edits, framed by
/// Content-Length and `Connection: close`.
pub fn build(record: &Record, edits: &Edits) -> Result<Vec<u8>, ReplayError> {
    let req: &MessageRecord = record
        .request()
        .ok_or(ReplayError::NotExchange(record.id))?;
    let method = edits
        .method
        .clone()
        .or_else(|| req.head.method.as_deref().map(str::to_string))
        .unwrap_or_else(|| "GET".into());
    // Edits come from a form the inspector filled from the masked view: masked values that
    // were left alone stand for the captured ones.
    let captured_target = req.head.target.clone().unwrap_or_else(|| "/".into());
    let target = match &edits.path {
        Some(p) => mask::unmask_target(&captured_target, p.clone()),
        None => captured_target,
    };
    clean(&method, "method", false)?;
    clean(&target, "path", false)?;
    let body: Vec<u8> = match &edits.body {
        Some(b) => b.clone().into_bytes(),
        None => {
            if req.body.truncated || !req.complete && req.body.len > 0 {
                return Err(ReplayError::Truncated(req.body.data.len(), req.body.len));
            }
            req.body.data.to_vec()
        }
    };
    let headers: Fields = match &edits.headers {
        Some(h) => mask::unmask_headers(&req.head.headers, h.clone())
            .into_iter()
            .collect(),
        None => req.head.headers.clone(),
    };
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (k, v) in &headers {
        let framing = [
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
        ];
        if framing.iter().any(|f| k.eq_ignore_ascii_case(f)) {
            continue;
        }
        clean(k, "header name", false)?;
        if v.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(ReplayError::BadEdit("header value"));
        }
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    Ok(out)
}

/// Masks the credentials in a replay answer's headers (`Set-Cookie`, ...), for views that
/// did not ask to reveal them.
pub fn mask_answer(answer: &mut serde_json::Value) {
    let Some(headers) = answer.get("headers").cloned() else {
        return;
    };
    let Ok(headers) = serde_json::from_value::<Fields>(headers) else {
        return;
    };
    answer["headers"] = json!(mask::mask_headers(&headers));
}

/// Sends the (edited) request of `record` to the address it went to and returns the response.
pub async fn replay(
    record: &Record,
    edits: &Edits,
    limits: Limits,
) -> Result<serde_json::Value, ReplayError> {
    let bytes = build(record, edits)?;
    let addr: SocketAddr = record
        .server
        .parse()
        .map_err(|_| ReplayError::Address(record.server.to_string()))?;
    let started = Instant::now();
    let run = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ReplayError::Io(addr, e))?;
        s.write_all(&bytes)
            .await
            .map_err(|e| ReplayError::Io(addr, e))?;
        let mut conv = Conversation::new(limits);
        conv.feed(Side::Client, &bytes, 0);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = s
                .read(&mut buf)
                .await
                .map_err(|e| ReplayError::Io(addr, e))?;
            if n == 0 {
                conv.finish(1);
            } else {
                conv.feed(Side::Server, buf.get(..n).unwrap_or(&[]), 1);
            }
            if let Some(Output::Exchange(e)) = conv.poll() {
                return e.response.ok_or(ReplayError::NotHttp(addr));
            }
            if n == 0 {
                return Err(ReplayError::NotHttp(addr));
            }
        }
    };
    let resp = tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| ReplayError::Timeout(addr, TIMEOUT.as_secs()))??;
    let body = Body {
        len: resp.body_len,
        truncated: resp.truncated,
        data: resp.body.into(),
    };
    Ok(json!({
        "replay_of": record.id,
        "server": record.server,
        "status": resp.head.status,
        "reason": resp.head.reason,
        "headers": resp.head.headers,
        "body": body,
        "duration_ms": started.elapsed().as_millis() as u64,
    }))
}

//! Filters over records: service, direction, method, status, path, free text.

use super::record::{Record, RecordKind};

/// Conditions a record must all meet; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Local service name, exactly.
    pub service: Option<String>,
    /// `in` or `out`.
    pub direction: Option<String>,
    /// Request method, any case.
    pub method: Option<String>,
    /// `404`, `4xx`, or `error` (no response or a parse error).
    pub status: Option<String>,
    /// Substring of the request target.
    pub path: Option<String>,
    /// Substring (any case) of the target, header lines, bodies, names.
    pub text: Option<String>,
    /// `exchange`, `flow`, `grpc`, `websocket` or `http2`.
    pub kind: Option<String>,
    /// The flow group key (see [`super::ring::group_key`]).
    pub group: Option<String>,
}

/// Longest body prefix the text filter searches.
const TEXT_SEARCH_BYTES: usize = 64 * 1024;

impl Filter {
    /// Reads a URL query (`service=api&status=5xx`); unknown keys are ignored.
    pub fn from_query(query: &str) -> Filter {
        let mut f = Filter::default();
        for (k, v) in query_pairs(query) {
            if v.is_empty() {
                continue;
            }
            let slot = match k.as_str() {
                "service" => &mut f.service,
                "direction" => &mut f.direction,
                "method" => &mut f.method,
                "status" => &mut f.status,
                "path" => &mut f.path,
                "text" | "q" => &mut f.text,
                "type" => &mut f.kind,
                "group" => &mut f.group,
                _ => continue,
            };
            *slot = Some(v);
        }
        f
    }

    /// Whether `r` meets every condition.
    pub fn matches(&self, r: &Record) -> bool {
        if self.service.as_ref().is_some_and(|s| **s != *r.service) {
            return false;
        }
        if self
            .direction
            .as_ref()
            .is_some_and(|d| d != r.direction.as_str())
        {
            return false;
        }
        if let Some(k) = &self.kind {
            if !kind_matches(k, r) {
                return false;
            }
        }
        if let Some(g) = &self.group {
            if super::ring::group_key(r).as_ref() != Some(g) {
                return false;
            }
        }
        let req = r.request();
        let resp = r.response();
        if let Some(m) = &self.method {
            let got = req.and_then(|q| q.head.method.as_deref()).unwrap_or("");
            if !got.eq_ignore_ascii_case(m) {
                return false;
            }
        }
        if let Some(s) = &self.status {
            if !status_matches(s, r) {
                return false;
            }
        }
        if let Some(p) = &self.path {
            let target = req.and_then(|q| q.head.target.as_deref()).unwrap_or("");
            if !target.contains(p.as_str()) {
                return false;
            }
        }
        if let Some(t) = &self.text {
            let needle = t.to_lowercase();
            let mut hay: Vec<String> = [
                Some(&r.service),
                Some(&r.client),
                Some(&r.server),
                r.client_name.as_ref(),
                r.server_name.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(|s| s.to_string())
            .collect();
            for m in req.into_iter().chain(resp) {
                hay.push(m.head.to_string());
                for (k, v) in &m.head.headers {
                    hay.push(format!("{k}: {v}"));
                }
                let body = m
                    .body
                    .data
                    .get(..TEXT_SEARCH_BYTES)
                    .unwrap_or(&m.body.data[..]);
                hay.push(String::from_utf8_lossy(body).into_owned());
            }
            if !hay.iter().any(|h| h.to_lowercase().contains(&needle)) {
                return false;
            }
        }
        true
    }
}

fn kind_matches(want: &str, r: &Record) -> bool {
    match (want.to_ascii_lowercase().as_str(), &r.kind) {
        ("exchange", RecordKind::Exchange { .. }) => true,
        ("flow", RecordKind::Flow { .. }) => true,
        ("grpc", RecordKind::Exchange { grpc, .. }) => grpc.is_some(),
        ("websocket", RecordKind::Flow { websocket, .. }) => websocket.is_some(),
        ("http2", RecordKind::Exchange { request, .. }) => request.head.version == "HTTP/2",
        _ => false,
    }
}

fn status_matches(want: &str, r: &Record) -> bool {
    let (status, error) = match &r.kind {
        RecordKind::Exchange {
            response, error, ..
        } => (
            response.as_ref().and_then(|m| m.head.status),
            error.is_some(),
        ),
        RecordKind::Flow { .. } => (None, false),
    };
    let grpc_status = match &r.kind {
        RecordKind::Exchange { grpc: Some(g), .. } => g.status,
        _ => None,
    };
    if want.eq_ignore_ascii_case("error") {
        return error
            || grpc_status.is_some_and(|s| s != 0)
            || (status.is_none() && matches!(r.kind, RecordKind::Exchange { .. }));
    }
    if let Some(code) = want
        .strip_prefix("grpc-")
        .or_else(|| want.strip_prefix("grpc="))
    {
        return grpc_status.is_some_and(|s| {
            s.to_string() == code || super::grpc::status_name(s).eq_ignore_ascii_case(code)
        });
    }
    let Some(status) = status else {
        return false;
    };
    let code = status.to_string();
    want.len() == 3
        && want
            .chars()
            .zip(code.chars())
            .all(|(w, c)| w.eq_ignore_ascii_case(&'x') || w == c)
}

/// `a=1&b=x%20y` into decoded pairs.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+` as space; invalid escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b.get(i) {
            Some(b'+') => out.push(b' '),
            Some(b'%') => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            Some(c) => out.push(*c),
            None => break,
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

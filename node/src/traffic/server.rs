//! The web inspector: a single page and a JSON API on 127.0.0.1, served with the capture's own
//! HTTP/1.x parser.
//!
//! API (all JSON):
//! - `GET /api/exchanges?service=&direction=&method=&status=&path=&text=&type=&after=ID&before=ID&limit=N&collapse=1`:
//!   a page of summaries (and flow groups), oldest first, `latest` (the newest id), `more`
//!   and `oldest` (page back with `before=oldest`).
//! - `GET /api/exchanges/ID`: the full record (headers, bodies, gRPC messages decoded).
//! - `GET /api/services`: every known service with its record counts.
//! - `POST /api/exchanges/ID/replay` (body: optional edits `{method, path, headers, body}`):
//!   sends the request again to the same address and returns the response; the new exchange is
//!   captured like any other.
//! - `DELETE /api/exchanges` or `POST /api/clear`: forget every record.
//! - `GET /api/events`: server-sent events, one `data: LATEST_ID` per change.
//! - `GET /api/stats`: records held, bytes, evictions, drops, and whether it records.
//! - `POST /api/recording` (body `{"on": false}` or `{"on": true}`): pause or resume the
//!   capture, as `overlay traffic --pause` and `--resume` do.
//!
//! Every answer, the page included, needs the inspector's secret (a cookie, the
//! `X-Overlay-Token` header or `?token=`; see [`overlay_core::traffic::capture::access`]): other local
//! users get 401 and nothing else. Requests must name the inspector's own host (127.0.0.1 or
//! localhost), which keeps other web sites out through DNS rebinding; state-changing requests
//! must not come from a foreign Origin, and POSTs must be JSON, which browsers never send
//! cross-site without asking first. Credentials in headers and query parameters are masked
//! unless the request says `reveal=1` ([`overlay_core::traffic::capture::mask`]).

use super::replay::{self, Edits};
use super::Traffic;
use overlay_core::api::daemon::{self, Recording, TrafficPage};
use overlay_core::traffic::capture::access::{self, Decision};
use overlay_core::traffic::capture::filter::query_pairs;
use overlay_core::traffic::capture::mask;
use overlay_core::traffic::capture::ring::Row;
use overlay_core::traffic::capture::{grpc, Filter, Record, RecordKind, Summary};
use overlay_core::traffic::http1::{Kind, Limits, Message, MessageParser};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAGE: &str = include_str!("ui.html");
/// Largest request the inspector reads (replay edits carry bodies).
const MAX_REQUEST_BODY: usize = 8 << 20;
/// Most records one list answer holds.
const MAX_LIST: usize = 1000;
/// gRPC messages decoded per body in the detail view.
const MAX_GRPC_MESSAGES: usize = 200;
/// Time a client gets to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the inspector; the caller spawns [`serve`].
pub async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("the inspector cannot listen on {listen}: {e}"))
}

/// Serves the inspector until the task is dropped.
pub async fn serve(listener: TcpListener, traffic: Arc<Traffic>) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let t = traffic.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(s, t).await {
                tracing::debug!("inspector connection: {e}");
            }
        });
    }
}

struct Reply {
    status: u16,
    ctype: &'static str,
    body: Vec<u8>,
    /// More header lines (`Location`, `Set-Cookie`).
    headers: Vec<(&'static str, String)>,
}

fn json_reply(status: u16, v: serde_json::Value) -> Reply {
    Reply {
        status,
        ctype: "application/json",
        body: serde_json::to_vec_pretty(&v).unwrap_or_default(),
        headers: Vec::new(),
    }
}

fn error(status: u16, msg: impl std::fmt::Display) -> Reply {
    json_reply(status, json!({"error": msg.to_string()}))
}

async fn read_request(s: &mut TcpStream) -> anyhow::Result<Option<Message>> {
    let limits = Limits {
        body_cap: MAX_REQUEST_BODY,
        max_head_bytes: 32 * 1024,
        max_headers: 64,
    };
    let mut p = MessageParser::new(Kind::Request, limits);
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0usize;
    loop {
        let n = tokio::time::timeout(READ_TIMEOUT, s.read(&mut buf)).await??;
        if n == 0 {
            return Ok(None);
        }
        total += n;
        if total > MAX_REQUEST_BODY + 64 * 1024 {
            anyhow::bail!("request too large");
        }
        let mut data = buf.get(..n).unwrap_or(&[]);
        while !data.is_empty() {
            let (used, msg) = p.parse(data)?;
            if let Some(m) = msg {
                return Ok(Some(m));
            }
            if used == 0 {
                break;
            }
            data = data.get(used..).unwrap_or(&[]);
        }
    }
}

async fn connection(mut s: TcpStream, traffic: Arc<Traffic>) -> anyhow::Result<()> {
    let Some(req) = read_request(&mut s).await? else {
        return Ok(());
    };
    let local = s.local_addr()?;
    let method = req.head.method.clone().unwrap_or_default();
    let target = req.head.target.clone().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let decision = access::decide(
        &access::Request {
            method: &method,
            path,
            query,
            host: req.head.header("host"),
            origin: req.head.header("origin"),
            cookie: req.head.header("cookie"),
            token_header: req.head.header(access::HEADER),
            listener: local,
        },
        &traffic.secret,
    );
    match decision {
        Decision::Allow => {}
        Decision::SetCookie { location } => {
            let mut r = error(303, "see the inspector without its token in the URL");
            r.headers.push(("Location", location));
            r.headers.push((
                "Set-Cookie",
                access::set_cookie(&traffic.secret, local.port()),
            ));
            return write(&mut s, r).await;
        }
        Decision::BadHost => {
            return write(
                &mut s,
                error(403, "the inspector answers only to 127.0.0.1 and localhost"),
            )
            .await
        }
        Decision::ForeignOrigin => {
            return write(
                &mut s,
                error(403, "the inspector takes changes only from its own page"),
            )
            .await
        }
        // No data and no detail: only where the owner finds the way in.
        Decision::Unauthorized => {
            return write(
                &mut s,
                error(
                    401,
                    "the inspector needs its token: open the URL that `overlay inspect` prints",
                ),
            )
            .await
        }
    }
    if path == "/api/events" && method == "GET" {
        return events(s, traffic).await;
    }
    let reply = route(&method, path, query, &req, &traffic).await;
    write(&mut s, reply).await
}

/// Whether the query asks for credentials unmasked (`reveal=1`).
fn reveal(query: &str) -> bool {
    query_pairs(query)
        .iter()
        .any(|(k, v)| k == "reveal" && matches!(v.as_str(), "1" | "true" | "yes"))
}

async fn route(method: &str, path: &str, query: &str, req: &Message, t: &Arc<Traffic>) -> Reply {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let json_body = req
        .head
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"));
    match (method, parts.as_slice()) {
        ("GET", [""]) | ("GET", ["index.html"]) => Reply {
            status: 200,
            ctype: "text/html; charset=utf-8",
            body: PAGE.as_bytes().to_vec(),
            headers: Vec::new(),
        },
        ("GET", ["api", "exchanges"]) => list(query, t),
        ("GET", ["api", "stats"]) => json_reply(200, stats(t)),
        ("GET", ["api", "services"]) => json_reply(200, services_json(t)),
        ("GET", ["api", "exchanges", id]) => match id.parse().ok().and_then(|id| t.get(id)) {
            Some(r) => json_reply(200, detail_json(&r, reveal(query), t)),
            None => error(404, format!("no record {id} (cleared or evicted)")),
        },
        ("POST", _) if !json_body => error(
            415,
            "POST requests must be application/json (this keeps other web sites out)",
        ),
        ("POST", ["api", "exchanges", id, "replay"]) => {
            let Some(rec) = id.parse().ok().and_then(|id| t.get(id)) else {
                return error(404, format!("no record {id} (cleared or evicted)"));
            };
            let edits: Edits = if req.body.is_empty() {
                Edits::default()
            } else {
                match serde_json::from_slice(&req.body) {
                    Ok(e) => e,
                    Err(e) => return error(400, format!("bad edits: {e}")),
                }
            };
            match replay::replay(&rec, &edits, t.limits).await {
                Ok(mut v) => {
                    if !reveal(query) {
                        replay::mask_answer(&mut v);
                    }
                    json_reply(200, v)
                }
                Err(e @ replay::ReplayError::Truncated(..)) => error(409, e),
                Err(e) => error(502, e),
            }
        }
        // The control socket's request and answer (`overlay traffic --pause`), as JSON.
        ("POST", ["api", "recording"]) => match serde_json::from_slice::<daemon::Record>(&req.body)
        {
            Ok(daemon::Record { on }) => {
                let was = t.set_recording(on);
                json_reply(200, json!(Recording { on, was }))
            }
            Err(e) => error(400, format!("expected {{\"on\": true|false}}: {e}")),
        },
        ("DELETE", ["api", "exchanges"]) => clear(t),
        ("POST", ["api", "clear"]) => clear(t),
        _ => error(404, format!("nothing at {method} {path}")),
    }
}

fn clear(t: &Arc<Traffic>) -> Reply {
    t.with_ring(|r| r.clear());
    json_reply(200, json!({"cleared": true}))
}

fn stats(t: &Arc<Traffic>) -> serde_json::Value {
    let (held, bytes, evicted, latest) =
        t.with_ring(|r| (r.len(), r.used(), r.evicted(), r.next_id() - 1));
    json!({
        "records": held,
        "bytes": bytes,
        "evicted": evicted,
        "latest": latest,
        "dropped": t.dropped.load(Ordering::Relaxed),
        "body_cap": t.limits.body_cap,
        "enabled": t.recording(),
    })
}

/// The list answer for a query string (also the daemon's answer to `overlay traffic`): a page
/// of summaries (oldest first) and flow groups (`collapse=1`), through the whole ring with
/// `before=ID`; credentials in targets are masked unless the query says `reveal=1`.
pub fn page(query: &str, t: &Arc<Traffic>) -> TrafficPage {
    let filter = Filter::from_query(query);
    let reveal = reveal(query);
    let pairs = query_pairs(query);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let after = get("after").and_then(|v| v.parse().ok()).unwrap_or(0);
    let before = get("before").and_then(|v| v.parse().ok());
    let collapse = matches!(get("collapse"), Some("1" | "true" | "yes"));
    let limit = get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_LIST)
        .min(MAX_LIST);
    t.with_ring(|r| {
        let page = r.page(&filter, after, before, limit, collapse);
        let records: Vec<Summary> = page
            .rows
            .iter()
            .rev()
            .map(|row| match row {
                Row::Record(x) => {
                    let mut s = x.summary();
                    if !reveal {
                        s.path = s.path.as_deref().map(mask::mask_target);
                    }
                    s
                }
                Row::Group(g) => g.summary(),
            })
            .collect();
        TrafficPage {
            records,
            latest: r.next_id() - 1,
            more: page.more,
            oldest: page.oldest,
            matched: page.matched,
        }
    })
}
/// The per-service view: every known service with its record counts.
pub fn services_json(t: &Arc<Traffic>) -> serde_json::Value {
    let counts = t.with_ring(|r| r.services());
    let names = t.service_names();
    let list: Vec<serde_json::Value> = names
        .iter()
        .map(|n| match counts.iter().find(|c| &c.service == n) {
            Some(c) => json!(c),
            None => json!({"service": n, "records": 0, "exchanges": 0, "errors": 0, "last_ms": 0}),
        })
        .collect();
    json!({"services": list})
}

/// A record as the detail view shows it: masked unless revealed, and for gRPC calls every
/// message decoded (wire fields, and named fields when a `.proto` describes the method).
pub fn detail_json(r: &Record, reveal: bool, t: &Traffic) -> serde_json::Value {
    let shown = if reveal {
        r.clone()
    } else {
        mask::mask_record(r)
    };
    let mut v = json!(shown);
    if let RecordKind::Exchange {
        request,
        response,
        grpc: Some(g),
        ..
    } = &r.kind
    {
        let view = |body: &[u8], is_request: bool| -> Vec<serde_json::Value> {
            grpc::messages(body)
                .iter()
                .take(MAX_GRPC_MESSAGES)
                .map(|m| {
                    let schema = (!m.compressed)
                        .then(|| t.schemas.decode(&g.service, &g.method, is_request, m.data))
                        .flatten();
                    grpc::message_view(m, schema)
                })
                .collect()
        };
        v["grpc"]["status_name"] = g.status_name().into();
        v["grpc"]["request_messages"] = view(&request.body.data, true).into();
        v["grpc"]["response_messages"] = response
            .as_ref()
            .map(|m| view(&m.body.data, false))
            .unwrap_or_default()
            .into();
        v["grpc"]["schema"] = t.schemas.method(&g.service, &g.method).is_some().into();
    }
    v
}

fn list(query: &str, t: &Arc<Traffic>) -> Reply {
    json_reply(200, json!(page(query, t)))
}

async fn events(mut s: TcpStream, t: Arc<Traffic>) -> anyhow::Result<()> {
    s.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\r\n",
    )
    .await?;
    let mut rx = t.subscribe();
    loop {
        let latest = *rx.borrow_and_update();
        s.write_all(format!("data: {latest}\n\n").as_bytes())
            .await?;
        tokio::select! {
            r = rx.changed() => r?,
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
        }
        // Coalesce bursts.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn write(s: &mut TcpStream, r: Reply) -> anyhow::Result<()> {
    let reason = match r.status {
        200 => "OK",
        303 => "See Other",
        401 => "Unauthorized",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        _ => "Error",
    };
    // The page never links out, but the token must not leave in a Referer; and no other site
    // may frame the page to click its buttons.
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\nContent-Security-Policy: frame-ancestors 'none'\r\nConnection: close\r\n",
        r.status,
        r.ctype,
        r.body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await?;
    s.write_all(&r.body).await?;
    s.shutdown().await?;
    Ok(())
}

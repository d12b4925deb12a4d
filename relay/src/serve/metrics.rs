//! `--metrics ADDR`: Prometheus text metrics on `/metrics` and a health check on `/healthz`.

use crate::gateway::GatewayStats;
use crate::serve::admin::HubCalls;
use crate::serve::stream::StreamStats;
use overlay_core::api::admin::AdminRequest;
use overlay_core::api::admin::{Nodes, Stats};
use overlay_core::api::Request;
use overlay_core::net::counters::CountersSnapshot;
use overlay_core::transport::stream::addr::stream_id;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Scrapes served at once.
const MAX_CONNS: usize = 32;

/// Serves metrics until the listener fails.
pub async fn serve(
    l: TcpListener,
    admin: HubCalls,
    gw: Option<Arc<GatewayStats>>,
    streams: Option<Arc<StreamStats>>,
    http: Arc<HttpStats>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNS));
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(p) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let admin = admin.clone();
        let gw = gw.clone();
        let streams = streams.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), one(s, admin, gw, streams, http))
                .await;
            drop(p);
        });
    }
}

/// The hub's reply to `request`, if it answers within 2 s.
async fn ask<R: Request<Wire = AdminRequest>>(admin: &HubCalls, request: R) -> Option<R::Reply> {
    match tokio::time::timeout(Duration::from_secs(2), admin.call(request)).await {
        Ok(Ok(reply)) => Some(reply),
        _ => None,
    }
}

async fn one(
    mut s: TcpStream,
    admin: HubCalls,
    gw: Option<Arc<GatewayStats>>,
    streams: Option<Arc<StreamStats>>,
    http: Arc<HttpStats>,
) -> std::io::Result<()> {
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..n]);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        // Healthy while the hub answers; the second line says whether joins are under load
        // (cookies required), so a probe or a person sees a flood without parsing /metrics.
        "/healthz" => match ask(&admin, Stats {}).await {
            Some(s) => (
                "200 OK",
                format!(
                    "ok\njoins: {}\n",
                    if s.joins.under_load {
                        "under load (cookies required)"
                    } else {
                        "normal"
                    }
                ),
            ),
            None => (
                "503 Service Unavailable",
                "the hub does not answer\n".to_string(),
            ),
        },
        "/metrics" => match render(&admin, gw.as_deref(), streams.as_deref()).await {
            Some(mut b) => {
                render_http(&mut b, &http);
                ("200 OK", b)
            }
            None => (
                "503 Service Unavailable",
                "the hub does not answer\n".to_string(),
            ),
        },
        _ => ("404 Not Found", "try /metrics or /healthz\n".to_string()),
    };
    let r = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(r.as_bytes()).await?;
    s.shutdown().await
}

/// The counters of the fronts and the callback Host router.
#[derive(Default)]
pub struct HttpStats {
    /// The fronts, per service.
    pub fronts: Option<Arc<crate::front::FrontStats>>,
    /// The Host router.
    pub host: Option<Arc<crate::proxy::ProxyStats>>,
}

/// The fronts' and the Host router's metrics.
fn render_http(o: &mut String, http: &HttpStats) {
    use crate::proxy::ProxyStats;
    let mut groups: Vec<(String, Arc<ProxyStats>)> = http
        .fronts
        .as_ref()
        .map(|f| {
            f.all()
                .into_iter()
                .map(|(s, st)| (format!("front=\"{s}\""), st))
                .collect()
        })
        .unwrap_or_default();
    if let Some(h) = &http.host {
        groups.push(("front=\"\",router=\"host\"".into(), h.clone()));
    }
    if groups.is_empty() {
        return;
    }
    let g = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    type Field = fn(&ProxyStats) -> &std::sync::atomic::AtomicU64;
    let series: [(&str, &str, &str, Field); 6] = [
        ("overlay_relay_front_connections_total", "counter", "Client connections to the fronts and the Host router.", |s| &s.connections),
        ("overlay_relay_front_connections", "gauge", "Client connections open now.", |s| &s.open),
        ("overlay_relay_front_refused_total", "counter", "Requests refused (no route, malformed, ambiguous framing).", |s| &s.refused),
        ("overlay_relay_front_upstream_failed_total", "counter", "Requests whose destination could not be reached or broke off.", |s| &s.upstream_failed),
        ("overlay_relay_front_requests_remote_total", "counter", "Requests (or whole connections) sent to the remote service.", |s| &s.to_remote),
        ("overlay_relay_front_requests_node_total", "counter", "Requests (or whole connections) sent to a node's instance (intercepted, or callbacks).", |s| &s.to_node),
    ];
    for (name, kind, help, field) in series {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, st) in &groups {
            let _ = writeln!(o, "{name}{{{labels}}} {}", g(field(st)));
        }
    }
}

async fn render(
    admin: &HubCalls,
    gw: Option<&GatewayStats>,
    streams: Option<&StreamStats>,
) -> Option<String> {
    let stats = ask(admin, Stats {}).await?;
    let nodes = ask(admin, Nodes {}).await?;
    let mut o = String::new();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let metric = |o: &mut String, name: &str, kind: &str, help: &str, lines: Vec<(String, u64)>| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in lines {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    metric(
        &mut o,
        "overlay_relay_peers",
        "gauge",
        "Registered peers.",
        vec![(String::new(), count(stats.peers))],
    );
    metric(
        &mut o,
        "overlay_relay_peers_connected",
        "gauge",
        "Peers with a recent handshake.",
        vec![(String::new(), count(stats.connected))],
    );
    // A peer's transport is the way its last authenticated datagram came.
    let (mut on_udp, mut on_tcp) = (0, 0);
    for n in &nodes {
        let recent = n.last_handshake_secs.is_some_and(|s| s < 180);
        let ep = n
            .endpoint
            .as_deref()
            .and_then(|e| e.parse::<std::net::SocketAddr>().ok());
        match ep {
            Some(a) if recent && stream_id(a).is_some() => on_tcp += 1,
            Some(_) if recent => on_udp += 1,
            _ => {}
        }
    }
    metric(
        &mut o,
        "overlay_relay_peers_by_transport",
        "gauge",
        "Peers with a recent handshake, by the transport they use now.",
        vec![
            ("{transport=\"udp\"}".into(), on_udp),
            ("{transport=\"tcp\"}".into(), on_tcp),
        ],
    );
    if let Some(st) = streams {
        let g = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        metric(
            &mut o,
            "overlay_relay_stream_bytes_total",
            "counter",
            "WireGuard datagram bytes carried over streams (--tcp-listen), by direction.",
            vec![
                ("{direction=\"rx\"}".into(), g(&st.rx_bytes)),
                ("{direction=\"tx\"}".into(), g(&st.tx_bytes)),
            ],
        );
        metric(
            &mut o,
            "overlay_relay_streams",
            "gauge",
            "Streams open.",
            vec![(String::new(), g(&st.open))],
        );
        metric(
            &mut o,
            "overlay_relay_streams_total",
            "counter",
            "Streams by outcome: accepted (upgraded), refused (over a limit or not an upgrade).",
            vec![
                ("{outcome=\"accepted\"}".into(), g(&st.accepted)),
                ("{outcome=\"refused\"}".into(), g(&st.refused)),
            ],
        );
        metric(
            &mut o,
            "overlay_relay_stream_dropped_total",
            "counter",
            "Datagrams dropped on the stream side because a queue was full.",
            vec![(String::new(), g(&st.dropped))],
        );
    }
    metric(
        &mut o,
        "overlay_relay_uptime_seconds",
        "gauge",
        "Seconds since start.",
        vec![(String::new(), stats.uptime_secs)],
    );
    let joins = &stats.joins;
    metric(
        &mut o,
        "overlay_relay_join_requests_total",
        "counter",
        "Join request datagrams received.",
        vec![(String::new(), joins.requests)],
    );
    metric(
        &mut o,
        "overlay_relay_join_outcomes_total",
        "counter",
        "Join requests by what became of them.",
        [
            ("malformed", joins.malformed),
            ("wrong_key", joins.wrong_key),
            ("cookies_sent", joins.cookies_sent),
            ("proven", joins.proven),
            ("opened", joins.opened),
            ("not_authentic", joins.not_authentic),
            ("replayed", joins.replayed),
            ("locked_out", joins.locked_out),
            ("busy", joins.busy),
            ("notices_sent", joins.notices_sent),
            ("replies_suppressed", joins.replies_suppressed),
            ("accepted", joins.accepted),
            ("refused", joins.refused),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{{outcome=\"{k}\"}}"), v))
        .collect(),
    );
    metric(
        &mut o,
        "overlay_relay_join_under_load",
        "gauge",
        "1 while the relay wants cookies from every joining node.",
        vec![(String::new(), u64::from(joins.under_load))],
    );
    metric(
        &mut o,
        "overlay_relay_join_opens_this_second",
        "gauge",
        "Join requests opened (public-key work) in the current second.",
        vec![(String::new(), u64::from(joins.opens_this_sec))],
    );
    let per = |k: fn(&CountersSnapshot) -> u64| -> Vec<(String, u64)> {
        nodes
            .iter()
            .map(|n| (format!("{{node=\"{}\"}}", n.name), k(&n.counters)))
            .collect()
    };
    metric(
        &mut o,
        "overlay_relay_node_rx_bytes_total",
        "counter",
        "Inner bytes received from a node.",
        per(|c| c.rx_bytes),
    );
    metric(
        &mut o,
        "overlay_relay_node_tx_bytes_total",
        "counter",
        "Inner bytes sent to a node.",
        per(|c| c.tx_bytes),
    );
    let mut drops: std::collections::BTreeMap<String, u64> = Default::default();
    let all = nodes
        .iter()
        .map(|n| &n.counters.drops)
        .chain(std::iter::once(&stats.global.drops));
    for d in all {
        for (k, v) in d {
            *drops.entry(k.clone()).or_default() += v;
        }
    }
    if let Some(g) = gw {
        drops.insert(
            "gateway_queue_in".into(),
            g.drop_queue_in.load(Ordering::Relaxed),
        );
        drops.insert(
            "gateway_queue_out".into(),
            g.drop_queue_out.load(Ordering::Relaxed),
        );
        drops.insert(
            "gateway_no_flow".into(),
            g.drop_no_flow.load(Ordering::Relaxed),
        );
        drops.insert(
            "gateway_flow_limit".into(),
            g.refused_limit.load(Ordering::Relaxed),
        );
        drops.insert(
            "gateway_buffer_budget".into(),
            g.refused_budget.load(Ordering::Relaxed),
        );
    }
    metric(
        &mut o,
        "overlay_relay_drops_total",
        "counter",
        "Packets dropped, by reason.",
        drops
            .into_iter()
            .map(|(k, v)| (format!("{{reason=\"{k}\"}}"), v))
            .collect(),
    );
    if let Some(g) = gw {
        let l = |v: &std::sync::atomic::AtomicU64| vec![(String::new(), v.load(Ordering::Relaxed))];
        metric(
            &mut o,
            "overlay_relay_tcp_flows",
            "gauge",
            "TCP flows open (both directions).",
            l(&g.tcp_open),
        );
        metric(
            &mut o,
            "overlay_relay_udp_flows",
            "gauge",
            "UDP flows open.",
            l(&g.udp_open),
        );
        metric(
            &mut o,
            "overlay_relay_tcp_flows_total",
            "counter",
            "TCP flows from nodes.",
            l(&g.tcp_total),
        );
        metric(
            &mut o,
            "overlay_relay_udp_flows_total",
            "counter",
            "UDP flows from nodes.",
            l(&g.udp_total),
        );
        metric(
            &mut o,
            "overlay_relay_callbacks_total",
            "counter",
            "Callback connections into nodes.",
            l(&g.callbacks_total),
        );
        metric(
            &mut o,
            "overlay_relay_upstream_connect_failures_total",
            "counter",
            "Failed connects to remote targets.",
            l(&g.connect_failed),
        );
        metric(
            &mut o,
            "overlay_relay_gateway_bytes_total",
            "counter",
            "Bytes through the gateway.",
            vec![
                (
                    "{direction=\"to_remote\"}".into(),
                    g.bytes_up.load(Ordering::Relaxed),
                ),
                (
                    "{direction=\"from_remote\"}".into(),
                    g.bytes_down.load(Ordering::Relaxed),
                ),
            ],
        );
        let b = g.buffers();
        metric(
            &mut o,
            "overlay_relay_gateway_buffer_bytes",
            "gauge",
            "Bytes of TCP buffers the gateway's flows hold.",
            vec![(String::new(), b.bytes)],
        );
        metric(
            &mut o,
            "overlay_relay_gateway_buffer_budget_bytes",
            "gauge",
            "Most bytes of TCP buffers the gateway's flows may hold (--gateway-buffer-mib).",
            vec![(String::new(), b.budget)],
        );
        metric(
            &mut o,
            "overlay_relay_gateway_node_buffer_bytes",
            "gauge",
            "Bytes of TCP buffers held by the nodes holding most.",
            b.top
                .iter()
                .map(|n| (format!("{{node=\"{}\"}}", n.node), n.bytes))
                .collect(),
        );
        metric(
            &mut o,
            "overlay_relay_gateway_buffer_refused_total",
            "counter",
            "TCP flows refused because their node's share or the buffer budget was full.",
            l(&g.refused_budget),
        );
    }
    Some(o)
}

//! `--metrics ADDR`: Prometheus text metrics on `/metrics` and a health check on `/healthz`.

use crate::admin::{AdminCall, AdminRequest, AdminResponse};
use crate::gateway::GatewayStats;
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
    admin: std::sync::mpsc::Sender<AdminCall>,
    gw: Option<Arc<GatewayStats>>,
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
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), one(s, admin, gw)).await;
            drop(p);
        });
    }
}

async fn ask(
    admin: &std::sync::mpsc::Sender<AdminCall>,
    req: AdminRequest,
) -> Option<serde_json::Value> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    admin.send((req, tx)).ok()?;
    match tokio::time::timeout(Duration::from_secs(2), rx).await {
        Ok(Ok(AdminResponse::Ok { data })) => Some(data),
        _ => None,
    }
}

async fn one(
    mut s: TcpStream,
    admin: std::sync::mpsc::Sender<AdminCall>,
    gw: Option<Arc<GatewayStats>>,
) -> std::io::Result<()> {
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf[..n]);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        // Healthy while the hub answers; the second line says whether joins are under load
        // (cookies required), so a probe or a person sees a flood without parsing /metrics.
        "/healthz" => match ask(&admin, AdminRequest::Stats).await {
            Some(s) => (
                "200 OK",
                format!(
                    "ok\njoins: {}\n",
                    if s["joins"]["under_load"].as_bool().unwrap_or(false) {
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
        "/metrics" => match render(&admin, gw.as_deref()).await {
            Some(b) => ("200 OK", b),
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

async fn render(
    admin: &std::sync::mpsc::Sender<AdminCall>,
    gw: Option<&GatewayStats>,
) -> Option<String> {
    let stats = ask(admin, AdminRequest::Stats).await?;
    let nodes = ask(admin, AdminRequest::Nodes).await?;
    let mut o = String::new();
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
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
        vec![(String::new(), num(&stats["peers"]))],
    );
    metric(
        &mut o,
        "overlay_relay_peers_connected",
        "gauge",
        "Peers with a recent handshake.",
        vec![(String::new(), num(&stats["connected"]))],
    );
    metric(
        &mut o,
        "overlay_relay_uptime_seconds",
        "gauge",
        "Seconds since start.",
        vec![(String::new(), num(&stats["uptime_secs"]))],
    );
    let joins = &stats["joins"];
    metric(
        &mut o,
        "overlay_relay_join_requests_total",
        "counter",
        "Join request datagrams received.",
        vec![(String::new(), num(&joins["requests"]))],
    );
    metric(
        &mut o,
        "overlay_relay_join_outcomes_total",
        "counter",
        "Join requests by what became of them.",
        [
            "malformed",
            "wrong_key",
            "cookies_sent",
            "proven",
            "opened",
            "not_authentic",
            "replayed",
            "locked_out",
            "busy",
            "notices_sent",
            "replies_suppressed",
            "accepted",
            "refused",
        ]
        .iter()
        .map(|k| (format!("{{outcome=\"{k}\"}}"), num(&joins[*k])))
        .collect(),
    );
    metric(
        &mut o,
        "overlay_relay_join_under_load",
        "gauge",
        "1 while the relay wants cookies from every joining node.",
        vec![(
            String::new(),
            u64::from(joins["under_load"].as_bool().unwrap_or(false)),
        )],
    );
    metric(
        &mut o,
        "overlay_relay_join_opens_this_second",
        "gauge",
        "Join requests opened (public-key work) in the current second.",
        vec![(String::new(), num(&joins["opens_this_sec"]))],
    );
    let list = nodes.as_array().cloned().unwrap_or_default();
    let per = |k: &str| -> Vec<(String, u64)> {
        list.iter()
            .map(|n| {
                (
                    format!("{{node=\"{}\"}}", n["name"].as_str().unwrap_or("")),
                    num(&n["counters"][k]),
                )
            })
            .collect()
    };
    metric(
        &mut o,
        "overlay_relay_node_rx_bytes_total",
        "counter",
        "Inner bytes received from a node.",
        per("rx_bytes"),
    );
    metric(
        &mut o,
        "overlay_relay_node_tx_bytes_total",
        "counter",
        "Inner bytes sent to a node.",
        per("tx_bytes"),
    );
    let mut drops: std::collections::BTreeMap<String, u64> = Default::default();
    let all = list
        .iter()
        .map(|n| &n["counters"]["drops"])
        .chain(std::iter::once(&stats["global"]["drops"]));
    for d in all {
        if let Some(m) = d.as_object() {
            for (k, v) in m {
                *drops.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
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
    }
    Some(o)
}

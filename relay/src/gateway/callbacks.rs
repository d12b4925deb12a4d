//! Callback listeners in the remote environment: one TCP port per node service, and an HTTP
//! listener that routes by `Host`. Accepted connections go to the gateway thread, which opens
//! the overlay connection to the service.

use super::{Control, GatewayHandle};
use overlay_core::gateway::callback::{scan_head, HeadScan, MAX_HEAD};
use overlay_core::gateway::HostRoute;
use overlay_core::registry::ServiceKey;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Connections whose HTTP head is being read at once.
const MAX_HEAD_READS: usize = 256;
/// How long a client gets to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Where callbacks go, as the hub last published it.
#[derive(Debug, Default)]
pub struct CallbackRoutes {
    by_port: HashMap<u16, (String, SocketAddrV4)>,
    by_key: HashMap<ServiceKey, (String, SocketAddrV4)>,
}

impl CallbackRoutes {
    /// Builds the routes from `Hub::callback_routes`.
    pub fn new(routes: Vec<(ServiceKey, SocketAddrV4, Option<u16>)>) -> Self {
        let mut r = CallbackRoutes::default();
        for (key, addr, port) in routes {
            let node = key.node.clone().unwrap_or_default();
            if let Some(p) = port {
                r.by_port.insert(p, (node.clone(), addr));
            }
            r.by_key.insert(key, (node, addr));
        }
        r
    }
}

/// The running listeners; publish new routes when the registry changes.
pub struct CallbackListeners {
    routes: watch::Sender<Arc<CallbackRoutes>>,
}

impl CallbackListeners {
    /// Starts the `Host` router on `http` (if given) and the per-service port listeners on
    /// `ports_ip` (if given), in `rt`.
    pub fn start(
        rt: &tokio::runtime::Handle,
        http: Option<std::net::TcpListener>,
        ports_ip: Option<IpAddr>,
        domain: String,
        gw: GatewayHandle,
    ) -> std::io::Result<CallbackListeners> {
        let (tx, rx) = watch::channel(Arc::new(CallbackRoutes::default()));
        if let Some(l) = http {
            l.set_nonblocking(true)?;
            let rx = rx.clone();
            let gw = gw.clone();
            rt.spawn(async move {
                match TcpListener::from_std(l) {
                    Ok(l) => http_router(l, rx, domain, gw).await,
                    Err(e) => tracing::error!("callback listener: {e}"),
                }
            });
        }
        if let Some(ip) = ports_ip {
            rt.spawn(port_listeners(ip, rx, gw));
        }
        Ok(CallbackListeners { routes: tx })
    }

    /// Publishes new routes (from the hub thread).
    pub fn publish(&self, routes: CallbackRoutes) {
        self.routes.send_replace(Arc::new(routes));
    }
}

/// Keeps one listener per callback port in the routes.
async fn port_listeners(
    ip: IpAddr,
    mut rx: watch::Receiver<Arc<CallbackRoutes>>,
    gw: GatewayHandle,
) {
    let mut running: HashMap<u16, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let routes = rx.borrow_and_update().clone();
        running.retain(|port, task| {
            let keep = routes.by_port.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for &port in routes.by_port.keys() {
            if running.contains_key(&port) {
                continue;
            }
            match TcpListener::bind(SocketAddr::new(ip, port)).await {
                Ok(l) => {
                    tracing::info!(port, "callback port listening");
                    running.insert(
                        port,
                        tokio::spawn(accept_port(l, port, rx.clone(), gw.clone())),
                    );
                }
                Err(e) => tracing::warn!(port, "cannot listen on callback port: {e}"),
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn accept_port(
    l: TcpListener,
    port: u16,
    rx: watch::Receiver<Arc<CallbackRoutes>>,
    gw: GatewayHandle,
) {
    loop {
        let Ok((s, peer)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let route = rx.borrow().by_port.get(&port).cloned();
        let Some((node, to)) = route else {
            continue;
        };
        tracing::debug!(%peer, port, service = %to, "callback on port");
        hand_over(s, to, node, Vec::new(), &gw);
    }
}

fn hand_over(s: TcpStream, to: SocketAddrV4, node: String, prefix: Vec<u8>, gw: &GatewayHandle) {
    match s.into_std() {
        Ok(stream) => {
            if !gw.control(Control::Callback {
                stream,
                to,
                node,
                prefix,
            }) {
                tracing::debug!("gateway busy: callback connection dropped");
            }
        }
        Err(e) => tracing::debug!("callback connection: {e}"),
    }
}

async fn http_router(
    l: TcpListener,
    rx: watch::Receiver<Arc<CallbackRoutes>>,
    domain: String,
    gw: GatewayHandle,
) {
    let permits = Arc::new(Semaphore::new(MAX_HEAD_READS));
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let rx = rx.clone();
        let domain = domain.clone();
        let gw = gw.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(HEAD_TIMEOUT, route_one(s, rx, &domain, &gw)).await;
            drop(permit);
        });
    }
}

async fn route_one(
    mut s: TcpStream,
    rx: watch::Receiver<Arc<CallbackRoutes>>,
    domain: &str,
    gw: &GatewayHandle,
) {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    let host = loop {
        match scan_head(&buf) {
            HeadScan::Incomplete => {}
            HeadScan::Host(h) => break h,
            HeadScan::Invalid => {
                let _ = reply(&mut s, "400 Bad Request", "not an HTTP/1 request\n").await;
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n.min(MAX_HEAD + 4 - buf.len().min(MAX_HEAD))]),
        }
    };
    let Some(host) = host else {
        let _ = reply(
            &mut s,
            "400 Bad Request",
            "the request has no Host header\n",
        )
        .await;
        return;
    };
    let route =
        HostRoute::parse(&host, domain).and_then(|r| rx.borrow().by_key.get(&r.key()).cloned());
    let Some((node, to)) = route else {
        let body = format!(
            "no node service is named {host}: use <service>.<node>.{domain} or <tag>.<service>.<node>.{domain}\n"
        );
        let _ = reply(&mut s, "404 Not Found", &body).await;
        return;
    };
    tracing::debug!(%host, service = %to, "callback by Host");
    hand_over(s, to, node, buf, gw);
}

async fn reply(s: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let r = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(r.as_bytes()).await?;
    s.shutdown().await
}

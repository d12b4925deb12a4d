//! Callback listeners in the remote environment: one TCP port per node service, and an HTTP
//! listener that routes by `Host` (HTTP/1.1, per request) and `:authority` (HTTP/2 and gRPC,
//! per stream). Port connections go whole to the gateway thread, which opens the overlay
//! connection to the service; the HTTP router reads requests ([`crate::proxy`]) and opens one
//! such connection per service a client connection names.

use super::GatewayHandle;
use crate::proxy::{self, Decision, Dest, ProxyStats, RequestInfo, Router};
use overlay_core::intercept::Target;
use overlay_core::names::registry::ServiceKey;
use overlay_core::relay::gateway::HostRoute;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Connections the HTTP router serves at once; more wait in the accept queue.
const MAX_HTTP_CONNECTIONS: usize = 4096;

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
    /// The HTTP router's counters.
    pub stats: Arc<ProxyStats>,
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
        let stats = Arc::new(ProxyStats::default());
        if let Some(l) = http {
            l.set_nonblocking(true)?;
            let router = Arc::new(HostRouter {
                routes: rx.clone(),
                domain,
                stats: stats.clone(),
            });
            let gw = gw.clone();
            rt.spawn(async move {
                match TcpListener::from_std(l) {
                    Ok(l) => http_router(l, router, gw).await,
                    Err(e) => tracing::error!("callback listener: {e}"),
                }
            });
        }
        if let Some(ip) = ports_ip {
            rt.spawn(port_listeners(ip, rx, gw));
        }
        Ok(CallbackListeners { routes: tx, stats })
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
        let _ = s.set_nodelay(true);
        proxy::upstream::hand_over(
            s,
            Vec::new(),
            peer,
            &Target { node, addr: to },
            "callback",
            &gw,
        );
    }
}

async fn http_router(l: TcpListener, router: Arc<HostRouter>, gw: GatewayHandle) {
    let permits = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((s, peer)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let router = router.clone();
        let gw = gw.clone();
        tokio::spawn(async move {
            proxy::serve(
                s,
                peer,
                router,
                gw,
                proxy::Sniff::Quiet(proxy::HEAD_TIMEOUT),
            )
            .await;
            drop(permit);
        });
    }
}

/// Routes by `Host` / `:authority`: `[tag.]service.node.domain`.
struct HostRouter {
    routes: watch::Receiver<Arc<CallbackRoutes>>,
    domain: String,
    stats: Arc<ProxyStats>,
}

impl Router for HostRouter {
    fn decide(&self, req: &RequestInfo<'_>) -> Decision {
        let Some(host) = req.authority else {
            return Decision::Refuse(400, "the request names no host (Host or :authority)".into());
        };
        let domain = &self.domain;
        let route = HostRoute::parse(host, domain)
            .and_then(|r| self.routes.borrow().by_key.get(&r.key()).cloned());
        match route {
            Some((node, addr)) => Decision::Go(Dest::Node(Target { node, addr })),
            None => Decision::Refuse(
                404,
                format!(
                    "no node service is named {host}: use <service>.<node>.{domain} or <tag>.<service>.<node>.{domain}"
                ),
            ),
        }
    }

    fn via(&self) -> &'static str {
        "host"
    }

    fn fallback(&self) -> Option<Dest> {
        None
    }

    fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

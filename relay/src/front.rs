//! The fronts: one listener per catalog service with `front = "ADDR:PORT"`, where the remote
//! environment's callers of that service arrive. Where they go is what the service's
//! intercepts say (the hub publishes them as [`FrontRoute`]s; core decides with
//! `FrontPlan::route`): the first header intercept a request matches, else the intercept
//! without a header, else the service's `address`.
//!
//! HTTP is read on every connection, whatever the intercepts are when it opens ([`crate::proxy`]:
//! per request on HTTP/1.1, bytes forwarded as they came; per stream on HTTP/2 and gRPC), so a
//! caller's pooled keep-alive connection follows intercepts that start or end while it lives;
//! requests in flight finish where they started. A connection that is not HTTP goes whole
//! where a request without headers would: while its first bytes are awaited the way to
//! `address` opens, so a protocol whose server speaks first is spliced to it at once (with an
//! intercept without a header, such a client waits [`QUIET`] before it goes to the node).
//! Connections are bounded ([`MAX_CONNECTIONS`], the accept queue waits beyond it); what goes to
//! a node obeys the gateway's flow limits and buffer budget.
//!
//! Accepted connections run on [`Workers`]: one current-thread runtime per core, each
//! connection wholly on one of them, so its wake-ups never cross threads (on the relay's
//! multi-thread runtime, futex wake-ups and task switches were the largest cost beside the
//! TCP stack in `perf` profiles of the bench part `intercept`; one current-thread runtime took
//! the relay's CPU per proxied 128-byte request from 18 to 15.5 µs), while the fronts together
//! can still use every core.

use crate::gateway::GatewayHandle;
use crate::proxy::{self, Decision, Dest, ProxyStats, RequestInfo, Router};
use overlay_core::relay::FrontRoute;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Connections through all fronts at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 4096;
/// With header intercepts, a client that says nothing this long is not HTTP (a protocol where
/// the server speaks first): it goes where a connection without headers would.
const QUIET: Duration = Duration::from_secs(1);

/// The fronts' routing as last published, by listen address.
type Table = HashMap<SocketAddr, Arc<FrontRoute>>;

/// The running fronts.
pub struct Fronts {
    routes: watch::Sender<Arc<Table>>,
    /// Counters per service, kept across route changes.
    pub stats: Arc<FrontStats>,
}

/// Counters per front (by service name).
#[derive(Default)]
pub struct FrontStats {
    by_service: std::sync::Mutex<HashMap<String, Arc<ProxyStats>>>,
}

impl FrontStats {
    /// The counters of `service`.
    pub fn of(&self, service: &str) -> Arc<ProxyStats> {
        self.by_service
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(service.to_string())
            .or_default()
            .clone()
    }

    /// Every front's counters, by service name.
    pub fn all(&self) -> Vec<(String, Arc<ProxyStats>)> {
        let mut v: Vec<(String, Arc<ProxyStats>)> = self
            .by_service
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl Fronts {
    /// Starts the listener manager in `rt`, connections on [`Workers`]; listeners follow
    /// [`Fronts::publish`].
    pub fn start(rt: &tokio::runtime::Handle, gw: GatewayHandle) -> Fronts {
        let (tx, rx) = watch::channel(Arc::new(Table::new()));
        let stats = Arc::new(FrontStats::default());
        let workers = Arc::new(Workers::start());
        rt.spawn(listeners(rx, gw, stats.clone(), workers));
        Fronts { routes: tx, stats }
    }

    /// Publishes the hub's routes (from the hub thread).
    pub fn publish(&self, routes: Vec<FrontRoute>) {
        let table: Table = routes
            .into_iter()
            .map(|r| (r.listen, Arc::new(r)))
            .collect();
        self.routes.send_replace(Arc::new(table));
    }
}

/// Threads with a current-thread runtime each, one per core, that front connections are dealt
/// to in turn.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// As many workers as cores; those that cannot start are left out (with none, connections
    /// run on the runtime that accepted them).
    fn start() -> Workers {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let started = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    let h = rt.handle().clone();
                    std::thread::Builder::new()
                        .name(format!("overlay-front-{i}"))
                        // The runtime runs the connections spawned onto it for the process's life.
                        .spawn(move || rt.block_on(std::future::pending::<()>()))
                        .map(|_| h)
                });
            match started {
                Ok(h) => handles.push(h),
                Err(e) => tracing::warn!("front worker {i} did not start: {e}"),
            }
        }
        Workers {
            handles,
            next: AtomicUsize::new(0),
        }
    }

    /// The runtime the next connection goes to, if any.
    fn pick(&self) -> Option<&tokio::runtime::Handle> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.handles.get(i % self.handles.len().max(1))
    }
}

/// Keeps one listener per front.
async fn listeners(
    mut rx: watch::Receiver<Arc<Table>>,
    gw: GatewayHandle,
    stats: Arc<FrontStats>,
    workers: Arc<Workers>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut running: HashMap<SocketAddr, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let table = rx.borrow_and_update().clone();
        running.retain(|listen, task| {
            let keep = table.contains_key(listen);
            if !keep {
                task.abort();
                tracing::info!(%listen, "front closed");
            }
            keep
        });
        for (listen, route) in table.iter() {
            if running.contains_key(listen) {
                continue;
            }
            match bind(*listen) {
                Ok(l) => {
                    tracing::info!(%listen, service = %route.service, address = %route.address, "front listening");
                    let router = FrontRouter {
                        listen: *listen,
                        routes: rx.clone(),
                        stats: stats.of(&route.service),
                    };
                    running.insert(
                        *listen,
                        tokio::spawn(accept(
                            l,
                            router,
                            gw.clone(),
                            permits.clone(),
                            workers.clone(),
                        )),
                    );
                }
                Err(e) => {
                    tracing::warn!(%listen, service = %route.service, "cannot listen on the front: {e}")
                }
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    let s = match listen {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    s.set_reuseaddr(true)?;
    s.bind(listen)?;
    s.listen(1024)
}

async fn accept(
    l: TcpListener,
    router: FrontRouter,
    gw: GatewayHandle,
    permits: Arc<Semaphore>,
    workers: Arc<Workers>,
) {
    let router = Arc::new(router);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (s, peer) = match l.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if router.route().is_none() {
            // The front is closing.
            continue;
        }
        let (router, gw) = (router.clone(), gw.clone());
        let Some(worker) = workers.pick() else {
            tokio::spawn(connection(s, peer, router, gw, permit));
            continue;
        };
        // The socket moves to the worker's own I/O driver, with everything else of the
        // connection.
        match s.into_std() {
            Ok(s) => {
                worker.spawn(async move {
                    match TcpStream::from_std(s) {
                        Ok(s) => connection(s, peer, router, gw, permit).await,
                        Err(e) => tracing::debug!(%peer, "front connection: {e}"),
                    }
                });
            }
            Err(e) => tracing::debug!(%peer, "front connection: {e}"),
        }
    }
}

/// Serves one caller's connection; `permit` counts it against [`MAX_CONNECTIONS`].
async fn connection(
    s: TcpStream,
    peer: SocketAddr,
    router: Arc<FrontRouter>,
    gw: GatewayHandle,
    permit: OwnedSemaphorePermit,
) {
    let _ = s.set_nodelay(true);
    // HTTP is routed per request (per stream on HTTP/2) whatever the intercepts are now, so a
    // kept-alive connection follows intercepts that start or end while it lives. The way into
    // the remote environment opens while the client's first bytes are awaited: a protocol
    // whose server speaks first is spliced to it at once.
    let sniff = match router.whole() {
        d @ Dest::Remote(_) => proxy::Sniff::Open(d),
        Dest::Node(_) => proxy::Sniff::Quiet(QUIET),
    };
    proxy::serve(s, peer, router, gw, sniff).await;
    drop(permit);
}

/// Routes one front's requests by the current intercepts.
struct FrontRouter {
    listen: SocketAddr,
    routes: watch::Receiver<Arc<Table>>,
    stats: Arc<ProxyStats>,
}

impl FrontRouter {
    fn route(&self) -> Option<Arc<FrontRoute>> {
        self.routes.borrow().get(&self.listen).cloned()
    }

    /// Where a connection goes that is not looked into.
    fn whole(&self) -> Dest {
        match self.route() {
            Some(r) => match &r.plan.default {
                Some(t) => Dest::Node(t.clone()),
                None => Dest::Remote(r.address.as_str().into()),
            },
            None => Dest::Remote("".into()),
        }
    }
}

impl Router for FrontRouter {
    fn decide(&self, req: &RequestInfo<'_>) -> Decision {
        let Some(r) = self.route() else {
            return Decision::Refuse(503, "this front is closing".into());
        };
        match r.plan.route(req.fields.iter().copied()) {
            Some(t) => Decision::Go(Dest::Node(t.clone())),
            None => Decision::Go(Dest::Remote(r.address.as_str().into())),
        }
    }

    fn via(&self) -> &'static str {
        "front"
    }

    fn fallback(&self) -> Option<Dest> {
        self.route().map(|_| self.whole())
    }

    fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

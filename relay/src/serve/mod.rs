//! `overlay-relay serve`: load state, bind the port, run the hub and the admin socket.
//!
//! The relay's running side: [`hub`] drives the sans-IO hub on the UDP socket, [`stream`] the
//! overlay over an HTTP upgrade, [`admin`] the admin socket, [`metrics`] `/metrics` and
//! `/healthz`, [`state`] the state directory; the gateway into the remote environment is
//! `crate::gateway`.

pub mod admin;
pub mod hub;
pub mod metrics;
pub mod state;
pub mod stream;
pub mod tls;

use crate::serve::state::StateDir;
use clap::Args;
use overlay_core::net::addressing::AddressPlan;
use overlay_core::net::prefix::Ipv4Prefix;
use overlay_core::relay::gateway::{BudgetConfig, CallbackPlan, FlowLimits, PortRange};
use overlay_core::relay::{Hub, HubConfig, OnDemandConfig};
use overlay_core::transport::stream::url::RelayUrl;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Flags of `serve`; each is also an `OVERLAY_RELAY_<FLAG>` environment variable.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// UDP address for WireGuard and joins.
    #[arg(long, env = "OVERLAY_RELAY_LISTEN", default_value = "0.0.0.0:51820")]
    listen: SocketAddr,
    /// The overlay network.
    #[arg(long, env = "OVERLAY_RELAY_NETWORK", default_value = "100.64.0.0/10")]
    network: Ipv4Prefix,
    /// The DNS domain of the overlay.
    #[arg(long, env = "OVERLAY_RELAY_DOMAIN", default_value = "ovl.internal")]
    domain: String,
    /// HOST:PORT nodes reach the relay at (defaults to --listen).
    #[arg(long, env = "OVERLAY_RELAY_PUBLIC_ENDPOINT")]
    public_endpoint: Option<String>,
    /// TCP address serving the overlay as an HTTP/1.1 WebSocket upgrade, for nodes whose UDP
    /// cannot reach the relay (behind an HTTP ingress or proxy).
    #[arg(long, env = "OVERLAY_RELAY_TCP_LISTEN")]
    tcp_listen: Option<SocketAddr>,
    /// URL nodes reach --tcp-listen at, e.g. https://relay.example.com/overlay (put in tokens
    /// beside the UDP endpoint; its path is the one served). Default: http://TCP-LISTEN/overlay.
    #[arg(long, env = "OVERLAY_RELAY_PUBLIC_URL")]
    public_url: Option<String>,
    /// PEM certificate chain for TLS on --tcp-listen (with --tls-key), when no ingress
    /// terminates TLS in front of the relay.
    #[arg(long, env = "OVERLAY_RELAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "OVERLAY_RELAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Streams from one source address at most on --tcp-listen (an ingress counts as one source).
    #[arg(long, env = "OVERLAY_RELAY_TCP_MAX_PER_SOURCE", default_value_t = 64)]
    tcp_max_per_source: usize,
    /// Streams at most on --tcp-listen (each buffers up to 128 KiB).
    #[arg(long, env = "OVERLAY_RELAY_TCP_MAX_STREAMS", default_value_t = 1024)]
    tcp_max_streams: usize,
    /// Catalog of remote services (TOML), re-read when it changes.
    #[arg(long, env = "OVERLAY_RELAY_CATALOG")]
    catalog: Option<std::path::PathBuf>,
    /// Inner MTU handed to peers.
    #[arg(long, env = "OVERLAY_RELAY_MTU", default_value_t = 1420)]
    mtu: u16,
    /// TCP address of the HTTP callback router (routes by Host `[tag.]service.node.domain`);
    /// its IP is also where callback ports listen.
    #[arg(long, env = "OVERLAY_RELAY_CALLBACK_LISTEN")]
    callback_listen: Option<SocketAddr>,
    /// TCP ports handed to node services for callbacks, e.g. 30000-30999 (stable per service).
    #[arg(long, env = "OVERLAY_RELAY_CALLBACK_PORTS")]
    callback_ports: Option<PortRange>,
    /// The name or address the remote environment reaches the relay at, for callback URLs
    /// (default: the callback-listen address, or the public endpoint's host).
    #[arg(long, env = "OVERLAY_RELAY_CALLBACK_HOST")]
    callback_host: Option<String>,
    /// TCP address for Prometheus metrics (/metrics) and the health check (/healthz).
    #[arg(long, env = "OVERLAY_RELAY_METRICS")]
    metrics: Option<SocketAddr>,
    /// Also look up names under this suffix on demand (repeatable, or comma-separated).
    #[arg(
        long = "on-demand-suffix",
        env = "OVERLAY_RELAY_ON_DEMAND_SUFFIX",
        value_delimiter = ','
    )]
    on_demand_suffix: Vec<String>,
    /// Do not look up remote names on demand (only the catalog is reachable).
    #[arg(long, env = "OVERLAY_RELAY_NO_ON_DEMAND")]
    no_on_demand: bool,
    /// How long a name looked up on demand stays mapped (e.g. 30m, 1h).
    #[arg(long, env = "OVERLAY_RELAY_ON_DEMAND_TTL", default_value = "1h")]
    on_demand_ttl: String,
    /// Most concurrent TCP and UDP flows through the gateway per node.
    #[arg(long, env = "OVERLAY_RELAY_MAX_FLOWS_PER_NODE", default_value_t = 1024)]
    max_flows_per_node: usize,
    /// Most concurrent flows through the gateway in total.
    #[arg(long, env = "OVERLAY_RELAY_MAX_FLOWS", default_value_t = 8192)]
    max_flows: usize,
    /// Largest buffer per direction of each proxied TCP connection, in KiB (smaller when the
    /// node nears its share of --gateway-buffer-mib).
    #[arg(long, env = "OVERLAY_RELAY_TCP_BUFFER_KIB", default_value_t = 256)]
    tcp_buffer_kib: usize,
    /// Memory for the buffers of all proxied TCP connections together, in MiB; each node gets a
    /// fair share, so one node cannot take it all.
    #[arg(long, env = "OVERLAY_RELAY_GATEWAY_BUFFER_MIB", default_value_t = 256)]
    gateway_buffer_mib: usize,
    /// A proxied TCP connection without traffic this long is closed (e.g. 15m).
    #[arg(long, env = "OVERLAY_RELAY_TCP_IDLE_TIMEOUT", default_value = "15m")]
    tcp_idle_timeout: String,
    /// A UDP flow without traffic this long is forgotten (e.g. 60s).
    #[arg(long, env = "OVERLAY_RELAY_UDP_IDLE_TIMEOUT", default_value = "60s")]
    udp_idle_timeout: String,
    /// Make a new relay key when private.key is missing or damaged although the state holds
    /// nodes or tokens (they stop working: every node must join again); a good key is kept.
    #[arg(long, env = "OVERLAY_RELAY_NEW_KEY")]
    new_key: bool,
}

/// Raises the soft limit on open files to the hard limit: every proxied connection holds one.
fn raise_nofile_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Runs the relay until it is killed.
pub async fn serve(state: &Path, args: ServeArgs) -> anyhow::Result<()> {
    raise_nofile_limit();
    let plan = AddressPlan::new(args.network)?;
    let dir = StateDir::open(state)?;
    let persisted = dir.load()?;
    let private_key = dir.load_key(&persisted, args.new_key)?;
    let public_endpoint = args
        .public_endpoint
        .unwrap_or_else(|| args.listen.to_string());
    let on_demand_ttl = overlay_core::duration::parse_secs(&args.on_demand_ttl)?;
    let tcp_idle = overlay_core::duration::parse_secs(&args.tcp_idle_timeout)?;
    let udp_idle = overlay_core::duration::parse_secs(&args.udp_idle_timeout)?;
    let http_listener = match args.callback_listen {
        Some(a) => Some(
            std::net::TcpListener::bind(a)
                .map_err(|e| anyhow::anyhow!("cannot listen for callbacks on tcp {a}: {e}"))?,
        ),
        None => None,
    };
    let metrics_listener = match args.metrics {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| anyhow::anyhow!("cannot serve metrics on tcp {a}: {e}"))?,
        ),
        None => None,
    };
    let public_url = match (&args.public_url, args.tcp_listen) {
        (Some(u), _) => Some(RelayUrl::parse(u)?),
        (None, Some(a)) => {
            let scheme = if args.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            Some(RelayUrl::parse(&format!("{scheme}://{a}/overlay"))?)
        }
        (None, None) => None,
    };
    if public_url.is_some() && args.tcp_listen.is_none() {
        tracing::warn!(
            "--public-url is set without --tcp-listen: tokens name the URL, so an ingress or \
             another relay process must serve it"
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(crate::serve::tls::acceptor(c, k)?),
        _ => None,
    };
    let tcp_listener = match args.tcp_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for streams on tcp {a}: {e}"))?,
        ),
        None => None,
    };
    let sock = std::net::UdpSocket::bind(args.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on udp {}: {e}", args.listen))?;
    let hub = Hub::new(
        HubConfig {
            private_key,
            plan,
            endpoints: vec![public_endpoint.clone()],
            url: public_url.as_ref().map(ToString::to_string),
            domain: args.domain.clone(),
            mtu: args.mtu,
        },
        persisted,
        crate::serve::hub::now(),
        Box::new(rand::rngs::OsRng),
    )?;
    let mut hub = hub;
    let callback_host = args
        .callback_host
        .clone()
        .unwrap_or_else(|| match args.callback_listen {
            Some(a) if !a.ip().is_unspecified() => a.ip().to_string(),
            _ => public_endpoint
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                .unwrap_or_else(|| public_endpoint.clone()),
        });
    let plan_cb = CallbackPlan {
        ports: args.callback_ports,
        host: callback_host.clone(),
        http_port: args.callback_listen.map(|a| a.port()),
    };
    hub.set_callback_plan(plan_cb.clone());
    hub.set_on_demand(OnDemandConfig {
        enabled: !args.no_on_demand,
        suffixes: args.on_demand_suffix.clone(),
        ttl_secs: on_demand_ttl,
    });
    let rt = tokio::runtime::Handle::current();
    let wake = Arc::new(overlay_sys::wake::Wake::new()?);
    let (gw, gw_out) = crate::gateway::start(
        crate::gateway::GatewayConfig {
            relay_addr: plan.relay_addr(),
            mtu: usize::from(args.mtu),
            limits: FlowLimits {
                per_node: args.max_flows_per_node,
                total: args.max_flows,
            },
            budget: BudgetConfig {
                total: args.gateway_buffer_mib.clamp(1, 1 << 20) << 20,
                max_buffer: args.tcp_buffer_kib.clamp(4, 16 * 1024) * 1024,
                flows_per_node: args.max_flows_per_node,
                ..BudgetConfig::default()
            },
            tcp_idle: Duration::from_secs(tcp_idle),
            udp_idle: Duration::from_secs(udp_idle),
            connect_timeout: Duration::from_secs(10),
        },
        rt.clone(),
        wake.clone(),
    )?;
    let callbacks = if plan_cb.enabled() {
        let ports_ip = args.callback_ports.map(|_| {
            args.callback_listen
                .map(|a| a.ip())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
        });
        Some(crate::gateway::CallbackListeners::start(
            &rt,
            http_listener,
            ports_ip,
            args.domain.clone(),
            gw.clone(),
        )?)
    } else {
        None
    };
    let resolver =
        (!args.no_on_demand).then(|| crate::gateway::Resolver::new(rt.clone(), wake.clone()));
    let fronts = crate::front::Fronts::start(&rt, gw.clone());
    let http_stats = Arc::new(crate::serve::metrics::HttpStats {
        fronts: Some(fronts.stats.clone()),
        host: callbacks.as_ref().map(|c| c.stats.clone()),
    });
    let gw_stats = gw.stats.clone();
    let admin_wake = wake.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_wake = wake.clone();
    let streams = match (tcp_listener, &public_url) {
        (Some(l), Some(url)) => Some(crate::serve::stream::start(
            &rt,
            l,
            url.path.split('?').next().unwrap_or("/").to_string(),
            crate::serve::stream::StreamLimits {
                per_source: args.tcp_max_per_source.max(1),
                total: args.tcp_max_streams.max(1),
            },
            tls,
            wake.clone(),
        )),
        _ => None,
    };
    let stream_stats = streams.as_ref().map(|s| s.stats.clone());
    let plumbing = crate::serve::hub::Plumbing {
        streams,
        stop: stop.clone(),
        wake,
        gateway: Some((gw, gw_out)),
        resolver,
        callbacks,
        fronts: Some(fronts),
    };
    tracing::info!(
        callback_listen = ?args.callback_listen,
        callback_ports = ?args.callback_ports.map(|p| p.to_string()),
        callback_host = %callback_host,
        on_demand = !args.no_on_demand,
        "gateway ready"
    );
    tracing::info!(
        listen = %args.listen,
        endpoint = %public_endpoint,
        tcp_listen = ?args.tcp_listen,
        url = ?public_url.as_ref().map(ToString::to_string),
        network = %plan.network(),
        domain = %args.domain,
        public_key = %overlay_core::identity::key::encode(&hub.public_key()),
        "relay serving"
    );
    let admin = crate::serve::admin::bind(&dir.admin_socket())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let catalog = args.catalog.clone();
    let hub_dir = dir.clone();
    std::thread::Builder::new()
        .name("hub".into())
        .spawn(move || {
            let r = crate::serve::hub::run(hub, hub_dir, sock, rx, catalog, plumbing);
            let _ = done_tx.send(r);
        })?;
    let calls = crate::serve::admin::HubCalls::new(tx, admin_wake);
    if let Some(l) = metrics_listener {
        tokio::spawn(crate::serve::metrics::serve(
            l,
            calls.clone(),
            Some(gw_stats),
            stream_stats,
            http_stats,
        ));
    }
    let admin = tokio::spawn(admin.serve(Arc::new(calls)));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hub_done = false;
    let result = tokio::select! {
        r = admin => r.map_err(anyhow::Error::from),
        r = &mut done_rx => {
            hub_done = true;
            r.unwrap_or_else(|_| Err(anyhow::anyhow!("the hub thread stopped")))
        }
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted, stopping"); Ok(()) }
        _ = term.recv() => { tracing::info!("terminated, stopping"); Ok(()) }
    };
    // Let the hub thread write what it has not yet (handshake timestamps are written at most
    // once a second); bounded, so a stuck disk cannot keep the relay from exiting.
    stop.store(true, std::sync::atomic::Ordering::Release);
    stop_wake.wake();
    if !hub_done
        && tokio::time::timeout(Duration::from_secs(5), &mut done_rx)
            .await
            .is_err()
    {
        tracing::warn!("the hub thread did not stop within 5 s; exiting without its last save");
    }
    let _ = std::fs::remove_file(dir.admin_socket());
    result
}

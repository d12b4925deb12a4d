//! `overlay-relay serve`: load state, bind the port, run the hub and the admin socket.

use crate::hub::unix_now;
use crate::state::StateDir;
use clap::Args;
use overlay_core::addressing::AddressPlan;
use overlay_core::prefix::Ipv4Prefix;
use overlay_core::relay::{Hub, HubConfig};
use std::net::SocketAddr;
use std::path::Path;

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
    /// Catalog of remote services (TOML), re-read when it changes.
    #[arg(long, env = "OVERLAY_RELAY_CATALOG")]
    catalog: Option<std::path::PathBuf>,
    /// Inner MTU handed to peers.
    #[arg(long, env = "OVERLAY_RELAY_MTU", default_value_t = 1420)]
    mtu: u16,
}

/// Runs the relay until it is killed.
pub async fn serve(state: &Path, args: ServeArgs) -> anyhow::Result<()> {
    let plan = AddressPlan::new(args.network)?;
    let dir = StateDir::open(state)?;
    let private_key = dir.load_or_create_key()?;
    let persisted = dir.load()?;
    let public_endpoint = args
        .public_endpoint
        .unwrap_or_else(|| args.listen.to_string());
    let sock = std::net::UdpSocket::bind(args.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on udp {}: {e}", args.listen))?;
    overlay_core::sockbuf::enlarge(std::os::fd::AsRawFd::as_raw_fd(&sock));
    let hub = Hub::new(
        HubConfig {
            private_key,
            plan,
            endpoints: vec![public_endpoint.clone()],
            domain: args.domain.clone(),
            mtu: args.mtu,
        },
        persisted,
        dir.clone(),
        unix_now(),
    )?;
    tracing::info!(
        listen = %args.listen,
        endpoint = %public_endpoint,
        network = %plan.network(),
        domain = %args.domain,
        public_key = %overlay_core::key::encode(&hub.public_key()),
        "relay serving"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let catalog = args.catalog.clone();
    std::thread::Builder::new()
        .name("hub".into())
        .spawn(move || {
            let r = crate::hub::run(hub, sock, rx, catalog);
            let _ = done_tx.send(r);
        })?;
    let admin_path = dir.admin_socket();
    let admin = tokio::spawn(async move { crate::admin::serve(&admin_path, tx).await });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = admin => r.map_err(anyhow::Error::from).and_then(|r| r),
        r = done_rx => r.unwrap_or_else(|_| Err(anyhow::anyhow!("the hub thread stopped"))),
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted, stopping"); Ok(()) }
        _ = term.recv() => { tracing::info!("terminated, stopping"); Ok(()) }
    };
    let _ = std::fs::remove_file(dir.admin_socket());
    result
}

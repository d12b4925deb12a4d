//! `overlay daemon`: the node in the foreground: TUN, tunnel, control socket.

use crate::control::{self, Handler, Request, Response};
use crate::tunnel::{Tunnel, TunnelConfig};
use crate::{device, paths};
use clap::Args;
use overlay_core::addressing::NODE_PREFIX_LEN;
use overlay_core::prefix::Ipv4Prefix;
use overlay_core::wgconfig::WgConfig;
use serde_json::json;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

/// Flags of `overlay daemon`.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// A wg-quick style config (as printed by `overlay-relay peer add --wireguard-config`).
    #[arg(long)]
    config: PathBuf,
    /// The TUN device name.
    #[arg(long, default_value = "ovl0")]
    interface: String,
    /// The node's name (default: the config file's name).
    #[arg(long)]
    name: Option<String>,
}

struct Node {
    name: String,
    address: Ipv4Addr,
    prefix: Ipv4Prefix,
    domain: String,
    tunnel: Arc<Tunnel>,
}

impl Handler for Node {
    fn handle(&self, req: Request) -> Response {
        match req {
            Request::Status => {
                let t = self.tunnel.status();
                let state = match t.last_handshake_secs {
                    Some(s) if s < 180 => "connected",
                    _ => "connecting",
                };
                Response::Ok {
                    data: json!({
                        "state": state,
                        "node": self.name,
                        "address": self.address.to_string(),
                        "prefix": self.prefix.to_string(),
                        "domain": self.domain,
                        "relay": {"endpoint": t.endpoint, "last_handshake_secs": t.last_handshake_secs},
                        "rx_bytes": t.rx_bytes,
                        "tx_bytes": t.tx_bytes,
                        "rx_packets": t.rx_packets,
                        "tx_packets": t.tx_packets,
                        "drops": t.drops,
                    }),
                }
            }
        }
    }
}

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.config.display()))?;
    let cfg =
        WgConfig::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let (address, _) =
        *cfg.interface.addresses.first().ok_or_else(|| {
            anyhow::anyhow!("{}: [Interface] has no Address", args.config.display())
        })?;
    let relay = cfg.peers.first().ok_or_else(|| {
        anyhow::anyhow!("{}: there is no [Peer] (the relay)", args.config.display())
    })?;
    let endpoint = relay
        .endpoint
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{}: the [Peer] has no Endpoint", args.config.display()))?;
    let network = relay
        .allowed_ips
        .iter()
        .find(|p| p.contains(address))
        .copied()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no AllowedIPs prefix contains the Address {address}",
                args.config.display()
            )
        })?;
    let mtu = cfg.interface.mtu.unwrap_or(1420);
    let name = args.name.clone().unwrap_or_else(|| {
        args.config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "node".into())
    });

    let tunnel = Tunnel::new(TunnelConfig {
        private_key: cfg.interface.private_key,
        relay_key: relay.public_key,
        endpoint,
        allowed: relay.allowed_ips.clone(),
        keepalive: relay.persistent_keepalive,
    })
    .await?;
    let dev = Arc::new(device::create(&args.interface, address, network, mtu)?);
    for extra in relay.allowed_ips.iter().filter(|p| **p != network) {
        device::add_route(&args.interface, *extra)?;
    }
    let node = Arc::new(Node {
        name,
        address,
        prefix: Ipv4Prefix::containing(address, NODE_PREFIX_LEN),
        domain: "ovl.internal".into(),
        tunnel: tunnel.clone(),
    });
    tracing::info!(node = %node.name, %address, interface = %args.interface, "node up");
    let sock_path = paths::control_socket();
    let owner = std::env::var("SUDO_UID").ok().and_then(|s| s.parse().ok());
    let control = tokio::spawn({
        let p = sock_path.clone();
        let n = node.clone();
        async move { control::serve(&p, owner, n).await }
    });
    let data = tokio::spawn(tunnel.run(dev));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = control => r.map_err(anyhow::Error::from).and_then(|r| r),
        r = data => r.map_err(anyhow::Error::from).and_then(|r| r),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    let _ = std::fs::remove_file(&sock_path);
    tracing::info!("node down");
    result
}

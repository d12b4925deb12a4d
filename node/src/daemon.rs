//! `overlay daemon`: the node in the foreground: TUN, tunnel, control socket.

use crate::control::{self, Handler, Request, Response};
use crate::settings::{NodeFiles, Settings};
use crate::tunnel::{Tunnel, TunnelConfig};
use crate::{device, paths};
use clap::Args;
use overlay_core::addressing::NODE_PREFIX_LEN;
use overlay_core::control::{ControlMessage, ControlReply, ControlRequest, CONTROL_PORT};
use overlay_core::prefix::Ipv4Prefix;
use overlay_core::wgconfig::WgConfig;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Flags of `overlay daemon`.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Run from a wg-quick style config (as printed by `overlay-relay peer add --wireguard-config`)
    /// instead of the settings `overlay join` saved.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The TUN device name.
    #[arg(long, env = "OVERLAY_INTERFACE", default_value = "ovl0")]
    interface: String,
    /// The node's name with --config (default: the config file's name).
    #[arg(long)]
    name: Option<String>,
}

/// Everything the daemon needs, from either source.
struct NodeConfig {
    settings: Settings,
    private_key: [u8; 32],
    relay_key: [u8; 32],
    keepalive: Option<u16>,
    allowed: Vec<Ipv4Prefix>,
}

fn from_wg_config(path: &PathBuf, name: Option<String>) -> anyhow::Result<NodeConfig> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?;
    let cfg = WgConfig::parse(&text).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let (address, _) = *cfg
        .interface
        .addresses
        .first()
        .ok_or_else(|| anyhow::anyhow!("{shown}: [Interface] has no Address"))?;
    let relay = cfg
        .peers
        .first()
        .ok_or_else(|| anyhow::anyhow!("{shown}: there is no [Peer] (the relay)"))?;
    let endpoint = relay
        .endpoint
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{shown}: the [Peer] has no Endpoint"))?;
    let network = relay
        .allowed_ips
        .iter()
        .find(|p| p.contains(address))
        .copied()
        .ok_or_else(|| {
            anyhow::anyhow!("{shown}: no AllowedIPs prefix contains the Address {address}")
        })?;
    let name = name.unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "node".into())
    });
    Ok(NodeConfig {
        settings: Settings {
            name,
            address,
            prefix: Ipv4Prefix::containing(address, NODE_PREFIX_LEN),
            network,
            domain: "ovl.internal".into(),
            relay_address: network.nth(1).unwrap_or(address),
            relay_key: overlay_core::key::encode(&relay.public_key),
            endpoints: vec![endpoint],
            mtu: cfg.interface.mtu.unwrap_or(1420),
            owner_uid: None,
        },
        private_key: cfg.interface.private_key,
        relay_key: relay.public_key,
        keepalive: relay.persistent_keepalive,
        allowed: relay.allowed_ips.clone(),
    })
}

fn from_state() -> anyhow::Result<NodeConfig> {
    let files = NodeFiles::new(&paths::state_dir());
    let settings = files.load()?;
    let private_key = files.load_key()?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} is missing; run `sudo overlay join <token>` again",
            files.key().display()
        )
    })?;
    let relay_key = overlay_core::key::decode(&settings.relay_key)?;
    Ok(NodeConfig {
        allowed: vec![settings.network],
        private_key,
        relay_key,
        keepalive: Some(25),
        settings,
    })
}

struct Node {
    settings: Settings,
    tunnel: Arc<Tunnel>,
    stop: Notify,
}

impl Node {
    fn status(&self) -> serde_json::Value {
        let t = self.tunnel.status();
        let state = match t.last_handshake_secs {
            Some(s) if s < 180 => "connected",
            _ => "connecting",
        };
        let s = &self.settings;
        json!({
            "state": state,
            "node": s.name,
            "address": s.address.to_string(),
            "prefix": s.prefix.to_string(),
            "domain": s.domain,
            "relay": {"endpoint": t.endpoint, "last_handshake_secs": t.last_handshake_secs},
            "rx_bytes": t.rx_bytes,
            "tx_bytes": t.tx_bytes,
            "rx_packets": t.rx_packets,
            "tx_packets": t.tx_packets,
            "drops": t.drops,
            "pid": std::process::id(),
        })
    }

    /// Asks the relay, through the tunnel, to deregister this node.
    async fn leave(&self) -> anyhow::Result<()> {
        let sock =
            tokio::net::UdpSocket::bind(SocketAddr::from((self.settings.address, 0))).await?;
        let relay = SocketAddr::from((self.settings.relay_address, CONTROL_PORT));
        let id = rand::random::<u64>();
        let msg = overlay_core::control::encode(&ControlMessage {
            id,
            request: ControlRequest::Leave,
        });
        let mut buf = vec![0u8; 2048];
        for _ in 0..5 {
            sock.send_to(&msg, relay).await?;
            let got = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await;
            let Ok(Ok((n, _))) = got else { continue };
            match overlay_core::control::parse_reply(&buf[..n]) {
                Ok(ControlReply::Ok { id: rid, .. }) if rid == id => return Ok(()),
                Ok(ControlReply::Error { id: rid, message }) if rid == id => {
                    anyhow::bail!("the relay refused: {message}")
                }
                _ => continue,
            }
        }
        anyhow::bail!("the relay did not answer through the tunnel; check `overlay status`")
    }
}

impl Handler for Node {
    async fn handle(&self, req: Request) -> Response {
        match req {
            Request::Status => Response::Ok {
                data: self.status(),
            },
            Request::Shutdown => {
                self.stop.notify_one();
                Response::Ok {
                    data: json!({"stopping": true}),
                }
            }
            Request::Leave => match self.leave().await {
                Ok(()) => {
                    self.stop.notify_one();
                    Response::Ok {
                        data: json!({"left": self.settings.name}),
                    }
                }
                Err(e) => Response::Error {
                    message: e.to_string(),
                },
            },
        }
    }
}

/// Runs the daemon until SIGTERM, Ctrl-C or `overlay down`.
pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(path) => from_wg_config(path, args.name.clone())?,
        None => from_state()?,
    };
    let s = &cfg.settings;
    let endpoint = s
        .endpoints
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no relay endpoint is configured"))?;
    let tunnel = Tunnel::new(TunnelConfig {
        private_key: cfg.private_key,
        relay_key: cfg.relay_key,
        endpoint,
        allowed: cfg.allowed.clone(),
        keepalive: cfg.keepalive,
    })
    .await?;
    let dev = Arc::new(device::create(
        &args.interface,
        s.address,
        s.network,
        s.mtu,
    )?);
    for extra in cfg.allowed.iter().filter(|p| **p != s.network) {
        device::add_route(&args.interface, *extra)?;
    }
    let owner = s
        .owner_uid
        .or_else(|| std::env::var("SUDO_UID").ok().and_then(|v| v.parse().ok()));
    let node = Arc::new(Node {
        settings: cfg.settings.clone(),
        tunnel: tunnel.clone(),
        stop: Notify::new(),
    });
    tracing::info!(node = %node.settings.name, address = %node.settings.address, interface = %args.interface, "node up");
    let sock_path = paths::control_socket();
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
        _ = node.stop.notified() => Ok(()),
    };
    let _ = std::fs::remove_file(&sock_path);
    tracing::info!("node down");
    result
}

//! The admin commands: `overlay-relay token|peer|nodes|services|stats`, clients of the running
//! relay's admin socket (`crate::serve::admin`).

use crate::serve::admin::{self, AdminRequest};
use clap::{Args, Subcommand};
use std::path::Path;

/// `overlay-relay token ...`.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it (one line to paste into `overlay join`).
    Create {
        /// How many nodes may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it stays valid (e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Prefix for the names of nodes that join with it.
        #[arg(long)]
        name_prefix: Option<String>,
    },
    /// List tokens (secrets are never shown: only their hashes are kept).
    List(ListArgs),
    /// Revoke a token by id.
    Revoke {
        /// The token id, as shown by `token list`.
        id: String,
    },
}

/// `overlay-relay peer ...`.
#[derive(Subcommand, Debug)]
pub enum PeerCommand {
    /// Register a peer and print its configuration.
    Add(PeerAddArgs),
    /// Remove a peer.
    Remove {
        /// The peer's name.
        name: String,
    },
}

/// Flags of `overlay-relay peer add`.
#[derive(Args, Debug)]
pub struct PeerAddArgs {
    /// A unique name (lower-case letters, digits, '-').
    name: String,
    /// The peer's public key; without it a key pair is generated and the private key printed.
    #[arg(long)]
    public_key: Option<String>,
    /// Print a wg-quick configuration for stock WireGuard clients (and `overlay daemon --config`).
    #[arg(long)]
    wireguard_config: bool,
}

/// Flags of the listing commands.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `overlay-relay peer add|remove`.
pub async fn peer(sock: &Path, c: PeerCommand) -> anyhow::Result<()> {
    match c {
        PeerCommand::Add(args) => peer_add(sock, args).await,
        PeerCommand::Remove { name } => {
            admin::call(sock, &AdminRequest::PeerRemove { name: name.clone() }).await?;
            println!("removed {name}");
            Ok(())
        }
    }
}

/// `overlay-relay token create|list|revoke`.
pub async fn token(sock: &Path, c: TokenCommand) -> anyhow::Result<()> {
    match c {
        TokenCommand::Create {
            uses,
            ttl,
            name_prefix,
        } => {
            let ttl_secs = overlay_core::duration::parse_secs(&ttl)?;
            let data = admin::call(
                sock,
                &AdminRequest::TokenCreate {
                    uses,
                    ttl_secs,
                    name_prefix,
                },
            )
            .await?;
            println!("{}", data["token"].as_str().unwrap_or_default());
            Ok(())
        }
        TokenCommand::List(args) => {
            let data = admin::call(sock, &AdminRequest::TokenList).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                print_tokens(&data);
            }
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            admin::call(sock, &AdminRequest::TokenRevoke { id: id.clone() }).await?;
            println!("revoked {id}");
            Ok(())
        }
    }
}

/// `overlay-relay nodes`.
pub async fn nodes(sock: &Path, args: ListArgs) -> anyhow::Result<()> {
    let data = admin::call(sock, &AdminRequest::Nodes).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        print_nodes(&data);
    }
    Ok(())
}

/// `overlay-relay services`.
pub async fn services(sock: &Path, args: ListArgs) -> anyhow::Result<()> {
    let data = admin::call(sock, &AdminRequest::Services).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        println!(
            "{:<16} {:<6} {:<12} {:<21} TARGET",
            "NAME", "TAG", "NODE", "ADDRESS"
        );
        for s in data.as_array().into_iter().flatten() {
            let f = |k: &str| s[k].as_str().unwrap_or("-").to_string();
            println!(
                "{:<16} {:<6} {:<12} {:<21} {}",
                f("name"),
                f("tag"),
                f("node"),
                format!("{}:{}", f("address"), s["port"]),
                f("target")
            );
        }
    }
    Ok(())
}

/// `overlay-relay stats`.
pub async fn stats(sock: &Path, args: ListArgs) -> anyhow::Result<()> {
    let data = admin::call(sock, &AdminRequest::Stats).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&data)?);
    } else {
        println!("peers:      {}", data["peers"]);
        println!("uptime:     {}s", data["uptime_secs"]);
        println!(
            "public key: {}",
            data["relay_public_key"].as_str().unwrap_or("-")
        );
        println!("drops:      {}", data["global"]["drops"]);
        if let Some(b) = data.get("gateway_buffers") {
            let mib = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64 / 1048576.0;
            println!(
                "gateway buffers: {:.1} of {:.1} MiB, {} nodes, {} flows refused for memory",
                mib(&b["bytes"]),
                mib(&b["budget"]),
                b["nodes"],
                b["refused"]
            );
            for n in b["top"].as_array().into_iter().flatten() {
                println!(
                    "  {:<20} {:>8.1} MiB in {} flows (share {:.1} MiB)",
                    n["node"].as_str().unwrap_or("-"),
                    mib(&n["bytes"]),
                    n["flows"],
                    mib(&n["share"])
                );
            }
        }
    }
    Ok(())
}

async fn peer_add(sock: &Path, args: PeerAddArgs) -> anyhow::Result<()> {
    use overlay_core::wgconfig::{Interface, Peer, WgConfig};
    let (private, public) = match &args.public_key {
        Some(k) => (None, overlay_core::key::decode(k)?),
        None => {
            let secret = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
            let public = x25519_dalek::PublicKey::from(&secret);
            (Some(secret.to_bytes()), *public.as_bytes())
        }
    };
    let req = AdminRequest::PeerAdd {
        name: args.name.clone(),
        public_key: overlay_core::key::encode(&public),
    };
    let data = admin::call(sock, &req).await?;
    let field = |k: &str| {
        data.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    if !args.wireguard_config {
        println!(
            "added {} at {} (prefix {})",
            field("name"),
            field("address"),
            field("prefix")
        );
        if let Some(p) = private {
            println!("private key: {}", overlay_core::key::encode(&p));
        }
        return Ok(());
    }
    let address: std::net::Ipv4Addr = field("address").parse()?;
    let network = field("network").parse()?;
    let relay_key = overlay_core::key::decode(&field("relay_public_key"))?;
    let mtu = data.get("mtu").and_then(|v| v.as_u64()).unwrap_or(1420) as u16;
    let cfg = WgConfig {
        interface: Interface {
            private_key: private.unwrap_or([0; 32]),
            addresses: vec![(address, 32)],
            mtu: Some(mtu),
            ..Default::default()
        },
        peers: vec![Peer {
            public_key: relay_key,
            endpoint: Some(field("endpoint")),
            allowed_ips: vec![network],
            persistent_keepalive: Some(25),
            ..Default::default()
        }],
    };
    println!(
        "# overlay peer '{}', prefix {}",
        field("name"),
        field("prefix")
    );
    print!("{}", cfg.render(private.is_some()));
    Ok(())
}

fn print_nodes(data: &serde_json::Value) {
    println!(
        "{:<20} {:<15} {:<17} {:<22} {:>9} {:>12} {:>12} DROPS",
        "NAME", "ADDRESS", "PREFIX", "ENDPOINT", "HANDSHAKE", "RX", "TX"
    );
    for n in data.as_array().into_iter().flatten() {
        let s = |k: &str| n.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
        let hs = n
            .get("last_handshake_secs")
            .and_then(|v| v.as_u64())
            .map(|s| format!("{s}s ago"))
            .unwrap_or_else(|| "never".into());
        let c = n.get("counters");
        let num = |k: &str| {
            c.and_then(|c| c.get(k))
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
        };
        let drops = c
            .and_then(|c| c.get("drops"))
            .and_then(|d| d.as_object())
            .map(|d| {
                d.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        println!(
            "{:<20} {:<15} {:<17} {:<22} {:>9} {:>12} {:>12} {}",
            s("name"),
            s("address"),
            s("prefix"),
            s("endpoint"),
            hs,
            num("rx_bytes"),
            num("tx_bytes"),
            if drops.is_empty() { "-".into() } else { drops }
        );
    }
}

fn print_tokens(data: &serde_json::Value) {
    let now = crate::serve::hub::unix_now();
    println!(
        "{:<18} {:<10} {:>9} {:<22} USED BY",
        "ID", "STATE", "USES LEFT", "EXPIRES"
    );
    for t in data.as_array().into_iter().flatten() {
        let expires = t["expires"].as_u64().unwrap_or(0);
        let state = if t["revoked"].as_bool().unwrap_or(false) {
            "revoked"
        } else if expires <= now {
            "expired"
        } else if t["uses_left"].as_u64() == Some(0) {
            "used up"
        } else {
            "valid"
        };
        let left = expires.saturating_sub(now);
        let used: Vec<&str> = t["used_by"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        println!(
            "{:<18} {:<10} {:>9} {:<22} {}",
            t["id"].as_str().unwrap_or("-"),
            state,
            t["uses_left"],
            if left > 0 {
                format!("in {}h{:02}m", left / 3600, left % 3600 / 60)
            } else {
                "-".into()
            },
            if used.is_empty() {
                "-".into()
            } else {
                used.join(",")
            }
        );
    }
}

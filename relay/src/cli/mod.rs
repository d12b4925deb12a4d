//! The admin commands: `overlay-relay token|peer|nodes|services|stats`, clients of the running
//! relay's admin socket (`crate::serve::admin`).

use crate::serve::admin;
use clap::{Args, Subcommand};
use overlay_core::api::admin::{
    Nodes, PeerAdd, PeerRemove, Services, Stats, TokenCreate, TokenList, TokenRevoke,
};
use overlay_core::relay::state::TokenRecord;
use overlay_core::relay::NodeInfo;
use overlay_sys::local_api::to_json_pretty;
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
            let r = admin::endpoint(sock).call(PeerRemove { name }).await?;
            println!("removed {}", r.removed);
            Ok(())
        }
    }
}

/// `overlay-relay token create|list|revoke`.
pub async fn token(sock: &Path, c: TokenCommand) -> anyhow::Result<()> {
    let relay = admin::endpoint(sock);
    match c {
        TokenCommand::Create {
            uses,
            ttl,
            name_prefix,
        } => {
            let ttl_secs = overlay_core::duration::parse_secs(&ttl)?;
            let created = relay
                .call(TokenCreate {
                    uses,
                    ttl_secs,
                    name_prefix,
                })
                .await?;
            println!("{}", created.token);
        }
        TokenCommand::List(args) => {
            let tokens = relay.call(TokenList {}).await?;
            if args.json {
                println!("{}", to_json_pretty(&tokens)?);
            } else {
                print_tokens(&tokens);
            }
        }
        TokenCommand::Revoke { id } => {
            let r = relay.call(TokenRevoke { id }).await?;
            println!("revoked {}", r.revoked);
        }
    }
    Ok(())
}

/// `overlay-relay nodes`.
pub async fn nodes(sock: &Path, args: ListArgs) -> anyhow::Result<()> {
    let nodes = admin::endpoint(sock).call(Nodes {}).await?;
    if args.json {
        println!("{}", to_json_pretty(&nodes)?);
    } else {
        print_nodes(&nodes);
    }
    Ok(())
}

/// `overlay-relay services`.
pub async fn services(sock: &Path, args: ListArgs) -> anyhow::Result<()> {
    let list = admin::endpoint(sock).call(Services {}).await?;
    if args.json {
        println!("{}", to_json_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<6} {:<12} {:<21} TARGET",
        "NAME", "TAG", "NODE", "ADDRESS"
    );
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    for s in &list {
        println!(
            "{:<16} {:<6} {:<12} {:<21} {}",
            s.name,
            or_dash(&s.tag),
            or_dash(&s.node),
            format!("{}:{}", s.address, s.port),
            or_dash(&s.target)
        );
    }
    Ok(())
}

/// `overlay-relay stats`.
pub async fn stats(sock: &Path, args: ListArgs) -> anyhow::Result<()> {
    let stats = admin::endpoint(sock).call(Stats {}).await?;
    if args.json {
        println!("{}", to_json_pretty(&stats)?);
        return Ok(());
    }
    println!("peers:      {}", stats.peers);
    println!("uptime:     {}s", stats.uptime_secs);
    println!("public key: {}", stats.relay_public_key);
    println!("drops:      {}", serde_json::to_value(&stats.global.drops)?);
    if let Some(b) = &stats.gateway_buffers {
        let mib = |v: u64| v as f64 / 1048576.0;
        println!(
            "gateway buffers: {:.1} of {:.1} MiB, {} nodes, {} flows refused for memory",
            mib(b.bytes),
            mib(b.budget),
            b.nodes,
            b.refused
        );
        for n in &b.top {
            println!(
                "  {:<20} {:>8.1} MiB in {} flows (share {:.1} MiB)",
                n.node,
                mib(n.bytes),
                n.flows,
                mib(n.share)
            );
        }
    }
    Ok(())
}

async fn peer_add(sock: &Path, args: PeerAddArgs) -> anyhow::Result<()> {
    use overlay_core::identity::wgconfig::{Interface, Peer, WgConfig};
    let (private, public) = match &args.public_key {
        Some(k) => (None, overlay_core::identity::key::decode(k)?),
        None => {
            let secret = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
            let public = x25519_dalek::PublicKey::from(&secret);
            (Some(secret.to_bytes()), *public.as_bytes())
        }
    };
    let request = PeerAdd {
        name: args.name.clone(),
        public_key: overlay_core::identity::key::encode(&public),
    };
    let added = admin::endpoint(sock).call(request).await?;
    if !args.wireguard_config {
        println!(
            "added {} at {} (prefix {})",
            added.name, added.address, added.prefix
        );
        if let Some(p) = private {
            println!("private key: {}", overlay_core::identity::key::encode(&p));
        }
        return Ok(());
    }
    let address: std::net::Ipv4Addr = added.address.parse()?;
    let network = added.network.parse()?;
    let relay_key = overlay_core::identity::key::decode(&added.relay_public_key)?;
    let cfg = WgConfig {
        interface: Interface {
            private_key: private.unwrap_or([0; 32]),
            addresses: vec![(address, 32)],
            mtu: Some(added.mtu),
            ..Default::default()
        },
        peers: vec![Peer {
            public_key: relay_key,
            endpoint: Some(added.endpoint.clone()),
            allowed_ips: vec![network],
            persistent_keepalive: Some(25),
            ..Default::default()
        }],
    };
    println!("# overlay peer '{}', prefix {}", added.name, added.prefix);
    print!("{}", cfg.render(private.is_some()));
    Ok(())
}

fn print_nodes(nodes: &[NodeInfo]) {
    println!(
        "{:<20} {:<15} {:<17} {:<22} {:>9} {:>12} {:>12} DROPS",
        "NAME", "ADDRESS", "PREFIX", "ENDPOINT", "HANDSHAKE", "RX", "TX"
    );
    for n in nodes {
        let hs = n
            .last_handshake_secs
            .map(|s| format!("{s}s ago"))
            .unwrap_or_else(|| "never".into());
        let drops = n
            .counters
            .drops
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{:<20} {:<15} {:<17} {:<22} {:>9} {:>12} {:>12} {}",
            n.name,
            n.address,
            n.prefix,
            n.endpoint.as_deref().unwrap_or("-"),
            hs,
            n.counters.rx_bytes,
            n.counters.tx_bytes,
            if drops.is_empty() { "-".into() } else { drops }
        );
    }
}

fn print_tokens(tokens: &[TokenRecord]) {
    let now = crate::serve::hub::unix_now();
    println!(
        "{:<18} {:<10} {:>9} {:<22} USED BY",
        "ID", "STATE", "USES LEFT", "EXPIRES"
    );
    for t in tokens {
        let state = if t.revoked {
            "revoked"
        } else if t.expires <= now {
            "expired"
        } else if t.uses_left == 0 {
            "used up"
        } else {
            "valid"
        };
        let left = t.expires.saturating_sub(now);
        println!(
            "{:<18} {:<10} {:>9} {:<22} {}",
            t.id,
            state,
            t.uses_left,
            if left > 0 {
                format!("in {}h{:02}m", left / 3600, left % 3600 / 60)
            } else {
                "-".into()
            },
            if t.used_by.is_empty() {
                "-".into()
            } else {
                t.used_by.join(",")
            }
        );
    }
}

//! `overlay-relay`: the WireGuard hub and control plane that runs in the remote environment.

mod admin;
mod gateway;
mod hub;
mod metrics;
mod serve;
mod state;
mod stream;
mod tls;
mod udp;
mod wake;

use admin::AdminRequest;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The overlay relay: WireGuard hub, control plane and gateway into the remote environment.
#[derive(Parser, Debug)]
#[command(name = "overlay-relay", version, about)]
struct Cli {
    /// State directory (key, peers, admin socket).
    #[arg(
        long,
        global = true,
        env = "OVERLAY_RELAY_STATE",
        default_value = "/var/lib/overlay-relay"
    )]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; the size of the serve variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run the relay in the foreground.
    Serve(serve::ServeArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: String,
    },
    /// Print the man page (roff).
    #[command(hide = true)]
    Manpage,
    /// Print the command-line reference as markdown (docs/configuration.md is made from it).
    #[command(hide = true)]
    Reference,
    /// Manage plain WireGuard peers.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// List registered nodes with their counters.
    Nodes(ListArgs),
    /// Relay-wide counters (drops not attributable to a peer, uptime).
    Stats(ListArgs),
    /// List every service instance (node services and remote ones).
    Services(ListArgs),
    /// Manage join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
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

#[derive(Subcommand, Debug)]
enum PeerCommand {
    /// Register a peer and print its configuration.
    Add(PeerAddArgs),
    /// Remove a peer.
    Remove {
        /// The peer's name.
        name: String,
    },
}

#[derive(Args, Debug)]
struct PeerAddArgs {
    /// A unique name (lower-case letters, digits, '-').
    name: String,
    /// The peer's public key; without it a key pair is generated and the private key printed.
    #[arg(long)]
    public_key: Option<String>,
    /// Print a wg-quick configuration for stock WireGuard clients (and `overlay daemon --config`).
    #[arg(long)]
    wireguard_config: bool,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if overlay_core::SIMULATED_TIME {
        // Built inside a `cargo test` of overlay-core (feature sim-time): WireGuard would never
        // rekey or send keepalives.
        eprintln!("overlay-relay: this binary was built with simulated time (a test build); build it with `cargo build --release --bins`");
        return ExitCode::FAILURE;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("overlay-relay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overlay-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let sock = cli.state.join("admin.sock");
    match cli.command {
        Command::Serve(args) => serve::serve(&cli.state, args).await,
        Command::Completions { shell } => print_bytes(
            overlay_core::cliref::completions(&<Cli as clap::CommandFactory>::command(), &shell)
                .map_err(anyhow::Error::msg),
        ),
        Command::Manpage => print_bytes(
            overlay_core::cliref::man_page(&<Cli as clap::CommandFactory>::command())
                .map_err(Into::into),
        ),
        Command::Reference => print_bytes(Ok(overlay_core::cliref::markdown(
            &<Cli as clap::CommandFactory>::command(),
        )
        .into_bytes())),
        Command::Peer(PeerCommand::Add(args)) => peer_add(&sock, args).await,
        Command::Peer(PeerCommand::Remove { name }) => {
            admin::call(&sock, &AdminRequest::PeerRemove { name: name.clone() }).await?;
            println!("removed {name}");
            Ok(())
        }
        Command::Nodes(args) => {
            let data = admin::call(&sock, &AdminRequest::Nodes).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                print_nodes(&data);
            }
            Ok(())
        }
        Command::Token(TokenCommand::Create {
            uses,
            ttl,
            name_prefix,
        }) => {
            let ttl_secs = overlay_core::duration::parse_secs(&ttl)?;
            let data = admin::call(
                &sock,
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
        Command::Token(TokenCommand::List(args)) => {
            let data = admin::call(&sock, &AdminRequest::TokenList).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&data)?);
            } else {
                print_tokens(&data);
            }
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            admin::call(&sock, &AdminRequest::TokenRevoke { id: id.clone() }).await?;
            println!("revoked {id}");
            Ok(())
        }
        Command::Services(args) => {
            let data = admin::call(&sock, &AdminRequest::Services).await?;
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
        Command::Stats(args) => {
            let data = admin::call(&sock, &AdminRequest::Stats).await?;
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
    }
}

async fn peer_add(sock: &std::path::Path, args: PeerAddArgs) -> anyhow::Result<()> {
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
    let now = hub::unix_now();
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

fn print_bytes(b: anyhow::Result<Vec<u8>>) -> anyhow::Result<()> {
    use std::io::Write;
    std::io::stdout().write_all(&b?)?;
    Ok(())
}

//! `overlay-relay`: the WireGuard hub and control plane that runs in the remote environment.

mod cli;
mod front;
mod gateway;
mod proxy;
mod serve;

use clap::{Parser, Subcommand};
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
    Peer(cli::PeerCommand),
    /// List registered nodes with their counters.
    Nodes(cli::ListArgs),
    /// Relay-wide counters (drops not attributable to a peer, uptime).
    Stats(cli::ListArgs),
    /// List every service instance (node services and remote ones).
    Services(cli::ListArgs),
    /// Manage join tokens.
    #[command(subcommand)]
    Token(cli::TokenCommand),
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
            overlay_sys::cliref::completions(&<Cli as clap::CommandFactory>::command(), &shell)
                .map_err(anyhow::Error::msg),
        ),
        Command::Manpage => print_bytes(
            overlay_sys::cliref::man_page(&<Cli as clap::CommandFactory>::command())
                .map_err(Into::into),
        ),
        Command::Reference => print_bytes(Ok(overlay_sys::cliref::markdown(
            &<Cli as clap::CommandFactory>::command(),
        )
        .into_bytes())),
        Command::Peer(c) => cli::peer(&sock, c).await,
        Command::Nodes(args) => cli::nodes(&sock, args).await,
        Command::Token(c) => cli::token(&sock, c).await,
        Command::Services(args) => cli::services(&sock, args).await,
        Command::Stats(args) => cli::stats(&sock, args).await,
    }
}

fn print_bytes(b: anyhow::Result<Vec<u8>>) -> anyhow::Result<()> {
    use std::io::Write;
    std::io::stdout().write_all(&b?)?;
    Ok(())
}

//! `overlay`: the node side of the overlay (daemon and CLI).

mod control;
mod cpu_latency;
mod daemon;
mod dev;
mod device;
mod dns;
mod join;
mod lifecycle;
mod listener;
mod paths;
mod relaylink;
mod relaysocket;
mod relaystream;
mod resolvconf;
mod services;
mod settings;
mod status;
mod tls;
mod traffic;
mod tunnel;
mod udpbatch;
mod wake;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// overlay: every service gets a stable address and name, wherever it runs.
#[derive(Parser, Debug)]
#[command(name = "overlay", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    /// Join an overlay with a token from the relay's operator (needs root).
    Join(join::JoinArgs),
    /// Start the daemon again after `overlay down`.
    Up,
    /// Stop the daemon; routes and DNS are restored.
    Down,
    /// Deregister from the relay and remove this node's state.
    Leave,
    /// Run the node daemon in the foreground (what a service manager runs).
    Daemon(daemon::DaemonArgs),
    /// Show the connection state.
    Status(status::StatusArgs),
    /// List every service instance, local, remote and on other nodes.
    Services(services::ServicesArgs),
    /// Show what a name resolves to and which rule chose it.
    Resolve {
        /// The name, e.g. `orders`, `v2.orders`, `orders.laptop`.
        name: String,
    },
    /// Register a service by hand (`overlay dev` does this for its services).
    Register(services::RegisterArgs),
    /// Remove a service registered by hand.
    Unregister(services::UnregisterArgs),
    /// Run the local services of overlay.toml or a Procfile, as your user.
    Dev(dev::DevArgs),
    /// Run one service ad hoc: `overlay run NAME [--port P] [--tag T] -- CMD ARGS...`.
    Run(dev::RunArgs),
    /// Show the logs of `overlay dev` services, one or all merged by time.
    Logs(dev::LogsArgs),
    /// Show the services of the running `overlay dev`: state, port, restarts, last exit.
    Ps(dev::PsArgs),
    /// Build and restart a service of the running `overlay dev`, without disturbing callers.
    Restart(dev::ServiceArg),
    /// Stop a service of the running `overlay dev`.
    Stop(dev::ServiceArg),
    /// Start a stopped service of the running `overlay dev`.
    Start(dev::ServiceArg),
    /// Show captured HTTP exchanges and connections, one line each (`-f` to follow).
    Traffic(traffic::cli::TrafficArgs),
    /// Print the web inspector's URL, with the token that opens it (for you only).
    Inspect(traffic::cli::InspectArgs),
    /// Write the overlay packets (decrypted, as on the TUN) to a pcap file.
    Capture(traffic::cli::CaptureArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if overlay_core::SIMULATED_TIME {
        // Built inside a `cargo test` of overlay-core (feature sim-time): WireGuard would never
        // rekey or send keepalives.
        eprintln!("overlay: this binary was built with simulated time (a test build); build it with `cargo build --release --bins`");
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
            eprintln!("overlay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Join(a) => join::run(a).await,
            Command::Up => lifecycle::up().await,
            Command::Down => lifecycle::down().await,
            Command::Leave => lifecycle::leave().await,
            Command::Daemon(a) => daemon::run(a).await,
            Command::Completions { shell } => print_bytes(
                overlay_core::cliref::completions(
                    &<Cli as clap::CommandFactory>::command(),
                    &shell,
                )
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
            Command::Status(a) => status::run(a).await,
            Command::Services(a) => services::list(a).await,
            Command::Resolve { name } => services::resolve(name).await,
            Command::Register(a) => services::register(a).await,
            Command::Unregister(a) => services::unregister(a).await,
            Command::Dev(a) => dev::dev(a).await,
            Command::Run(a) => dev::run(a).await,
            Command::Logs(a) => dev::logs(a).await,
            Command::Ps(a) => dev::ps(a).await,
            Command::Restart(a) => dev::control(dev::Action::Restart, a).await,
            Command::Stop(a) => dev::control(dev::Action::Stop, a).await,
            Command::Start(a) => dev::control(dev::Action::Start, a).await,
            Command::Traffic(a) => traffic::cli::traffic(a).await,
            Command::Inspect(a) => traffic::cli::inspect(a).await,
            Command::Capture(a) => traffic::cli::capture(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overlay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_bytes(b: anyhow::Result<Vec<u8>>) -> anyhow::Result<()> {
    use std::io::Write;
    std::io::stdout().write_all(&b?)?;
    Ok(())
}

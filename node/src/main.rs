//! `overlay`: the node side of the overlay (daemon and CLI).

mod cli;
mod daemon;
mod dev;
mod paths;
mod settings;
mod traffic;

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
    Join(cli::join::JoinArgs),
    /// Start the daemon again after `overlay down`.
    Up,
    /// Stop the daemon; routes and DNS are restored.
    Down,
    /// Deregister from the relay and remove this node's state.
    Leave,
    /// Run the node daemon in the foreground (what a service manager runs).
    Daemon(daemon::DaemonArgs),
    /// Show the connection state.
    Status(cli::status::StatusArgs),
    /// List every service instance, local, remote and on other nodes.
    Services(cli::services::ServicesArgs),
    /// Show what a name resolves to and which rule chose it.
    Resolve {
        /// The name, e.g. `orders`, `v2.orders`, `orders.laptop`.
        name: String,
    },
    /// Register a service by hand (`overlay dev` does this for its services).
    Register(cli::services::RegisterArgs),
    /// Remove a service registered by hand.
    Unregister(cli::services::UnregisterArgs),
    /// Run the local services of overlay.toml or a Procfile, as your user.
    Dev(dev::DevArgs),
    /// Run one service ad hoc: `overlay run NAME [--port P] [--tag T] -- CMD ARGS...`.
    Run(dev::RunArgs),
    /// Show the logs of `overlay dev` services, one or all merged by time.
    Logs(cli::dev::LogsArgs),
    /// Show the services of the running `overlay dev`: state, port, restarts, last exit.
    Ps(cli::dev::PsArgs),
    /// Build and restart a service of the running `overlay dev`, without disturbing callers.
    Restart(cli::dev::ServiceArg),
    /// Stop a service of the running `overlay dev`.
    Stop(cli::dev::ServiceArg),
    /// Start a stopped service of the running `overlay dev`.
    Start(cli::dev::ServiceArg),
    /// Show captured HTTP exchanges and connections, one line each (`-f` to follow).
    Traffic(cli::traffic::TrafficArgs),
    /// Print the web inspector's URL, with the token that opens it (for you only).
    Inspect(cli::traffic::InspectArgs),
    /// Write the overlay packets (decrypted, as on the TUN) to a pcap file.
    Capture(cli::traffic::CaptureArgs),
    /// Send the remote environment's callers of a service to this laptop's instance: all of
    /// them, or requests with `--header NAME=VALUE`; `--list` shows every laptop's, `--stop` ends.
    Intercept(cli::intercept::InterceptArgs),
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
            Command::Join(a) => cli::join::run(a).await,
            Command::Up => cli::lifecycle::up().await,
            Command::Down => cli::lifecycle::down().await,
            Command::Leave => cli::lifecycle::leave().await,
            Command::Daemon(a) => daemon::run(a).await,
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
            Command::Status(a) => cli::status::run(a).await,
            Command::Services(a) => cli::services::list(a).await,
            Command::Resolve { name } => cli::services::resolve(name).await,
            Command::Register(a) => cli::services::register(a).await,
            Command::Unregister(a) => cli::services::unregister(a).await,
            Command::Dev(a) => dev::dev(a).await,
            Command::Run(a) => dev::run(a).await,
            Command::Logs(a) => cli::dev::logs(a).await,
            Command::Ps(a) => cli::dev::ps(a).await,
            Command::Restart(a) => cli::dev::control(cli::dev::Action::Restart, a).await,
            Command::Stop(a) => cli::dev::control(cli::dev::Action::Stop, a).await,
            Command::Start(a) => cli::dev::control(cli::dev::Action::Start, a).await,
            Command::Traffic(a) => cli::traffic::traffic(a).await,
            Command::Inspect(a) => cli::traffic::inspect(a).await,
            Command::Capture(a) => cli::traffic::capture(a).await,
            Command::Intercept(a) => cli::intercept::run(a).await,
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

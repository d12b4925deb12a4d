//! `overlay-bench`: overlay's benchmarks, and its soak test, in throw-away network namespaces
//! built with the tests' [`World`](overlay_tests::World) (prefix `ovb-`, soak `ovs-`).
//!
//! `scripts/bench.sh` and `scripts/soak.sh` build it and exec it. Each part is a module in
//! `parts/`; it prints a plain and a markdown table on stdout and writes
//! `target/bench/PART.json`; components' logs go to `target/bench/logs/`. Exit status: 0 when
//! every part ran (slow figures never fail the run), 1 when a tool or component failed to run
//! (the other setups and parts are still measured and reported), 2 on bad usage.

mod ctx;
mod net;
mod ovl;
mod parts;
mod probe;
mod report;
mod soak;
mod stats;

use clap::Parser;
use ctx::{Ctx, Opts};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The parts, in the order `all` runs them.
pub const PARTS: &[&str] = &[
    "dataplane",
    "join",
    "dns",
    "registry",
    "gateway",
    "restart",
    "scale",
    "flood",
    "tcp",
    "storm",
    "capture",
    "intercept",
];

const PARTS_HELP: &str = "\
Parts (run in this order by \"all\", the default):
  dataplane  iperf3 TCP throughput and ping latency for: raw veth, stock wireguard-go point to
             point, boringtun-cli point to point (installed into target/bench-tools with cargo
             when missing, unless --no-build), and overlay node -> relay -> node; then the
             overlay's ping latency again with the nodes' quick CPU wake-ups off.
  join       time from starting `overlay join TOKEN` to the first ping answered through the
             tunnel, and the time `overlay join` itself takes, over fresh joins.
  dns        dnsperf against a node's DNS server (100.100.100.100) and against dnsmasq serving
             the same names from a hosts file, in the same namespace; node daemon RSS; answers
             while every upstream is dead.
  registry   propagation: `overlay register` on one node until another node's DNS answers the
             name, with no other services and with --fill services registered elsewhere.
  gateway    iperf3 laptop -> remote host through the relay's userspace stack, and the same
             through stock wireguard-go with kernel forwarding; relay RSS with 1000 proxied
             TCP connections.
  restart    `overlay dev` running a small HTTP service: the latency its listener on the overlay
             address adds per request (against calling $PORT directly, same run), and the time
             from `overlay restart` to serving again minus the service's own start time; a
             worker's restart; restarts that drain an open connection.
  scale      overlay-loadgen: --peers simulated peers against a relay; time until all have a
             session, relay RSS, relay CPU at steady keepalive.
  flood      overlay-flood: one host sends 10k, 50k and 100k anonymous join datagrams a
             second; meanwhile a node's ping loss and RTT to the relay and the time a valid
             join takes, beside idle in the same run; the relay's CPU, RSS and log growth.
  tcp        iperf3 and ping node -> relay -> node over UDP and over the stream transport
             (--transport tcp), and how fast `auto` falls back when UDP is dropped.
  storm      ping p99 node a -> relay -> node b (10 ms apart) while a third node registers and
             unregisters a service --cycles times (requests on its daemon's API socket, 40 ms
             apart), beside the idle p99 of the same run; prints the ratio (target: at most 3x
             idle); then the same cycles as `overlay` commands, and as many `overlay status`.
  capture    h2load through a service's listener (nginx, 16 KiB file) on one node, with the
             capture recording and paused (overlay traffic --resume/--pause), which first
             alternating by round; HTTP/1.1 (kept alive and a connection per request) and h2c;
             prints the cost (targets: at most 3% HTTP/1.1, 5% HTTP/2).
  intercept  a catalog service's front on the relay without an intercept, against calling
             its address (nginx in the remote environment) directly, same run: the latency the
             front adds per GET (new and kept-alive connections; target under 200 µs median)
             and h2load throughput, small and 1 MiB responses (target at least 80% of direct),
             with the host's, the relay's and socat's CPU time per request; then, as
             information, the same with a laptop intercepting the service by a header, for
             requests without the header (to the address) and with it (to the laptop).

Environment: OVERLAY_BIN, OVERLAY_RELAY_BIN, OVERLAY_LOADGEN_BIN, OVERLAY_FLOOD_BIN (default
target/release/overlay{,-relay,-loadgen,-flood}), BORINGTUN_BIN, OVB_RUST_LOG (RUST_LOG for relay
and nodes, default \"warn\").
Output: stdout, target/bench/PART.json, logs in target/bench/logs/.
Exit status: 0 every part ran (whatever the figures), 1 a tool or component failed to run,
2 bad usage. Needs root (network namespaces): sudo scripts/bench.sh dataplane
Soak test: scripts/soak.sh --help (overlay-bench soak).";

fn positive(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("needs a positive whole number".into()),
    }
}

fn whole(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .map_err(|_| "needs a whole number".to_string())
}

/// overlay benchmarks, in throw-away network namespaces (prefix "ovb-").
#[derive(Parser, Debug)]
#[command(
    name = "scripts/bench.sh",
    after_help = PARTS_HELP,
    override_usage = "scripts/bench.sh [all|dataplane|join|dns|registry|gateway|restart|scale|flood|tcp|storm|capture|intercept]... [options]"
)]
struct Cli {
    /// Parts to run (default: all).
    parts: Vec<String>,
    /// dataplane, gateway, tcp: iperf3 runs per setup, the median is reported (default 3);
    /// join: fresh joins measured (default 10)
    #[arg(long, value_parser = positive)]
    runs: Option<u32>,
    /// Seconds per iperf3 run, after a 1 s omitted warm-up, and seconds per dnsperf run
    #[arg(long, value_parser = positive, default_value_t = 10)]
    time: u32,
    /// Pings per setup for the latency figures, 5 ms apart
    #[arg(long, value_parser = positive, default_value_t = 200)]
    pings: u32,
    /// dns: services registered and queried, 50 per node (at most 10000)
    #[arg(long, value_parser = positive, default_value_t = 100)]
    services: u32,
    /// dns: queries per second of the paced dnsperf runs
    #[arg(long, value_parser = positive, default_value_t = 5000)]
    rate: u32,
    /// registry: registrations measured per round (at most 124)
    #[arg(long, value_parser = positive, default_value_t = 100)]
    registrations: u32,
    /// registry: services registered on other nodes before the second round (0 skips it)
    #[arg(long, value_parser = whole, default_value_t = 1000)]
    fill: u32,
    /// restart, intercept: requests per address and connection mode (at most 100000)
    #[arg(long, value_parser = positive, default_value_t = 1000)]
    requests: u32,
    /// restart: restarts measured, and direct starts (at most 100)
    #[arg(long, value_parser = positive, default_value_t = 5)]
    restarts: u32,
    /// scale: simulated peers (at most 50000)
    #[arg(long, value_parser = positive, default_value_t = 1000)]
    peers: u32,
    /// scale: seconds of steady state the relay's CPU is measured over (at most 3600)
    #[arg(long, value_parser = positive, default_value_t = 10)]
    steady: u32,
    /// storm: register/unregister cycles (at most 10000)
    #[arg(long, value_parser = positive, default_value_t = 150)]
    cycles: u32,
    /// Do not build (scripts/bench.sh), nor install boringtun-cli when it is missing
    #[arg(long)]
    no_build: bool,
}

/// Services a node may register: its /26 minus the network and node addresses.
const MAX_PER_NODE: u32 = 62;

fn usage_error(msg: &str) -> ! {
    eprintln!("bench.sh: {msg}\nrun 'scripts/bench.sh --help' for usage.");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.get(1).map(String::as_str) {
        Some("probe") => probe::main(&args[2..]),
        Some("soak") => soak::main(&args[2..]),
        _ => bench(),
    };
    std::process::exit(code);
}

/// The repository root (for target/): `OVB_ROOT`, else where this crate was built from.
pub fn repo_root() -> PathBuf {
    std::env::var_os("OVB_ROOT")
        .map_or_else(
            || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
            PathBuf::from,
        )
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

fn bench() -> i32 {
    let cli = Cli::parse();
    let mut selected = Vec::new();
    for p in &cli.parts {
        if p == "all" {
            selected.extend(PARTS.iter().map(|s| s.to_string()));
        } else if PARTS.contains(&p.as_str()) {
            selected.push(p.clone());
        } else {
            usage_error(&format!(
                "unknown part '{p}' (choose from: all {}).",
                PARTS.join(" ")
            ));
        }
    }
    if selected.is_empty() {
        selected = PARTS.iter().map(|s| s.to_string()).collect();
    }
    let run: Vec<&str> = PARTS
        .iter()
        .copied()
        .filter(|p| selected.iter().any(|s| s == p))
        .collect();
    let limits: [(bool, &str); 7] = [
        (
            cli.services <= 50 * 200,
            "--services is at most 10000 (50 per node, 200 nodes).",
        ),
        (
            cli.registrations <= 2 * MAX_PER_NODE,
            "--registrations is at most 124 (two registering nodes).",
        ),
        (
            cli.fill <= 60 * 200,
            "--fill is at most 12000 (60 per node, 200 nodes).",
        ),
        (cli.requests <= 100_000, "--requests is at most 100000."),
        (cli.restarts <= 100, "--restarts is at most 100."),
        (cli.peers <= 50_000, "--peers is at most 50000."),
        (
            cli.steady <= 3600 && cli.cycles <= 10_000,
            "--steady is at most 3600 seconds, --cycles at most 10000.",
        ),
    ];
    for (ok, msg) in limits {
        if !ok {
            usage_error(msg);
        }
    }
    init_tracing();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench.sh needs root: run sudo scripts/bench.sh");
        return 1;
    }
    let mut tools = vec!["ip", "timeout", "ss"];
    for p in &run {
        tools.extend_from_slice(match *p {
            "dataplane" => &["iperf3", "ping", "wg", "wireguard-go"][..],
            "gateway" => &["iperf3", "ping", "wg", "wireguard-go", "python3"],
            "tcp" => &["iperf3", "ping", "nft"],
            "dns" => &["dig", "dnsperf", "dnsmasq", "getent"],
            "restart" => &["setpriv", "curl"],
            "flood" | "storm" => &["ping"],
            "capture" => &["h2load", "nginx"],
            "intercept" => &["h2load", "nginx", "socat", "curl"],
            _ => &[],
        });
    }
    if let Err(e) = require_tools(&tools) {
        eprintln!("{e}");
        return 1;
    }
    let opts = Opts {
        runs: cli.runs,
        time: cli.time,
        pings: cli.pings,
        services: cli.services,
        rate: cli.rate,
        registrations: cli.registrations,
        fill: cli.fill,
        requests: cli.requests,
        restarts: cli.restarts,
        peers: cli.peers,
        steady: cli.steady,
        cycles: cli.cycles,
        no_build: cli.no_build,
    };
    let ctx = Ctx::new(opts, repo_root());
    let Some(_lock) = lock("/run/ovb-bench.lock") else {
        eprintln!("another overlay bench is already running.");
        return 1;
    };
    let _ = std::fs::remove_dir_all(&ctx.logs);
    if let Err(e) = std::fs::create_dir_all(&ctx.logs) {
        eprintln!("bench.sh: cannot create {}: {e}", ctx.logs.display());
        return 1;
    }
    let out = ctx.out.clone();
    on_signals(move || {
        net::wg_sockets_cleanup();
        give_back(&out);
    });
    for ns in overlay_tests::world::remove_stale("ovb-") {
        tracing::info!("removed stale namespace {ns}");
    }
    net::wg_sockets_cleanup();
    for p in run {
        if INTERRUPTED.load(Ordering::SeqCst) {
            break;
        }
        // A part that panics (a harness assertion) has failed; its world is dropped, and
        // so cleaned up, while the panic unwinds; the next part still runs.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parts::run(&ctx, p)));
        if r.is_err() {
            ctx.fail(p, "the part stopped early (see the message above)");
        }
        net::wg_sockets_cleanup();
    }
    give_back(&ctx.out);
    wait_if_interrupted();
    if ctx.failed() {
        eprintln!(
            "bench.sh: a component failed to run; logs are in {}/.",
            ctx.rel(&ctx.logs)
        );
        1
    } else {
        0
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OVB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_level(false)
        .init();
}

/// Names every missing tool, with its Debian package, in one sentence.
pub fn require_tools(tools: &[&str]) -> Result<(), String> {
    let mut missing: Vec<&str> = Vec::new();
    let mut pkgs: Vec<&str> = Vec::new();
    for t in tools {
        if missing.contains(t)
            || overlay_tests::world::sh_output(&format!("command -v {t}"))
                .status
                .success()
        {
            continue;
        }
        missing.push(t);
        let p = match *t {
            "ip" | "ss" => "iproute2",
            "ping" => "iputils-ping",
            "wg" => "wireguard-tools",
            "dig" => "bind9-dnsutils",
            "dnsmasq" => "dnsmasq-base",
            "timeout" => "coreutils",
            "setpriv" => "util-linux",
            "getent" => "libc-bin",
            "nft" => "nftables",
            t => t,
        };
        if !pkgs.contains(&p) {
            pkgs.push(p);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "missing tools: {} (Debian: apt-get install {}).",
        missing.join(" "),
        pkgs.join(" ")
    ))
}

/// An exclusive lock on `path` (flock), held while the returned file lives.
pub fn lock(path: &str) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path).ok()?;
    // SAFETY: a valid fd; flock has no memory preconditions.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (r == 0).then_some(f)
}

/// Under sudo, leaves `dir` owned by the invoking user so cargo and editors keep working.
pub fn give_back(dir: &std::path::Path) {
    if let (Ok(u), Ok(g)) = (std::env::var("SUDO_UID"), std::env::var("SUDO_GID")) {
        let _ = overlay_tests::world::sh_output(&format!("chown -R {u}:{g} {}", dir.display()));
    }
}

/// Set once SIGINT or SIGTERM came: the handler thread is cleaning up and will exit.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The write end of the pipe the signal handler reports through.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the fd is the pipe's write end (or -1: EBADF).
    unsafe {
        libc::write(
            SIGNAL_PIPE.load(Ordering::SeqCst),
            (&b as *const u8).cast(),
            1,
        )
    };
}

/// Handles SIGINT and SIGTERM on a thread of their own: it deletes every namespace of the live
/// worlds (a process that exits on a signal runs no destructors), runs `extra`, and exits
/// 130 / 143. A handler (not a blocked mask, which children would inherit) reports to the
/// thread through a pipe; children get the default dispositions back at exec.
pub fn on_signals(extra: impl Fn() + Send + 'static) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        tracing::warn!("no signal pipe: Ctrl-C will not clean up");
        return;
    }
    SIGNAL_PIPE.store(fds[1], Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only calls write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    std::thread::spawn(move || {
        let mut b = 0u8;
        // SAFETY: reads one byte into b from our pipe's read end.
        while unsafe { libc::read(fds[0], (&mut b as *mut u8).cast(), 1) } != 1 {}
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!("interrupted, cleaning up.");
        overlay_tests::world::cleanup_all();
        extra();
        std::process::exit(128 + i32::from(b));
    });
}

/// After an interruption, the handler thread exits the process once it cleaned up.
pub fn wait_if_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(60));
    }
}

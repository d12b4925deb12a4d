//! The run-wide context of a bench run: options, paths, binaries, the failure flag, and the
//! helpers every part uses to run commands in namespaces with a deadline.

use overlay_tests::world::{shell_quote, World};
use overlay_tests::Host;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Options shared by the parts (see `main.rs` for their meaning and defaults).
#[derive(Clone, Debug)]
pub struct Opts {
    pub runs: Option<u32>,
    pub time: u32,
    pub pings: u32,
    pub services: u32,
    pub rate: u32,
    pub registrations: u32,
    pub fill: u32,
    pub requests: u32,
    pub restarts: u32,
    pub peers: u32,
    pub steady: u32,
    pub cycles: u32,
    pub no_build: bool,
}

/// Everything a part needs besides its world.
pub struct Ctx {
    pub o: Opts,
    pub root: PathBuf,
    pub out: PathBuf,
    pub logs: PathBuf,
    pub overlay: PathBuf,
    pub relay: PathBuf,
    pub loadgen: PathBuf,
    pub flood: PathBuf,
    /// This binary (its `probe` mode runs inside the namespaces).
    pub me: PathBuf,
    /// `RUST_LOG` of the relays and nodes (`OVB_RUST_LOG`, default `warn`).
    pub rust_log: String,
    failed: AtomicBool,
    iperf_port: AtomicU16,
}

/// The shell snippet that hides the system bus and systemd-resolved from a command: `ip netns
/// exec` gives each command a private mount namespace, in which these directories are covered
/// by empty tmpfs mounts, so a node daemon cannot reach the host's resolver through D-Bus (its
/// /etc/resolv.conf is the namespace's own). Nothing of this is visible outside.
pub const SHIELD: &str = "for d in /run/dbus /run/systemd/resolve /run/NetworkManager; do \
    if [ -d \"$d\" ]; then mount -t tmpfs -o size=64k,mode=755 ovb-shield \"$d\" || exit 1; fi; \
    done; exec \"$@\"";

impl Ctx {
    pub fn new(o: Opts, root: PathBuf) -> Ctx {
        let out = root.join("target").join("bench");
        let rel = root.join("target").join("release");
        let bin = |var: &str, name: &str| {
            std::env::var_os(var).map_or_else(|| rel.join(name), PathBuf::from)
        };
        Ctx {
            o,
            logs: out.join("logs"),
            out,
            overlay: bin("OVERLAY_BIN", "overlay"),
            relay: bin("OVERLAY_RELAY_BIN", "overlay-relay"),
            loadgen: bin("OVERLAY_LOADGEN_BIN", "overlay-loadgen"),
            flood: bin("OVERLAY_FLOOD_BIN", "overlay-flood"),
            me: std::env::current_exe().unwrap_or_else(|_| rel.join("overlay-bench")),
            rust_log: std::env::var("OVB_RUST_LOG").unwrap_or_else(|_| "warn".to_string()),
            root,
            failed: AtomicBool::new(false),
            iperf_port: AtomicU16::new(5201),
        }
    }

    /// A component failed to run: say so; the exit status becomes 1.
    pub fn fail(&self, what: &str, why: &str) {
        tracing::error!("{what}: {why}");
        self.failed.store(true, Ordering::SeqCst);
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Shows the end of a component's log after it failed.
    pub fn tail(&self, path: &Path) {
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        if text.trim().is_empty() {
            return;
        }
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(15);
        eprintln!("-- last lines of {}:", self.rel(path));
        for l in &lines[from..] {
            eprintln!("   {l}");
        }
    }

    /// A path relative to the repository root, for messages.
    pub fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    /// A fresh port for a one-off iperf3 server.
    pub fn next_port(&self) -> u16 {
        self.iperf_port.fetch_add(1, Ordering::SeqCst)
    }

    /// Both overlay binaries exist.
    pub fn have_binaries(&self) -> bool {
        self.overlay.exists() && self.relay.exists()
    }

    /// A new world for a part (namespaces `ovb-PART-…`).
    pub fn world(&self, part: &str) -> World {
        World::with_prefix("ovb-", part)
    }
}

/// Runs `cmd` (bash) in `host` with a deadline of `secs` (`timeout`), returning its output.
pub fn run(w: &World, host: &Host, secs: u64, cmd: &str) -> Output {
    w.exec(
        host,
        &format!("timeout {secs} bash -c {}", shell_quote(cmd)),
    )
}

/// [`run`], true when the command succeeded.
pub fn ok(w: &World, host: &Host, secs: u64, cmd: &str) -> bool {
    run(w, host, secs, cmd).status.success()
}

/// [`run`], its stdout when it succeeded.
pub fn out(w: &World, host: &Host, secs: u64, cmd: &str) -> Option<String> {
    let o = run(w, host, secs, cmd);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Polls `f` every 100 ms until it is true or `secs` pass; logs what timed out.
pub fn wait(secs: u64, what: &str, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            tracing::warn!("timed out after {secs}s waiting for {what}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Milliseconds since `t0`.
pub fn ms_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

/// Appends `text` to a log file (best effort: logs never fail a run).
pub fn append(path: &Path, text: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

//! The namespace world and its helpers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Namespaces of the worlds alive in this process, for [`cleanup_all`] (a signal handler's
/// last resort: a process that exits on SIGINT runs no destructors).
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Their temporary directories, likewise.
static LIVE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The underlay subnet inside every world (private to its namespaces).
pub const UNDERLAY: &str = "10.78.0";

/// A host in the world: a namespace with one interface on the bridge.
#[derive(Clone, Debug)]
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// Underlay address.
    pub ip: String,
    /// A private directory for this host's files.
    pub dir: PathBuf,
}

/// A world of namespaces: `hub` holds the bridge (and usually the relay), hosts hang off it.
pub struct World {
    prefix: String,
    /// The bridge namespace, underlay address `10.78.0.1`.
    pub hub: Host,
    hosts: Vec<Host>,
    children: Mutex<Vec<Child>>,
    /// The world's temporary directory.
    pub dir: PathBuf,
}

/// Where the binaries under test are.
pub fn bin(name: &str) -> PathBuf {
    if let Ok(d) = std::env::var("OVERLAY_BIN_DIR") {
        return Path::new(&d).join(name);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target");
    for profile in ["release", "debug"] {
        let p = root.join(profile).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not built: run `cargo build --release --bins` (scripts/test.sh does)");
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        panic!("end-to-end tests need root to build network namespaces: run sudo scripts/test.sh");
    }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("bash runs");
    if !out.status.success() {
        panic!(
            "command failed: {cmd}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its output whatever the status.
pub fn sh_output(cmd: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("bash runs")
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

impl World {
    /// A new world whose namespace names start with `ovt-<tag>`.
    pub fn new(tag: &str) -> World {
        World::with_prefix("ovt-", tag)
    }

    /// A new world whose namespace names start with `<kind><tag>` (the benches use `ovb-`, the
    /// soak `ovs-`, so that their leftovers can be told from the tests').
    pub fn with_prefix(kind: &str, tag: &str) -> World {
        require_root();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{kind}{tag}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        LIVE_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.clone());
        let hub_ns = format!("{prefix}-hub");
        let mut w = World {
            prefix,
            hub: Host {
                ns: hub_ns.clone(),
                ip: format!("{UNDERLAY}.1"),
                dir: dir.join("hub"),
            },
            hosts: Vec::new(),
            children: Mutex::new(Vec::new()),
            dir,
        };
        w.make_ns(&hub_ns);
        std::fs::create_dir_all(&w.hub.dir).expect("hub dir");
        // The bridge gets an address of its own: without one it takes the lowest of its ports'
        // and changes it when a host with a lower one is added. Hosts that learned the old
        // address for 10.78.0.1 then send it frames the hub's IP layer drops as not its own
        // (they enter through another port), until their ARP entry goes stale: a node's tunnel
        // went silent for ~10 s whenever a later host joined the bridge.
        sh(&format!(
            "ip -n {hub_ns} link add br0 address 02:00:0a:4e:00:01 type bridge && \
             ip -n {hub_ns} link set br0 up && \
             ip -n {hub_ns} addr add {UNDERLAY}.1/24 dev br0"
        ));
        w.hosts.push(w.hub.clone());
        w
    }

    fn make_ns(&self, ns: &str) {
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ns.to_string());
        let _ = sh_output(&format!("ip netns del {ns} 2>/dev/null"));
        sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
        // Every namespace gets its own resolv.conf and hosts, so nothing reads the host's.
        let etc = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&etc).expect("/etc/netns dir");
        std::fs::write(etc.join("resolv.conf"), "# test namespace: no resolver\n")
            .expect("resolv.conf");
        std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n").expect("hosts");
    }

    /// Adds a host on the bridge with underlay address `10.78.0.<octet>`.
    pub fn add_host(&mut self, name: &str, octet: u8) -> Host {
        let ns = format!("{}-{name}", self.prefix);
        self.make_ns(&ns);
        let hub = &self.hub.ns;
        let port = format!("v{octet}");
        sh(&format!(
            "ip -n {hub} link add {port} type veth peer name eth0 netns {ns} && \
             ip -n {hub} link set {port} master br0 up && \
             ip -n {ns} addr add {UNDERLAY}.{octet}/24 dev eth0 && ip -n {ns} link set eth0 up"
        ));
        let host = Host {
            ns,
            ip: format!("{UNDERLAY}.{octet}"),
            dir: self.dir.join(name),
        };
        std::fs::create_dir_all(&host.dir).expect("host dir");
        self.hosts.push(host.clone());
        host
    }

    /// Starts a background process in `host`'s namespace; it is killed when the world drops.
    /// Its stdout and stderr go to `<host dir>/<log>.log`. Returns its pid.
    pub fn spawn(&self, host: &Host, log: &str, env: &[(&str, &str)], cmd: &[&str]) -> u32 {
        self.spawn_to(host, &host.dir.join(format!("{log}.log")), env, cmd)
    }

    /// Like [`World::spawn`], with stdout and stderr appended to the file `log`.
    pub fn spawn_to(&self, host: &Host, log: &Path, env: &[(&str, &str)], cmd: &[&str]) -> u32 {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", log.display()));
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.ns]).args(cmd);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log fd"))
            .stderr(logf);
        let child = c.spawn().expect("spawn");
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        pid
    }

    /// Whether a process started with [`World::spawn`] still runs (not exited, not a zombie).
    pub fn alive(&self, pid: u32) -> bool {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops a process started with [`World::spawn`]: `signal` (e.g. `TERM`, `INT`), then
    /// SIGKILL if it still runs after `grace`; reaps it. Unknown pids are ignored.
    pub fn stop_with(&self, pid: u32, signal: &str, grace: Duration) {
        let child = {
            let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
            match children.iter().position(|c| c.id() == pid) {
                Some(i) => children.swap_remove(i),
                None => return,
            }
        };
        let mut child = child;
        if matches!(child.try_wait(), Ok(None)) {
            let _ = sh_output(&format!("kill -{signal} {pid} 2>/dev/null"));
            let end = Instant::now() + grace;
            while Instant::now() < end && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// [`World::stop_with`] SIGTERM and 3 s of grace.
    pub fn stop(&self, pid: u32) {
        self.stop_with(pid, "TERM", Duration::from_secs(3));
    }

    /// Runs a command in `host`'s namespace and returns its output.
    pub fn exec(&self, host: &Host, cmd: &str) -> Output {
        sh_output(&format!(
            "ip netns exec {} bash -c {}",
            host.ns,
            shell_quote(cmd)
        ))
    }

    /// Runs a command in `host`'s namespace, panicking if it fails; returns stdout.
    pub fn exec_ok(&self, host: &Host, cmd: &str) -> String {
        let out = self.exec(host, cmd);
        if !out.status.success() {
            panic!(
                "in {}: command failed: {cmd}\nstdout: {}\nstderr: {}",
                host.ns,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether something in `host` listens on TCP `port`.
    pub fn listening(&self, host: &Host, port: u16) -> bool {
        self.exec(host, &format!("ss -Hltn 'sport = :{port}' | grep -q ."))
            .status
            .success()
    }

    /// Waits (at most 10 s) until something in `host` listens on TCP `port`; panics if not.
    pub fn wait_listening(&self, host: &Host, port: u16) {
        assert!(
            wait_until(Duration::from_secs(10), || self.listening(host, port)),
            "nothing listens on port {port} in {}",
            host.ns
        );
    }

    /// The contents of a host's log (for failure messages).
    pub fn log(&self, host: &Host, log: &str) -> String {
        std::fs::read_to_string(host.dir.join(format!("{log}.log"))).unwrap_or_default()
    }
}

/// Whether process `pid` is gone: no such process, or a zombie waiting to be reaped.
pub fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Kills every process in, and deletes, every namespace of the worlds alive in this process,
/// without their destructors: for a signal handler that is about to exit.
pub fn cleanup_all() {
    let live: Vec<String> = LIVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for ns in live.iter().rev() {
        let _ = sh_output(&format!("ip netns pids {ns} | xargs -r kill -9"));
    }
    for ns in live.iter().rev() {
        let _ = sh_output(&format!("ip netns del {ns} 2>/dev/null"));
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
    }
    let dirs: Vec<PathBuf> = LIVE_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    if std::env::var_os("OVERLAY_KEEP_TEST_DIRS").is_none() {
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Deletes namespaces (and their `/etc/netns` files) whose names start with `prefix`, left over
/// from a run that was killed; returns their names.
pub fn remove_stale(prefix: &str) -> Vec<String> {
    let list = sh_output("ip netns list");
    let stale: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(prefix))
        .map(str::to_string)
        .collect();
    for ns in &stale {
        let _ = sh_output(&format!("ip netns pids {ns} | xargs -r kill -9"));
        let _ = sh_output(&format!("ip netns del {ns}"));
    }
    if let Ok(dir) = std::fs::read_dir("/etc/netns") {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    stale
}

/// Quotes a string for bash.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Drop for World {
    fn drop(&mut self) {
        for mut c in self
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in self.hosts.iter().rev() {
            // Whatever else runs in the namespace (daemonised wireguard-go, iperf3 servers).
            let _ = sh_output(&format!("ip netns pids {} | xargs -r kill -9", h.ns));
        }
        // Deleting a namespace while its processes die leaves it half gone: wait until they have.
        wait_until(Duration::from_secs(2), || {
            self.hosts.iter().all(|h| {
                sh_output(&format!("ip netns pids {}", h.ns))
                    .stdout
                    .is_empty()
            })
        });
        for h in self.hosts.iter().rev() {
            let _ = sh_output(&format!("ip netns del {}", h.ns));
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&h.ns));
        }
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|ns| !self.hosts.iter().any(|h| &h.ns == ns));
        LIVE_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|d| d != &self.dir);
        if std::env::var_os("OVERLAY_KEEP_TEST_DIRS").is_none() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

//! Traffic capture and the web inspector.
//!
//! Two sources feed one ring of records ([`overlay_core::traffic::capture::Ring`]):
//! - connections into local services, teed at their listeners ([`splice`]);
//! - connections out of this node to overlay addresses, reassembled passively from the packets
//!   the TUN carries ([`tap`]); the same packets feed `overlay capture` (pcap).
//!
//! Neither source ever waits for the capture: bytes go through bounded queues with `try_send`,
//! and a full queue costs capture data (the record is marked incomplete), never traffic.
//! [`server`] serves the inspector and its JSON API; `overlay traffic`, `overlay inspect` and
//! `overlay capture` are in `crate::cli::traffic`.

pub mod callers;
pub mod owner;
pub mod replay;
pub mod server;
pub mod splice;
pub mod tap;

use crate::daemon::relaylink::Directory;
use clap::Args;
use overlay_core::traffic::capture::access::Secret;
use overlay_core::traffic::capture::schema::Schemas;
use overlay_core::traffic::capture::{ConnectionCapture, Record, Ring};
use overlay_core::traffic::http1::Limits;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::watch;

/// Bytes all listeners together may hold while the processes of their local callers are looked
/// up; beyond this a connection's capture goes on without waiting for the name (each
/// connection's share is bounded too).
pub const MAX_IN_FLIGHT: usize = 64 << 20;

/// The inspector's default address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4141";

/// Capture settings of `overlay daemon`.
#[derive(Args, Debug, Clone)]
pub struct TrafficArgs {
    /// Where the web inspector listens ("off" disables it).
    #[arg(long, env = "OVERLAY_INSPECT_LISTEN", default_value = DEFAULT_LISTEN)]
    pub inspect_listen: String,
    /// Bytes of each request and response body kept in the capture.
    #[arg(long, env = "OVERLAY_CAPTURE_BODY_CAP", default_value_t = 1 << 20)]
    pub capture_body_cap: usize,
    /// Bytes of records kept in memory; the oldest go first.
    #[arg(long, env = "OVERLAY_CAPTURE_BUFFER", default_value_t = 64 << 20)]
    pub capture_buffer: usize,
    /// Start with the capture paused (listeners splice without a tee, the TUN is not tapped);
    /// `overlay traffic --resume` starts it.
    #[arg(long, env = "OVERLAY_CAPTURE_OFF", value_parser = clap::builder::BoolishValueParser::new())]
    pub capture_off: bool,
    /// Directories of `.proto` files: captured gRPC messages are shown with their field names
    /// (repeat the flag, or separate directories with `:` in the variable).
    #[arg(long, env = "OVERLAY_PROTO_PATH", value_delimiter = ':')]
    pub proto_path: Vec<std::path::PathBuf>,
}

/// The capture shared by listeners, the tunnel tap, the inspector and the control socket.
pub struct Traffic {
    ring: Mutex<Ring>,
    /// Parser limits for every connection.
    pub limits: Limits,
    /// The newest record id, for live views.
    latest: watch::Sender<u64>,
    /// Names of overlay addresses.
    directory: Arc<Directory>,
    node_name: String,
    node_address: Ipv4Addr,
    /// Addresses of this node's services: their listeners capture them, the tap skips them.
    local: RwLock<Arc<HashSet<Ipv4Addr>>>,
    /// Capture is on (not paused): read once per connection at its start and per tapped packet.
    enabled: AtomicBool,
    /// Chunks or packets the capture had no room for.
    pub dropped: AtomicU64,
    /// Bytes listeners hold unparsed while their callers' processes are looked up.
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// The inspector's URL (without its token), once it listens.
    pub url: Mutex<Option<String>>,
    /// The inspector's secret; only the control socket (root and the node's user) hands it out.
    pub secret: Secret,
    /// `overlay capture` subscribers.
    pub pcap: tap::PcapSubscribers,
    /// The real callers behind the relay's connections, as the relay announced them.
    pub callers: Arc<callers::Callers>,
    /// The relay's overlay address (connections from it are callbacks and intercepts).
    pub relay_address: Ipv4Addr,
    /// The user's `.proto` descriptions, for gRPC messages.
    pub schemas: Schemas,
}

impl Traffic {
    /// A capture with the daemon's settings.
    pub fn new(
        args: &TrafficArgs,
        directory: Arc<Directory>,
        node_name: String,
        node_address: Ipv4Addr,
        relay_address: Ipv4Addr,
        callers: Arc<callers::Callers>,
    ) -> Arc<Traffic> {
        let limits = Limits {
            body_cap: args.capture_body_cap.min(args.capture_buffer / 4),
            ..Limits::default()
        };
        Arc::new(Traffic {
            ring: Mutex::new(Ring::new(args.capture_buffer)),
            limits,
            latest: watch::channel(0).0,
            directory,
            node_name,
            node_address,
            local: RwLock::new(Arc::new(HashSet::new())),
            enabled: AtomicBool::new(!args.capture_off),
            dropped: AtomicU64::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            url: Mutex::new(None),
            secret: new_secret(),
            pcap: tap::PcapSubscribers::default(),
            callers,
            relay_address,
            schemas: load_schemas(&args.proto_path),
        })
    }

    /// Whether the capture records (it is not paused).
    pub fn recording(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Pauses (`false`) or resumes the capture; returns whether it recorded before. Connections
    /// open at that moment keep the choice made when they opened.
    pub fn set_recording(&self, on: bool) -> bool {
        let was = self.enabled.swap(on, Ordering::Relaxed);
        if was != on {
            tracing::info!(on, "capture {}", if on { "resumed" } else { "paused" });
        }
        was
    }

    /// Every service name the capture knows: the overlay's services (local, remote, on other
    /// nodes), the ones in records, and this node.
    pub fn service_names(&self) -> Vec<String> {
        let mut names: std::collections::BTreeSet<String> = self
            .directory
            .instances()
            .iter()
            .map(|i| i.name.clone())
            .collect();
        names.extend(self.ring().services().into_iter().map(|c| c.service));
        names.insert(self.node_name.clone());
        names.into_iter().collect()
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves every finished record of `c` into the ring.
    pub fn collect(&self, c: &mut ConnectionCapture) {
        // Most reads finish no record (a request waits for its response): no lock for them.
        if !c.has_record() {
            return;
        }
        let mut last = None;
        {
            let mut ring = self.ring();
            while let Some(r) = c.poll() {
                last = Some(ring.push(r));
            }
        }
        // Only live views need the news (telling nobody still costs a lock and eight
        // notifications per record); one that subscribes later starts from the ring.
        if let Some(id) = last.filter(|_| self.latest.receiver_count() > 0) {
            self.latest.send_if_modified(|v| raise(v, id));
        }
    }

    /// Runs `f` on the ring.
    pub fn with_ring<T>(&self, f: impl FnOnce(&mut Ring) -> T) -> T {
        f(&mut self.ring())
    }

    /// A record by id.
    pub fn get(&self, id: u64) -> Option<Record> {
        self.ring().get(id).cloned()
    }

    /// Live updates: the newest id.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let rx = self.latest.subscribe();
        // Records pushed while nobody listened did not update the value (see `collect`). A
        // record pushed from now on is either in the ring already or will be sent.
        let newest = self.ring().next_id() - 1;
        self.latest.send_if_modified(|v| raise(v, newest));
        rx
    }

    /// Counts data the capture could not take.
    pub fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that the node's services now have these addresses.
    pub fn set_local(&self, addrs: HashSet<Ipv4Addr>) {
        *self.local.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(addrs);
    }

    /// Whether `ip` belongs to one of this node's services.
    pub fn is_local_service(&self, ip: Ipv4Addr) -> bool {
        self.local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&ip)
    }

    /// Whether a connection from `ip` was made on this machine: loopback, this node's
    /// address, or one of its services' (a local program calling a local service).
    pub fn is_local_caller(&self, ip: std::net::IpAddr) -> bool {
        match ip {
            std::net::IpAddr::V4(v4) => {
                v4.is_loopback() || v4 == self.node_address || self.is_local_service(v4)
            }
            std::net::IpAddr::V6(v6) => v6.is_loopback(),
        }
    }

    /// The name of an overlay address and port: a service (`tag.name` for variants), this
    /// node, or nothing.
    pub fn name_of(&self, addr: SocketAddr) -> Option<String> {
        let SocketAddr::V4(a) = addr else {
            return None;
        };
        if *a.ip() == self.node_address {
            return Some(self.node_name.clone());
        }
        let instances = self.directory.instances();
        let same_ip = instances.iter().filter(|i| i.address == *a.ip());
        let best = same_ip
            .clone()
            .find(|i| i.port == a.port())
            .or_else(|| same_ip.clone().next())?;
        Some(match &best.tag {
            Some(t) => format!("{t}.{}", best.name),
            None => best.name.clone(),
        })
    }

    /// The overlay addresses of the services called `name` (any tag, any place).
    pub fn addresses_of(&self, name: &str) -> HashSet<Ipv4Addr> {
        self.directory
            .instances()
            .iter()
            .filter(|i| i.name == name)
            .map(|i| i.address)
            .collect()
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The URL that opens the inspector, with its token (what `overlay inspect` prints).
    pub fn private_url(&self) -> Option<String> {
        let base = self.url.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        Some(format!(
            "{base}/?{}={}",
            overlay_core::traffic::capture::access::PARAM,
            self.secret.hex()
        ))
    }
}

/// Raises the watched newest id to `id`; two collects finishing out of order never move it
/// back.
fn raise(v: &mut u64, id: u64) -> bool {
    let newer = id > *v;
    *v = (*v).max(id);
    newer
}

/// Compiles every `.proto` file under `dirs` (each also an include path). A file that does not
/// compile is logged and the capture goes on without schemas: messages still show as wire
/// fields.
fn load_schemas(dirs: &[std::path::PathBuf]) -> Schemas {
    if dirs.is_empty() {
        return Schemas::none();
    }
    let mut files = Vec::new();
    for d in dirs {
        collect_protos(d, d, &mut files, 0);
    }
    let compiled = protox::Compiler::new(dirs).and_then(|mut c| {
        c.include_imports(true);
        for f in &files {
            c.open_file(f)?;
        }
        Ok(c.descriptor_pool())
    });
    match compiled {
        Ok(pool) => {
            let s = Schemas::new(pool);
            tracing::info!(files = files.len(), services = ?s.services(), "gRPC schemas loaded");
            s
        }
        Err(e) => {
            tracing::warn!("the .proto files in {dirs:?} do not compile, gRPC messages are shown without field names: {e}");
            Schemas::none()
        }
    }
}

/// The `.proto` files under `dir`, as paths relative to `root` (what protox resolves).
fn collect_protos(
    root: &std::path::Path,
    dir: &std::path::Path,
    out: &mut Vec<std::path::PathBuf>,
    depth: usize,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && depth < 8 {
            collect_protos(root, &p, out, depth + 1);
        } else if p.extension().is_some_and(|x| x == "proto") {
            if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_path_buf());
            }
        }
    }
}

/// 256 bits from the OS's random source, made once per daemon start.
fn new_secret() -> Secret {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    Secret::from_bytes(b)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Starts the capture's tasks: the TUN tap, the inspector and the capture socket. Failures of
/// the inspector (its port taken) are logged, never fatal: the node works without it.
pub async fn start(
    args: &TrafficArgs,
    traffic: &Arc<Traffic>,
    tunnel: &crate::daemon::tunnel::Tunnel,
    owner_uid: Option<u32>,
) {
    tunnel.set_tap(tap::start(traffic.clone()));
    tokio::spawn({
        let t = traffic.clone();
        async move {
            if let Err(e) = tap::serve_capture(crate::paths::capture_socket(), owner_uid, t).await {
                tracing::warn!("overlay capture is unavailable: {e:#}");
            }
        }
    });
    if args.inspect_listen == "off" {
        return;
    }
    match server::bind(&args.inspect_listen).await {
        Ok(l) => {
            let url = l
                .local_addr()
                .map(|a| format!("http://{a}"))
                .unwrap_or_else(|_| format!("http://{}", args.inspect_listen));
            tracing::info!(%url, "traffic inspector up");
            *traffic.url.lock().unwrap_or_else(|e| e.into_inner()) = Some(url);
            tokio::spawn(server::serve(l, traffic.clone()));
        }
        Err(e) => tracing::warn!("{e:#}"),
    }
}

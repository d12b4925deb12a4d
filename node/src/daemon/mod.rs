//! `overlay daemon`: the node in the foreground, as root: TUN device and tunnel to the relay,
//! DNS server and resolver integration, service listeners, and the local API socket that the
//! CLI and `overlay dev` talk to.

pub mod api;
pub mod cpu_latency;
pub mod device;
pub mod dns;
pub mod intercept;
pub mod listener;
pub mod relaylink;
pub mod relaystream;
pub mod resolvconf;
pub mod tls;
pub mod tunnel;
pub mod udpbatch;

use crate::paths;
use crate::settings::{NodeFiles, Settings};
use clap::Args;
use dns::DnsServer;
use listener::Listener;
use overlay_core::api::daemon::{
    CpuLatency, DaemonRequest, DrainReport, InspectReply, Left, LinkState, Recording, Registered,
    RelayStatus, ResolveReply, Retargeted, Running, StatusReply, Stopping, Unregistered,
};
use overlay_core::api::{Answer, Request};
use overlay_core::identity::wgconfig::WgConfig;
use overlay_core::names::registry::{Protocol, ServiceInstance};
use overlay_core::names::resolver::{listing, ServiceListing};
use overlay_core::net::addressing::DNS_ADDR;
use overlay_core::net::addressing::NODE_PREFIX_LEN;
use overlay_core::net::prefix::Ipv4Prefix;
use overlay_core::node::cpu_latency::MinRtt;
use overlay_core::transport::control::ControlRequest;
use relaylink::RelayLink;
use std::collections::HashMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tunnel::{Tunnel, TunnelConfig};

/// How often the daemon checks that the relay answers.
const LIVENESS_PING: std::time::Duration = std::time::Duration::from_secs(3);
/// Until the relay's round trip is known, it is measured this often.
const RTT_PROBE: Duration = Duration::from_millis(200);
/// Without an answer for this long, the node shows as connecting.
const LIVENESS_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// How long holding a service waits for its in-flight requests before answering.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The system resolver configuration file.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Flags of `overlay daemon`.
#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Run from a wg-quick style config (as printed by `overlay-relay peer add --wireguard-config`)
    /// instead of the settings `overlay join` saved.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The TUN device name.
    #[arg(long, env = "OVERLAY_INTERFACE", default_value = "ovl0")]
    interface: String,
    /// The node's name with --config (default: the config file's name).
    #[arg(long)]
    name: Option<String>,
    /// Leave the system resolver alone (names work through 100.100.100.100 directly).
    #[arg(long, env = "OVERLAY_NO_DNS_CONFIG")]
    no_dns_config: bool,
    /// While exchanges follow each other within 20 ms, ask the kernel to keep idle CPUs quick to
    /// wake (/dev/cpu_dma_latency) until 20 ms after the last packet: `auto` when the relay is
    /// under 2 ms away, `on` always, `off` never (idle CPUs poll while it is held: power).
    #[arg(
        long,
        env = "OVERLAY_CPU_LATENCY",
        default_value = "auto",
        value_name = "MODE"
    )]
    cpu_latency: overlay_core::node::cpu_latency::Mode,
    /// Which way to the relay: `auto` (UDP, the relay's URL when UDP gets no answer, back to
    /// UDP when it answers again), `udp` or `tcp` (default: what `overlay join` saved).
    #[arg(long, env = "OVERLAY_TRANSPORT", value_name = "MODE")]
    transport: Option<overlay_core::transport::stream::transport::Mode>,
    /// The relay's URL for the transport over TCP (default: the one from the join token; a
    /// --config file has none).
    #[arg(long, env = "OVERLAY_RELAY_URL", value_name = "URL")]
    relay_url: Option<String>,
    /// Traffic capture and the web inspector.
    #[command(flatten)]
    traffic: crate::traffic::TrafficArgs,
}

/// Everything the daemon needs, from either source.
struct NodeConfig {
    settings: Settings,
    private_key: [u8; 32],
    relay_key: [u8; 32],
    keepalive: Option<u16>,
    allowed: Vec<Ipv4Prefix>,
}

fn from_wg_config(path: &PathBuf, name: Option<String>) -> anyhow::Result<NodeConfig> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {shown}: {e}"))?;
    let cfg = WgConfig::parse(&text).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let (address, _) = *cfg
        .interface
        .addresses
        .first()
        .ok_or_else(|| anyhow::anyhow!("{shown}: [Interface] has no Address"))?;
    let relay = cfg
        .peers
        .first()
        .ok_or_else(|| anyhow::anyhow!("{shown}: there is no [Peer] (the relay)"))?;
    let endpoint = relay
        .endpoint
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{shown}: the [Peer] has no Endpoint"))?;
    let network = relay
        .allowed_ips
        .iter()
        .find(|p| p.contains(address))
        .copied()
        .ok_or_else(|| {
            anyhow::anyhow!("{shown}: no AllowedIPs prefix contains the Address {address}")
        })?;
    let name = name.unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "node".into())
    });
    Ok(NodeConfig {
        settings: Settings {
            name,
            address,
            prefix: Ipv4Prefix::containing(address, NODE_PREFIX_LEN),
            network,
            domain: "ovl.internal".into(),
            relay_address: network.nth(1).unwrap_or(address),
            relay_key: overlay_core::identity::key::encode(&relay.public_key),
            endpoints: vec![endpoint],
            mtu: cfg.interface.mtu.unwrap_or(1420),
            owner_uid: None,
            url: None,
            transport: Default::default(),
        },
        private_key: cfg.interface.private_key,
        relay_key: relay.public_key,
        keepalive: relay.persistent_keepalive,
        allowed: relay.allowed_ips.clone(),
    })
}

fn from_state() -> anyhow::Result<NodeConfig> {
    let files = NodeFiles::new(&paths::state_dir());
    let settings = files.load()?;
    let private_key = files.load_key()?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} is missing; run `sudo overlay join <token>` again",
            files.key().display()
        )
    })?;
    let relay_key = overlay_core::identity::key::decode(&settings.relay_key)?;
    Ok(NodeConfig {
        allowed: vec![settings.network],
        private_key,
        relay_key,
        keepalive: Some(25),
        settings,
    })
}

struct Node {
    settings: Settings,
    tunnel: Arc<Tunnel>,
    link: Arc<RelayLink>,
    interface: String,
    /// Services registered through this daemon, with their listeners.
    local: tokio::sync::Mutex<HashMap<(String, Option<String>), LocalService>>,
    stop: Notify,
    /// Captured traffic (listeners and the TUN feed it; the inspector reads it).
    traffic: Arc<crate::traffic::Traffic>,
    /// The DNS server (`overlay resolve` asks it).
    dns: Arc<DnsServer>,
    /// This node's intercepts.
    intercepts: intercept::Mine,
}

/// A service this node registered.
struct LocalService {
    instance: ServiceInstance,
    listener: Option<Listener>,
}

impl Node {
    fn status(&self) -> StatusReply {
        let t = self.tunnel.status();
        // Connected while the relay answered recently: the liveness pings below make sure it
        // has something to answer even when no traffic flows.
        let state = match t.last_rx_secs {
            Some(s) if s < LIVENESS_WINDOW.as_secs() => LinkState::Connected,
            _ => LinkState::Connecting,
        };
        let s = &self.settings;
        StatusReply {
            state,
            node: s.name.clone(),
            address: s.address,
            prefix: s.prefix,
            domain: s.domain.clone(),
            relay: RelayStatus {
                endpoint: Some(t.endpoint),
                url: t.url,
                last_handshake_secs: t.last_handshake_secs,
                last_seen_secs: t.last_rx_secs,
            },
            transport: Some(t.transport),
            transport_mode: t.transport_mode,
            rx_bytes: t.rx_bytes,
            tx_bytes: t.tx_bytes,
            running: Some(Running {
                rx_packets: t.rx_packets,
                tx_packets: t.tx_packets,
                drops: t
                    .drops
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                cpu_latency: CpuLatency {
                    mode: t.cpu_latency.mode,
                    held: t.cpu_latency.held,
                    holds: t.cpu_latency.holds,
                    relay_rtt_us: t.cpu_latency.relay_rtt_us,
                },
                pid: std::process::id(),
                // Another VPN that routes the overlay's range or DNS address since we started.
                route_conflicts: device::route_conflicts(&self.interface, s.network),
            }),
        }
    }

    /// Asks the relay, through the tunnel, to deregister this node.
    async fn leave(&self) -> anyhow::Result<()> {
        self.link.request(ControlRequest::Leave).await.map(|_| ())
    }
}

impl Node {
    fn services(&self) -> Vec<ServiceListing> {
        let instances = self.link.directory.instances();
        listing(&instances, &self.settings.name, &self.settings.domain)
    }

    /// `overlay resolve`: the DNS server's own answer, so the two never disagree.
    async fn resolve(&self, name: &str) -> ResolveReply {
        self.dns.explain(name).await
    }

    async fn register(
        &self,
        name: String,
        tag: Option<String>,
        port: u16,
        target: Option<u16>,
        hold: bool,
    ) -> anyhow::Result<Registered> {
        let mut local = self.local.lock().await;
        let key = (name.clone(), tag.clone());
        if let Some(existing) = local.get(&key) {
            if existing.instance.port == port {
                if let (Some(l), Some(t)) = (&existing.listener, target) {
                    l.set_target(if hold { None } else { Some(t) });
                }
                return Ok(self.registered(&existing.instance));
            }
        }
        let data = self
            .link
            .request(ControlRequest::Register {
                name: name.clone(),
                tag: tag.clone(),
                port,
                protocol: Protocol::Tcp,
            })
            .await?;
        let instance: ServiceInstance = serde_json::from_value(data)?;
        device::add_address(&self.interface, instance.address)?;
        let listener = match target {
            Some(t) => {
                let capture = Some((self.traffic.clone(), name.clone()));
                let l =
                    Listener::start(SocketAddr::from((instance.address, port)), Some(t), capture)
                        .await?;
                tracing::info!(service = %name, listen = %l.addr, target = t, "listener up");
                Some(l)
            }
            None => None,
        };
        let out = self.registered(&instance);
        local.insert(key, LocalService { instance, listener });
        save_local(&local);
        self.traffic
            .set_local(local.values().map(|s| s.instance.address).collect());
        self.link.poke();
        Ok(out)
    }

    /// Registers again what this daemon had registered before it was killed: the relay kept the
    /// addresses, so the services' names and callers are unchanged once the listeners are back.
    async fn restore_local(self: Arc<Self>) {
        let saved = load_local();
        if saved.is_empty() {
            return;
        }
        tracing::info!(
            count = saved.len(),
            "re-registering services from before the restart"
        );
        for entry in saved {
            let mut delay = Duration::from_millis(200);
            for _ in 0..20 {
                let r = self
                    .register(
                        entry.name.clone(),
                        entry.tag.clone(),
                        entry.port,
                        entry.target,
                        false,
                    )
                    .await;
                match r {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::debug!(service = %entry.name, "re-register: {e:#}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }

    fn registered(&self, i: &ServiceInstance) -> Registered {
        Registered {
            name: i.name.clone(),
            tag: i.tag.clone(),
            address: i.address,
            port: i.port,
            hostname: i.hostname(&self.settings.domain),
            callback_url: i.callback_url.clone(),
        }
    }

    async fn set_target(
        &self,
        name: String,
        tag: Option<String>,
        target: Option<u16>,
    ) -> anyhow::Result<Retargeted> {
        let forwarding = {
            let local = self.local.lock().await;
            let svc = local
                .get(&(name.clone(), tag.clone()))
                .ok_or_else(|| anyhow::anyhow!("{name} is not registered on this node"))?;
            let l = svc
                .listener
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("{name} was registered without a listener"))?;
            l.set_target(target);
            // A held listener (None) is saved with its last port: after a crash, forwarding to
            // the last process beats holding callers for a process nobody will announce.
            if target.is_some() {
                save_local(&local);
            }
            l.forwarding()
        };
        // Holding for a restart: the answer waits until requests the old process already has
        // are done, so stopping it next cuts none of them off (bounded: keep-alive connections
        // may never finish on their own).
        let drained = match target {
            None => crate::daemon::listener::drain(&forwarding, DRAIN_TIMEOUT).await,
            Some(_) => true,
        };
        Ok(Retargeted {
            name,
            tag,
            target,
            drained,
        })
    }

    async fn drain(
        &self,
        name: String,
        tag: Option<String>,
        port: u16,
        timeout: Duration,
    ) -> anyhow::Result<DrainReport> {
        let conns = {
            let local = self.local.lock().await;
            let svc = local
                .get(&(name.clone(), tag.clone()))
                .ok_or_else(|| anyhow::anyhow!("{name} is not registered on this node"))?;
            svc.listener
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("{name} was registered without a listener"))?
                .conns()
        };
        // Waits outside the lock: other services' requests go on meanwhile.
        Ok(conns.drain_port(port, timeout).await)
    }

    async fn unregister(&self, name: String, tag: Option<String>) -> anyhow::Result<Unregistered> {
        let svc = {
            let mut local = self.local.lock().await;
            let svc = local.remove(&(name.clone(), tag.clone()));
            save_local(&local);
            self.traffic
                .set_local(local.values().map(|s| s.instance.address).collect());
            svc
        };
        self.link
            .request(ControlRequest::Unregister {
                name: name.clone(),
                tag: tag.clone(),
            })
            .await?;
        if let Some(svc) = svc {
            drop(svc.listener);
            device::remove_address(&self.interface, svc.instance.address);
        }
        self.link.poke();
        Ok(Unregistered { removed: name, tag })
    }
}

/// A local registration as remembered across daemon restarts.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedService {
    name: String,
    tag: Option<String>,
    port: u16,
    target: Option<u16>,
}

/// Where local registrations are remembered: the run directory, so a reboot forgets them
/// (nothing runs any more) but a killed daemon finds them.
fn local_file() -> std::path::PathBuf {
    paths::run_dir().join("services.json")
}

fn save_local(local: &HashMap<(String, Option<String>), LocalService>) {
    let list: Vec<SavedService> = local
        .iter()
        .map(|((name, tag), svc)| SavedService {
            name: name.clone(),
            tag: tag.clone(),
            port: svc.instance.port,
            target: svc.listener.as_ref().and_then(|l| l.target()),
        })
        .collect();
    let bytes = serde_json::to_vec(&list).unwrap_or_default();
    if let Err(e) = overlay_sys::statefile::write_atomic(&local_file(), &bytes, 0o600) {
        tracing::warn!("cannot remember local services: {e}");
    }
}

fn load_local() -> Vec<SavedService> {
    std::fs::read(local_file())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

impl overlay_sys::local_api::Handler for Node {
    type Request = DaemonRequest;

    async fn handle(&self, request: DaemonRequest) -> Answer {
        match request {
            DaemonRequest::Status(r) => r.ok(self.status()),
            DaemonRequest::Shutdown(r) => {
                self.stop.notify_one();
                r.ok(Stopping { stopping: true })
            }
            DaemonRequest::Leave(r) => {
                let result = self.leave().await.map(|()| {
                    let _ = std::fs::remove_file(local_file());
                    self.stop.notify_one();
                    Left {
                        left: self.settings.name.clone(),
                    }
                });
                r.answer(result)
            }
            DaemonRequest::Services(r) => r.ok(self.services()),
            DaemonRequest::Resolve(r) => r.ok(self.resolve(&r.name).await),
            DaemonRequest::Register(r) => {
                let result = self
                    .register(r.name.clone(), r.tag.clone(), r.port, r.target, r.hold)
                    .await;
                r.answer(result)
            }
            DaemonRequest::Target(r) => {
                let result = self
                    .set_target(r.name.clone(), r.tag.clone(), r.target)
                    .await;
                r.answer(result)
            }
            DaemonRequest::Unregister(r) => {
                let result = self.unregister(r.name.clone(), r.tag.clone()).await;
                r.answer(result)
            }
            DaemonRequest::Drain(r) => {
                let timeout = Duration::from_millis(r.timeout_ms.min(3_600_000));
                let result = self
                    .drain(r.name.clone(), r.tag.clone(), r.port, timeout)
                    .await;
                r.answer(result)
            }
            DaemonRequest::Traffic(r) => match self.unknown_service(&r.query) {
                Some(message) => r.answer(Err(message)),
                None => r.ok(crate::traffic::server::page(&r.query, &self.traffic)),
            },
            DaemonRequest::Intercept(r) => {
                let started = intercept::start(
                    &self.link,
                    &self.intercepts,
                    &r.service,
                    r.header.as_deref(),
                )
                .await;
                r.answer(started)
            }
            DaemonRequest::InterceptStop(r) => {
                let stopped = intercept::stop(&self.link, &self.intercepts, &r.service).await;
                r.answer(stopped)
            }
            DaemonRequest::Intercepts(r) => r.answer(intercept::list(&self.link).await),
            DaemonRequest::Record(r) => {
                let was = self.traffic.set_recording(r.on);
                r.ok(Recording { on: r.on, was })
            }
            DaemonRequest::Inspect(r) => r.ok(match self.traffic.private_url() {
                Some(url) => InspectReply {
                    url: Some(url),
                    token: Some(self.traffic.secret.hex()),
                },
                None => InspectReply {
                    url: None,
                    token: None,
                },
            }),
        }
    }
}

impl Node {
    /// One sentence naming the known services when the query asks for a service nobody has.
    fn unknown_service(&self, query: &str) -> Option<String> {
        let pairs = overlay_core::traffic::capture::filter::query_pairs(query);
        let asked = pairs
            .iter()
            .find(|(k, v)| k == "service" && !v.is_empty())?;
        let names = self.traffic.service_names();
        if names.contains(&asked.1) {
            return None;
        }
        Some(format!(
            "no service is called {}; the services are: {}",
            asked.1,
            names.join(", ")
        ))
    }
}

/// Runs the daemon until SIGTERM, Ctrl-C or `overlay down`.
pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(path) => from_wg_config(path, args.name.clone())?,
        None => from_state()?,
    };
    let s = &cfg.settings;
    let endpoint = s
        .endpoints
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no relay endpoint is configured"))?;
    let tunnel = Tunnel::new(TunnelConfig {
        private_key: cfg.private_key,
        relay_key: cfg.relay_key,
        endpoint,
        allowed: cfg.allowed.clone(),
        keepalive: cfg.keepalive,
        cpu_latency: args.cpu_latency,
        relay_address: s.relay_address,
        url: args.relay_url.clone().or_else(|| s.url.clone()),
        transport: args.transport.unwrap_or(s.transport),
    })
    .await?;
    // Before anything is changed (also when a service manager starts the daemon).
    device::refuse_route_conflicts(&args.interface, s.network).await?;
    let dev = Arc::new(device::create(
        &args.interface,
        s.address,
        s.network,
        s.mtu,
    )?);
    for extra in cfg.allowed.iter().filter(|p| **p != s.network) {
        device::add_route(&args.interface, *extra)?;
    }
    let owner = s
        .owner_uid
        .or_else(|| std::env::var("SUDO_UID").ok().and_then(|v| v.parse().ok()));
    device::add_address(&args.interface, DNS_ADDR)?;
    let link = RelayLink::new(tunnel.clone(), s.address, s.relay_address);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(link.clone().receive());
    tasks.spawn(link.clone().sync());
    tasks.spawn({
        let link = link.clone();
        let tunnel = tunnel.clone();
        async move {
            let mut rtt = MinRtt::default();
            loop {
                // The answer (or its absence) shows in the tunnel's last_rx; errors are expected
                // while the relay is away. Its round trip tells how near the relay is, unless
                // it had to wait for a handshake.
                let handshaken = tunnel.handshaken();
                let sent = Instant::now();
                if link.request(ControlRequest::Ping).await.is_ok() && handshaken {
                    rtt.sample(sent.elapsed());
                }
                let pause = match rtt.get() {
                    Some(floor) => {
                        tunnel.set_relay_rtt(floor);
                        LIVENESS_PING
                    }
                    None => RTT_PROBE,
                };
                tokio::time::sleep(pause).await;
            }
        }
    });
    // The system resolver: only for a node that joined (a --config node is for tests and
    // service managers, which set DNS up themselves).
    let resolver_change = if args.config.is_none() && !args.no_dns_config {
        match resolvconf::apply(
            &paths::state_dir(),
            Path::new(RESOLV_CONF),
            IpAddr::V4(DNS_ADDR),
            &s.domain,
            &args.interface,
        ) {
            Ok(x) => Some(x),
            Err(e) => {
                tracing::warn!("cannot configure the system resolver ({e:#}); overlay names work only through {DNS_ADDR} directly");
                None
            }
        }
    } else {
        None
    };
    let upstream = match &resolver_change {
        Some((_, up)) => up.servers.clone(),
        None => {
            let text = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
            resolvconf::parse_resolv_conf(&text, IpAddr::V4(DNS_ADDR)).servers
        }
    };
    let dns = DnsServer::new(
        s.name.clone(),
        s.address,
        s.domain.clone(),
        s.network,
        link.directory.clone(),
        upstream,
    );
    for ip in [DNS_ADDR, s.address] {
        let addr = SocketAddr::from((ip, 53));
        // One UDP receive loop per core, sharing the port.
        for _ in 0..std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(4)
        {
            tasks.spawn(dns.clone().serve_udp(addr));
        }
        tasks.spawn(dns.clone().serve_tcp(addr));
    }
    let traffic = crate::traffic::Traffic::new(
        &args.traffic,
        link.directory.clone(),
        s.name.clone(),
        s.address,
        s.relay_address,
        link.callers.clone(),
    );
    crate::traffic::start(&args.traffic, &traffic, &tunnel, owner).await;
    let node = Arc::new(Node {
        settings: cfg.settings.clone(),
        tunnel: tunnel.clone(),
        link: link.clone(),
        interface: args.interface.clone(),
        local: tokio::sync::Mutex::new(HashMap::new()),
        stop: Notify::new(),
        traffic,
        dns: dns.clone(),
        intercepts: intercept::Mine::default(),
    });
    tracing::info!(node = %node.settings.name, address = %node.settings.address, interface = %args.interface, "node up");
    let sock_path = paths::control_socket();
    let control = api::bind(&sock_path, owner)?;
    tokio::spawn(control.serve(node.clone()));
    let data = tokio::spawn(tunnel.run(dev));
    tokio::spawn(node.clone().restore_local());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = data => r.map_err(anyhow::Error::from).and_then(|r| r),
        Some(r) = tasks.join_next() => r.map_err(anyhow::Error::from).and_then(|r| r),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        _ = node.stop.notified() => Ok(()),
    };
    // The remote environment's callers go back to the remote service at once.
    intercept::stop_all(&node.link, &node.intercepts).await;
    if let Some((change, _)) = &resolver_change {
        if let Err(e) = resolvconf::restore(change) {
            tracing::error!("cannot restore the system resolver: {e:#}");
        }
    }
    let _ = std::fs::remove_file(&sock_path);
    tracing::info!("node down");
    result
}

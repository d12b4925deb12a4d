//! The read-only tap on the TUN: packets leaving and arriving are offered to a capture task
//! (never waited for), which reassembles outgoing TCP connections into records and writes pcap
//! for `overlay capture`.

use super::{now_ms, now_us, Traffic};
use overlay_core::net::wire::{self, IpProtocol};
use overlay_core::traffic::capture::conn::ConnMeta;
use overlay_core::traffic::capture::pcap;
use overlay_core::traffic::capture::tcp::{FlowKey, TcpEnd, TcpEvent, TcpLimits, Tracker};
use overlay_core::traffic::capture::{ConnectionCapture, Direction, FlowEnd, Process};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Packets waiting for the capture task; more are dropped (and counted).
const QUEUE: usize = 8192;
/// pcap chunks waiting for one `overlay capture` client.
const PCAP_QUEUE: usize = 4096;
/// Process names found and not yet given to their connections.
const OWNER_QUEUE: usize = 256;
/// How often idle connections are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);

struct TapPacket {
    data: Vec<u8>,
    outbound: bool,
    ts_us: u64,
}

/// The data path's handle: cheap to call for every packet.
#[derive(Clone)]
pub struct Tap {
    tx: mpsc::Sender<TapPacket>,
    traffic: Arc<Traffic>,
}

impl Tap {
    /// Offers one plaintext IPv4 packet (`outbound`: leaving this node). Never waits.
    pub fn packet(&self, p: &[u8], outbound: bool) {
        let t = &self.traffic;
        if !t.pcap.active() {
            if !t.recording() {
                return;
            }
            let Ok(ip) = wire::ipv4(p) else {
                return;
            };
            if ip.next_header() != IpProtocol::Tcp {
                return;
            }
            // Connections of local services' listeners are captured there.
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let ours = if outbound { src } else { dst };
            if t.is_local_service(ours) {
                return;
            }
        }
        let pkt = TapPacket {
            data: p.to_vec(),
            outbound,
            ts_us: now_us(),
        };
        if self.tx.try_send(pkt).is_err() {
            t.drop_one();
        }
    }
}

/// Where the lookup of an outgoing connection's local process answers: the capture task.
struct Named {
    key: FlowKey,
    tx: mpsc::Sender<(FlowKey, Process)>,
}

impl super::owner::Answer for Named {
    fn wanted(&self) -> bool {
        !self.tx.is_closed()
    }

    fn answer(self: Box<Self>, process: Option<Process>) {
        if let Some(p) = process {
            let _ = self.tx.try_send((self.key, p));
        }
    }
}

/// Starts the capture task; returns the tap for the tunnel.
pub fn start(traffic: Arc<Traffic>) -> Tap {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(rx, traffic.clone()));
    Tap { tx, traffic }
}

async fn run(mut rx: mpsc::Receiver<TapPacket>, traffic: Arc<Traffic>) {
    let mut tracker = Tracker::new(TcpLimits::default());
    let mut conns: HashMap<FlowKey, ConnectionCapture> = HashMap::new();
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    // Names of the local processes behind new connections, found off this task.
    let (owner_tx, mut owners) = mpsc::channel::<(FlowKey, Process)>(OWNER_QUEUE);
    loop {
        tokio::select! {
            p = rx.recv() => {
                let Some(p) = p else { return };
                traffic.pcap.publish(&p.data, p.ts_us);
                // The tracker looks at TCP only.
                if traffic.recording() {
                    let now = p.ts_us / 1000;
                    let outbound = p.outbound;
                    tracker.packet(&p.data, now, |k| {
                        outbound && !traffic.is_local_service(*k.client.ip())
                    });
                    events(&mut tracker, &mut conns, &traffic, now, &owner_tx);
                }
            }
            Some((k, p)) = owners.recv() => {
                if let Some(c) = conns.get_mut(&k) {
                    c.set_client_process(p);
                }
            }
            _ = tick.tick() => {
                let now = now_ms();
                tracker.expire(now);
                events(&mut tracker, &mut conns, &traffic, now, &owner_tx);
            }
        }
    }
}

fn events(
    tracker: &mut Tracker,
    conns: &mut HashMap<FlowKey, ConnectionCapture>,
    traffic: &Arc<Traffic>,
    now: u64,
    owner_tx: &mpsc::Sender<(FlowKey, Process)>,
) {
    while let Some(ev) = tracker.poll() {
        match ev {
            TcpEvent::Open(k) => {
                let named = Named {
                    key: k,
                    tx: owner_tx.clone(),
                };
                super::owner::ask(k.client, k.server, Box::new(named));
                let client = SocketAddr::V4(k.client);
                let server = SocketAddr::V4(k.server);
                let client_name: Option<Arc<str>> = traffic.name_of(client).map(Into::into);
                let meta = ConnMeta {
                    service: client_name
                        .clone()
                        .unwrap_or_else(|| traffic.node_name().into()),
                    direction: Direction::Out,
                    client: client.to_string().into(),
                    client_name,
                    server: server.to_string().into(),
                    server_name: traffic.name_of(server).map(Into::into),
                };
                conns.insert(k, ConnectionCapture::new(meta, traffic.limits, now));
            }
            TcpEvent::Data(k, side, d) => {
                if let Some(c) = conns.get_mut(&k) {
                    c.data(side, &d, now);
                    traffic.collect(c);
                }
            }
            TcpEvent::Gap(k, side, n) => {
                if let Some(c) = conns.get_mut(&k) {
                    c.gap(side, n, now);
                    traffic.collect(c);
                }
            }
            TcpEvent::Close(k, end) => {
                if let Some(mut c) = conns.remove(&k) {
                    let end = match end {
                        TcpEnd::Fin => FlowEnd::Closed,
                        TcpEnd::Reset => FlowEnd::Reset,
                        TcpEnd::Idle => FlowEnd::Idle,
                        TcpEnd::Evicted => FlowEnd::Evicted,
                    };
                    c.close(end, now);
                    traffic.collect(&mut c);
                }
            }
        }
    }
}

struct PcapSub {
    /// Only packets from or to these addresses; `None`: all.
    only: Option<HashSet<Ipv4Addr>>,
    tx: mpsc::Sender<Vec<u8>>,
}

/// The `overlay capture` clients.
#[derive(Default)]
pub struct PcapSubscribers {
    subs: Mutex<Vec<PcapSub>>,
    count: AtomicUsize,
}

impl PcapSubscribers {
    /// Whether anyone listens (the tap then offers every packet).
    pub fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Adds a client; it receives pcap packet records (without the file header).
    pub fn subscribe(&self, only: Option<HashSet<Ipv4Addr>>) -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel(PCAP_QUEUE);
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.push(PcapSub { only, tx });
        self.count.store(subs.len(), Ordering::Relaxed);
        rx
    }

    /// Offers made-up packets (a laptop-local connection's) to the clients.
    pub fn publish_all(&self, pkts: &[Vec<u8>], ts_us: u64) {
        for p in pkts {
            self.publish(p, ts_us);
        }
    }

    fn publish(&self, pkt: &[u8], ts_us: u64) {
        if !self.active() {
            return;
        }
        let addrs = wire::addresses(pkt).ok();
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| !s.tx.is_closed());
        for s in subs.iter() {
            let wanted = match (&s.only, addrs) {
                (None, _) => true,
                (Some(only), Some((a, b))) => only.contains(&a) || only.contains(&b),
                (Some(_), None) => false,
            };
            if wanted {
                let mut rec = Vec::with_capacity(pkt.len() + 16);
                pcap::write_packet(&mut rec, ts_us, pkt);
                let _ = s.tx.try_send(rec);
            }
        }
        self.count.store(subs.len(), Ordering::Relaxed);
    }
}

/// Serves `overlay capture` on a unix socket in the run directory: the client sends one JSON
/// line (`{"service": "api", "duration_ms": 10000}`), then reads a pcap stream until the
/// duration ends or it closes the connection. Root and `owner_uid` only, by the local API's
/// socket access and peer-credential check (a refused connection is just closed: the client
/// reads pcap, not answers).
pub async fn serve_capture(
    path: std::path::PathBuf,
    owner_uid: Option<u32>,
    traffic: Arc<Traffic>,
) -> anyhow::Result<()> {
    use overlay_sys::local_api::{Access, Listener};
    if let Some(dir) = path.parent() {
        overlay_sys::statefile::ensure_dir(dir, 0o755)?;
    }
    let listener = Listener::bind(&path, Access::private(owner_uid))?;
    loop {
        let Ok(stream) = listener.accept().await else {
            tracing::warn!("refused a capture connection from another user");
            continue;
        };
        let t = traffic.clone();
        tokio::spawn(async move {
            if let Err(e) = capture_client(stream, t).await {
                tracing::debug!("capture client: {e}");
            }
        });
    }
}

#[derive(serde::Deserialize)]
struct CaptureRequest {
    service: Option<String>,
    duration_ms: Option<u64>,
}

async fn capture_client(
    stream: tokio::net::UnixStream,
    traffic: Arc<Traffic>,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r.take(4096));
    reader.read_line(&mut line).await?;
    let req: CaptureRequest = serde_json::from_str(&line)?;
    let only = match &req.service {
        Some(s) => {
            let a = traffic.addresses_of(s);
            if a.is_empty() {
                let msg = format!("ERROR no service is called {s}\n");
                w.write_all(msg.as_bytes()).await?;
                return Ok(());
            }
            Some(a)
        }
        None => None,
    };
    let mut rx = traffic.pcap.subscribe(only);
    w.write_all(&pcap::file_header()).await?;
    let deadline = req
        .duration_ms
        .map(|d| tokio::time::Instant::now() + Duration::from_millis(d));
    let mut closed = [0u8; 1];
    let mut rest = reader.into_inner();
    loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            rec = rx.recv() => {
                let Some(rec) = rec else { return Ok(()) };
                w.write_all(&rec).await?;
            }
            _ = sleep => return Ok(()),
            // The client closed (or sent something): stop.
            _ = rest.read(&mut closed) => return Ok(()),
        }
    }
}

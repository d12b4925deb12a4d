//! Runs the sans-IO hub on a UDP socket, in a thread of its own.
//!
//! One thread owns the hub, so there are no locks on the data path: it receives a datagram,
//! lets the hub decide, and sends what the hub produced, with blocking calls. Ticks happen on
//! the receive timeout; admin requests arrive over a channel and are served between datagrams.

use crate::admin::{AdminCall, AdminRequest, AdminResponse};
use crate::state::StateDir;
use overlay_core::relay::{Hub, Wire};
use serde_json::json;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often timers run; also the longest an admin request waits while the port is idle.
const TICK: Duration = Duration::from_millis(100);

struct UdpWire<'a> {
    sock: &'a UdpSocket,
}

impl Wire for UdpWire<'_> {
    fn send(&mut self, to: SocketAddr, d: &[u8]) {
        if let Err(e) = self.sock.send_to(d, to) {
            tracing::debug!(%to, "udp send: {e}");
        }
    }

    fn send_to_gateway(&mut self, node: &str, target: &str, _packet: &[u8]) {
        // The userspace gateway is not wired into this driver yet.
        tracing::debug!(
            node,
            target,
            "no gateway: packet for a remote service dropped"
        );
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Watches the catalog file and hands every good version to the hub.
struct CatalogWatch {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
    next_check: Instant,
}

impl CatalogWatch {
    /// Re-reads the file when its modification time or size changed; a broken file keeps the
    /// last good catalog and says which line is wrong.
    fn poll(&mut self, hub: &mut Hub<StateDir>) {
        if Instant::now() < self.next_check {
            return;
        }
        self.next_check = Instant::now() + Duration::from_secs(1);
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()));
        if stamp == self.seen {
            return;
        }
        self.seen = stamp;
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), "cannot read the catalog ({e}); keeping the last good one");
                return;
            }
        };
        match overlay_core::catalog::parse(&text) {
            Ok(entries) => match hub.set_catalog(entries) {
                Ok(u) => {
                    tracing::info!(file = %self.path.display(), changes = u.changes, "catalog loaded")
                }
                Err(e) => tracing::warn!("catalog not applied: {e}"),
            },
            Err(e) => tracing::warn!(
                file = %self.path.display(),
                "catalog {e}; keeping the last good catalog"
            ),
        }
    }
}

/// Runs the hub until the socket fails.
pub fn run(
    mut hub: Hub<StateDir>,
    sock: UdpSocket,
    admin: Receiver<AdminCall>,
    catalog: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut catalog = catalog.map(|path| CatalogWatch {
        path,
        seen: None,
        next_check: Instant::now(),
    });
    sock.set_read_timeout(Some(TICK))?;
    let mut buf = vec![0u8; 65536];
    hub.greet(&mut UdpWire { sock: &sock });
    let mut next_tick = Instant::now() + TICK;
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                hub.on_datagram(from, &buf[..n], unix_now(), &mut UdpWire { sock: &sock })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            // ICMP errors for earlier sends surface here; they are not fatal.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(anyhow::anyhow!("udp receive failed: {e}")),
        }
        if Instant::now() >= next_tick {
            if let Some(c) = catalog.as_mut() {
                c.poll(&mut hub);
            }
            hub.on_tick(unix_now(), &mut UdpWire { sock: &sock });
            next_tick = Instant::now() + TICK;
        }
        while let Ok((req, reply)) = admin.try_recv() {
            let _ = reply.send(answer(&mut hub, req));
        }
    }
}

fn answer(hub: &mut Hub<StateDir>, req: AdminRequest) -> AdminResponse {
    let now = unix_now();
    let result: Result<serde_json::Value, String> = match req {
        AdminRequest::PeerAdd { name, public_key } => hub
            .peer_add(&name, &public_key, now)
            .map(|a| json!(a))
            .map_err(|e| e.to_string()),
        AdminRequest::PeerRemove { name } => hub
            .peer_remove(&name)
            .map(|_| json!({ "removed": name }))
            .map_err(|e| e.to_string()),
        AdminRequest::Nodes => Ok(json!(hub.nodes())),
        AdminRequest::Stats => Ok(json!(hub.stats(now))),
        AdminRequest::TokenCreate {
            uses,
            ttl_secs,
            name_prefix,
        } => hub
            .token_create(uses, ttl_secs, name_prefix, now)
            .map(|t| json!(t))
            .map_err(|e| e.to_string()),
        AdminRequest::TokenList => Ok(json!(hub.tokens())),
        AdminRequest::Services => Ok(json!(hub.services())),
        AdminRequest::TokenRevoke { id } => hub
            .token_revoke(&id)
            .map(|_| json!({ "revoked": id }))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(data) => AdminResponse::Ok { data },
        Err(message) => AdminResponse::Error { message },
    }
}

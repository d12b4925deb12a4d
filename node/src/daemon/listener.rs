//! A local service's listener on its overlay address: accepts callers and forwards each
//! connection to the process's local port, holding new connections while the process restarts.
//! Every forwarded connection is in a table by the local port it went to, so a restart can
//! drain the old process: its connections stay until they close or the drain timeout passes,
//! then they are closed cleanly (WebSocket clients get close code 1012).

use crate::traffic::splice::Ctl;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::traffic::Traffic;

/// How long a held connection waits for the service to come back.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections open at once per service; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 4096;

/// A running listener; dropping it stops accepting (open connections finish on their own).
pub struct Listener {
    target: watch::Sender<Option<u16>>,
    task: JoinHandle<()>,
    /// Connections currently forwarded to a process (not the held ones).
    forwarding: Arc<AtomicUsize>,
    /// The forwarded connections, by id.
    conns: Arc<Conns>,
    /// The address it listens on.
    pub addr: SocketAddr,
}

impl Listener {
    /// Binds `addr` and forwards to `127.0.0.1:target` (or holds while `target` is `None`),
    /// teeing every connection into `capture` (the traffic and the service's name) when given.
    pub async fn start(
        addr: SocketAddr,
        target: Option<u16>,
        capture: Option<(Arc<Traffic>, String)>,
    ) -> anyhow::Result<Listener> {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.set_reuseaddr(true)?;
        sock.bind(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let listener = sock.listen(1024)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(target);
        let forwarding = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(Conns::default());
        let task = tokio::spawn(accept_loop(
            listener,
            rx,
            capture.map(Arc::new),
            forwarding.clone(),
            conns.clone(),
        ));
        Ok(Listener {
            target: tx,
            task,
            forwarding,
            conns,
            addr,
        })
    }

    /// Points the listener at a new local port, or holds new connections with `None`.
    pub fn set_target(&self, target: Option<u16>) {
        self.target.send_replace(target);
    }

    /// The current local port.
    pub fn target(&self) -> Option<u16> {
        *self.target.borrow()
    }

    /// A handle on the number of connections being forwarded to a process right now.
    pub fn forwarding(&self) -> Arc<AtomicUsize> {
        self.forwarding.clone()
    }

    /// A handle on the table of forwarded connections.
    pub fn conns(&self) -> Arc<Conns> {
        self.conns.clone()
    }
}

/// One forwarded connection.
struct Conn {
    port: u16,
    close: watch::Sender<bool>,
    websocket: Arc<AtomicBool>,
}

/// The forwarded connections of a listener (bounded by [`MAX_CONNECTIONS`]: an entry lives as
/// long as its connection's task).
#[derive(Default)]
pub struct Conns {
    map: Mutex<HashMap<u64, Conn>>,
    next: AtomicUsize,
}

/// What a drain did (the daemon's answer to a drain request).
pub use overlay_core::api::daemon::DrainReport;

/// How long closed connections get to finish their close.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

impl Conns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Conn>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(self: &Arc<Self>, port: u16) -> (ConnGuard, Ctl) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        let (close, rx) = watch::channel(false);
        let websocket = Arc::new(AtomicBool::new(false));
        self.lock().insert(
            id,
            Conn {
                port,
                close,
                websocket: websocket.clone(),
            },
        );
        let ctl = Ctl {
            close: rx,
            websocket,
        };
        (
            ConnGuard {
                conns: self.clone(),
                id,
            },
            ctl,
        )
    }

    fn still_open(&self, ids: &[u64]) -> Vec<u64> {
        let map = self.lock();
        ids.iter()
            .copied()
            .filter(|i| map.contains_key(i))
            .collect()
    }

    /// Lets the connections to `port` finish until `timeout`, then closes the rest cleanly.
    pub async fn drain_port(&self, port: u16, timeout: Duration) -> DrainReport {
        let ids: Vec<u64> = {
            let map = self.lock();
            map.iter()
                .filter(|(_, c)| c.port == port)
                .map(|(&id, _)| id)
                .collect()
        };
        let open = ids.len();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut left = self.still_open(&ids);
        while !left.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            left = self.still_open(&ids);
        }
        let mut websockets = 0;
        {
            let map = self.lock();
            for id in &left {
                if let Some(c) = map.get(id) {
                    if c.websocket.load(Ordering::Relaxed) {
                        websockets += 1;
                    }
                    c.close.send_replace(true);
                }
            }
        }
        let end = tokio::time::Instant::now() + CLOSE_GRACE;
        while !self.still_open(&left).is_empty() && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        DrainReport {
            open,
            drained: open - left.len(),
            closed: left.len(),
            websockets,
        }
    }
}

/// Removes a connection from the table when its task ends.
struct ConnGuard {
    conns: Arc<Conns>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.conns.lock().remove(&self.id);
    }
}

/// Waits until no connection is forwarded any more, or `timeout` passes: after holding new
/// callers for a restart, requests the old process already has get to finish before it is
/// stopped. Returns whether it drained.
pub async fn drain(forwarding: &AtomicUsize, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while forwarding.load(Ordering::SeqCst) > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: watch::Receiver<Option<u16>>,
    capture: Option<Arc<(Arc<Traffic>, String)>>,
    forwarding: Arc<AtomicUsize>,
    conns: Arc<Conns>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let target = target.clone();
        let capture = capture.clone();
        let forwarding = forwarding.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            if let Err(e) = forward(client, target, capture.as_deref(), &forwarding, &conns).await {
                tracing::debug!(%peer, "connection: {e}");
            }
            drop(permit);
        });
    }
}

/// Waits for a target (while the service restarts) and splices the two connections.
async fn forward(
    mut client: TcpStream,
    mut target: watch::Receiver<Option<u16>>,
    capture: Option<&(Arc<Traffic>, String)>,
    forwarding: &AtomicUsize,
    conns: &Arc<Conns>,
) -> anyhow::Result<()> {
    let _ = client.set_nodelay(true);
    // Counted before the target is read, so a restart that holds and then drains can never
    // miss a connection that is about to go to the old process.
    let port = tokio::time::timeout(HOLD_TIMEOUT, async {
        loop {
            forwarding.fetch_add(1, Ordering::SeqCst);
            if let Some(p) = *target.borrow_and_update() {
                return Ok(p);
            }
            forwarding.fetch_sub(1, Ordering::SeqCst);
            target.changed().await?;
        }
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "the service did not come back within {} s",
            HOLD_TIMEOUT.as_secs()
        )
    })?
    .map_err(|_: watch::error::RecvError| anyhow::anyhow!("the service was removed"))?;
    let (_entry, ctl) = conns.add(port);
    let result = async {
        let mut upstream = TcpStream::connect(("127.0.0.1", port)).await?;
        let _ = upstream.set_nodelay(true);
        crate::traffic::splice::splice(&mut client, &mut upstream, capture, ctl).await?;
        anyhow::Ok(())
    }
    .await;
    forwarding.fetch_sub(1, Ordering::SeqCst);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    async fn roundtrip(addr: SocketAddr, msg: &[u8]) -> Vec<u8> {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        c.read_exact(&mut buf).await.unwrap();
        buf
    }

    #[tokio::test]
    async fn forwards_and_holds_during_a_restart() {
        let first = echo_server().await;
        let l = Listener::start("127.0.0.1:0".parse().unwrap(), Some(first), None)
            .await
            .unwrap();
        assert_eq!(roundtrip(l.addr, b"one").await, b"one");
        // The process restarts: new callers are held, not refused.
        l.set_target(None);
        let addr = l.addr;
        let held = tokio::spawn(async move { roundtrip(addr, b"held").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !held.is_finished(),
            "a held connection must wait for the new process"
        );
        let second = echo_server().await;
        l.set_target(Some(second));
        let got = tokio::time::timeout(Duration::from_secs(5), held)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"held");
        assert_eq!(l.target(), Some(second));
    }

    #[tokio::test]
    async fn drain_waits_for_requests_in_flight() {
        let port = echo_server().await;
        let l = Listener::start("127.0.0.1:0".parse().unwrap(), Some(port), None)
            .await
            .unwrap();
        let mut c = TcpStream::connect(l.addr).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).await.unwrap();
        let forwarding = l.forwarding();
        assert_eq!(forwarding.load(Ordering::SeqCst), 1);
        assert!(!drain(&forwarding, Duration::from_millis(100)).await);
        drop(c);
        assert!(drain(&forwarding, Duration::from_secs(2)).await);
    }

    #[tokio::test]
    async fn a_restart_drains_the_old_port_then_closes_what_is_left() {
        let old = echo_server().await;
        let l = Listener::start("127.0.0.1:0".parse().unwrap(), Some(old), None)
            .await
            .unwrap();
        let mut kept = TcpStream::connect(l.addr).await.unwrap();
        assert_eq!(echo(&mut kept, b"a").await, b"a");
        let mut closes = TcpStream::connect(l.addr).await.unwrap();
        assert_eq!(echo(&mut closes, b"b").await, b"b");
        let new = echo_server().await;
        l.set_target(Some(new));
        let conns = l.conns();
        let drain =
            tokio::spawn(async move { conns.drain_port(old, Duration::from_millis(500)).await });
        // Still served by the old process while the drain runs.
        assert_eq!(echo(&mut kept, b"still").await, b"still");
        drop(closes);
        let report = drain.await.unwrap();
        assert_eq!(
            report,
            DrainReport {
                open: 2,
                drained: 1,
                closed: 1,
                websockets: 0
            }
        );
        // The connection left open was closed with a FIN: a clean end of stream.
        let mut rest = Vec::new();
        let n = kept.read_to_end(&mut rest).await.unwrap();
        assert_eq!(n, 0);
        assert_eq!(roundtrip(l.addr, b"new").await, b"new");
    }

    async fn echo(c: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        c.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        c.read_exact(&mut buf).await.unwrap();
        buf
    }
}

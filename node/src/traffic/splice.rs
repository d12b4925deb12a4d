//! A listener's splice with a tee: both directions are copied as usual, and every chunk is
//! parsed into the connection's capture right after it was written on, by the same task. A
//! restart's drain can end a connection cleanly (a WebSocket close frame 1012, then FIN)
//! through [`Ctl`].

use super::{now_ms, owner, Traffic, MAX_IN_FLIGHT};
use bytes::{Bytes, BytesMut};
use overlay_core::traffic::capture::conn::ConnMeta;
use overlay_core::traffic::capture::synth::TcpSynth;
use overlay_core::traffic::capture::{
    ConnectionCapture, Direction, FlowEnd, Process, RemoteCaller,
};
use overlay_core::traffic::http1::Side;
use overlay_core::traffic::wsframe::{close_frame, Upgrade, SERVICE_RESTART};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Read size of the splice.
const CHUNK: usize = 32 * 1024;
/// How long a connection's capture waits for the name of its local caller before it goes on
/// without (its chunks are held meanwhile; checked when the next chunk comes, and the end of
/// the connection ends the wait too).
const OWNER_WAIT: Duration = Duration::from_millis(1000);
/// Chunks, and bytes, one connection holds while its caller's name is looked up; past either
/// the capture goes on without waiting (later records still get the name).
const HELD_CHUNKS: usize = 64;
const HELD_BYTES: usize = 1 << 20;

/// A held chunk at least this big is kept as a view of the splice's read rather than copied:
/// with a connection per request a response's body is held whole, and copying it (a 16 KiB
/// allocation and copy, then the ring's own copy) cost more than the rest of the hold. A
/// smaller one is copied, so that many small reads do not each keep a whole read buffer.
const HOLD_AS_VIEW: usize = 4096;

/// Bytes that wait while the caller's name is looked up.
struct Held {
    side: Side,
    data: Bytes,
    /// `data` is a view of the splice's read (not a copy).
    view: bool,
    at_ms: u64,
}

/// One connection's capture. Both directions feed it inline, on the splice's own task: no
/// copy of the bytes, no queue, no wake-up of another task per chunk (these were most of the
/// capture's cost). Only while a laptop-local caller's process is looked up (once per
/// connection, at most [`OWNER_WAIT`] and never past the connection's end) are chunks held.
struct Capture {
    traffic: Arc<Traffic>,
    state: Mutex<State>,
}

struct State {
    /// Built at the first bytes: a connection from the relay has been announced by then (the
    /// notice leaves the relay before the connection's SYN).
    cap: Option<ConnectionCapture>,
    /// The caller's process is being looked up: events wait in `held`.
    looking: bool,
    held: Vec<Held>,
    held_bytes: usize,
    /// Packets made up from the bytes, for `overlay capture` (a local caller's connection
    /// never crosses the TUN).
    synth: Option<TcpSynth>,
    service: String,
    client: SocketAddr,
    server: SocketAddr,
    local: bool,
    started: u64,
}

impl Capture {
    /// Starts the capture of one connection into `service`.
    fn start(
        traffic: &Arc<Traffic>,
        service: &str,
        client: SocketAddr,
        server: SocketAddr,
    ) -> Arc<Capture> {
        // A caller on this machine: named by its process (when it can be known), never by the
        // service whose address it used as its source.
        let local = traffic.is_local_caller(client.ip());
        let ends = match (client, server) {
            (SocketAddr::V4(c), SocketAddr::V4(s)) if local => Some((c, s)),
            _ => None,
        };
        let capture = Arc::new(Capture {
            traffic: traffic.clone(),
            state: Mutex::new(State {
                cap: None,
                looking: ends.is_some(),
                held: Vec::new(),
                held_bytes: 0,
                synth: ends.map(|(c, s)| TcpSynth::new(c, s)),
                service: service.to_string(),
                client,
                server,
                local,
                started: now_ms(),
            }),
        });
        if let Some((c, s)) = ends {
            let asked = owner::ask(c, s, Box::new(Named(Arc::downgrade(&capture))));
            if !asked {
                capture.state().looking = false;
            }
        }
        capture
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes from `side`, just written on; `chunk`: they are this read, shared (a response's
    /// body in it is then kept as a view of it until the ring copies it).
    fn data(&self, side: Side, data: &[u8], chunk: Option<&Bytes>) {
        let now = now_ms();
        let mut st = self.state();
        if st.looking && now.saturating_sub(st.started) > OWNER_WAIT.as_millis() as u64 {
            tracing::debug!(client = %st.client, "no process found in time for a local caller");
            self.release(&mut st);
        }
        if st.looking {
            let flight = &self.traffic.in_flight;
            // A view keeps its whole read buffer: it counts as at least one.
            let view = chunk.filter(|c| data.len() >= HOLD_AS_VIEW && c.len() == data.len());
            let cost = if view.is_some() {
                data.len().max(CHUNK)
            } else {
                data.len()
            };
            let room = st.held.len() < HELD_CHUNKS
                && st.held_bytes + cost <= HELD_BYTES
                && flight.load(Ordering::Relaxed) + cost <= MAX_IN_FLIGHT;
            if room {
                flight.fetch_add(cost, Ordering::Relaxed);
                st.held_bytes += cost;
                st.held.push(Held {
                    side,
                    data: view.map_or_else(|| Bytes::copy_from_slice(data), Bytes::clone),
                    view: view.is_some(),
                    at_ms: now,
                });
                return;
            }
            // No more room to wait: go on without the name (it still reaches later records).
            self.release(&mut st);
        }
        st.feed(&self.traffic, side, data, chunk, now);
        // Records that hold a view of the read go into the ring (which copies it) before the
        // read is let go of.
        self.traffic.collect(st.cap(&self.traffic));
    }

    /// The connection ended. One whose caller was not named yet goes without the name: the
    /// caller has closed its socket by now (its FIN ended the splice), so no lookup could find
    /// it, and its records are not kept waiting.
    fn end(&self, end: FlowEnd) {
        let now = now_ms();
        let mut st = self.state();
        self.release(&mut st);
        st.close(&self.traffic, end, now);
    }

    /// The caller's process lookup came back (on the lookup thread).
    fn named(&self, process: Option<Process>) {
        let mut st = self.state();
        if let Some(p) = process {
            let cap = st.cap(&self.traffic);
            if !cap.is_closed() {
                cap.set_client_process(p);
            }
        }
        self.release(&mut st);
    }

    /// Stops waiting for the caller's name: what was held is parsed now.
    fn release(&self, st: &mut State) {
        st.release(&self.traffic);
        if let Some(cap) = st.cap.as_mut() {
            self.traffic.collect(cap);
        }
    }
}

/// Where the lookup of a local caller's process answers: the connection's capture, while the
/// connection lasts.
struct Named(Weak<Capture>);

impl owner::Answer for Named {
    fn wanted(&self) -> bool {
        self.0.strong_count() > 0
    }

    fn answer(self: Box<Self>, process: Option<Process>) {
        if let Some(c) = self.0.upgrade() {
            c.named(process);
        }
    }
}

impl Drop for Capture {
    /// A splice that was dropped before it saw its end (its task cancelled) still ends its
    /// records.
    fn drop(&mut self) {
        let traffic = self.traffic.clone();
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        st.release(&traffic);
        if st.cap.as_ref().is_some_and(|c| !c.is_closed()) {
            st.close(&traffic, FlowEnd::Closed, now_ms());
        }
    }
}

impl State {
    /// Stops waiting for the caller's name: what was held is parsed now.
    fn release(&mut self, traffic: &Traffic) {
        if !self.looking {
            return;
        }
        self.looking = false;
        traffic
            .in_flight
            .fetch_sub(self.held_bytes, Ordering::Relaxed);
        self.held_bytes = 0;
        for h in std::mem::take(&mut self.held) {
            let chunk = h.view.then_some(&h.data);
            self.feed(traffic, h.side, &h.data, chunk, h.at_ms);
            // Records that hold a view of it go into the ring before it is let go of.
            if h.view {
                if let Some(cap) = self.cap.as_mut() {
                    traffic.collect(cap);
                }
            }
        }
    }

    /// The connection's capture, built on first use.
    fn cap(&mut self, traffic: &Traffic) -> &mut ConnectionCapture {
        let State {
            cap,
            service,
            client,
            server,
            local,
            started,
            ..
        } = self;
        cap.get_or_insert_with(|| {
            let (meta, caller) = conn_meta(traffic, service, *client, *server, *local);
            let mut c = ConnectionCapture::new(meta, traffic.limits, *started);
            if let Some(rc) = caller {
                c.set_remote_caller(rc);
            }
            c
        })
    }

    fn feed(
        &mut self,
        traffic: &Traffic,
        side: Side,
        data: &[u8],
        chunk: Option<&Bytes>,
        now: u64,
    ) {
        if let Some(s) = self.synth.as_mut().filter(|_| traffic.pcap.active()) {
            traffic.pcap.publish_all(&s.data(side, data), now * 1000);
        }
        self.cap(traffic).data_in(side, data, chunk, now);
    }

    fn close(&mut self, traffic: &Traffic, end: FlowEnd, now: u64) {
        if let Some(s) = self.synth.as_mut().filter(|_| traffic.pcap.active()) {
            traffic
                .pcap
                .publish_all(&s.close(end == FlowEnd::Reset), now * 1000);
        }
        let cap = self.cap(traffic);
        if !cap.is_closed() {
            cap.close(end, now);
        }
        traffic.collect(cap);
    }
}

/// Who talks to whom. A connection from the relay's address shows its real caller, as the
/// relay announced it, instead of the relay's address and port (and the record keeps it as
/// its `remote_caller`); a caller on this machine is named by the node.
fn conn_meta(
    traffic: &Traffic,
    service: &str,
    client: SocketAddr,
    server: SocketAddr,
    local: bool,
) -> (ConnMeta, Option<RemoteCaller>) {
    let announced = match (client, server) {
        (SocketAddr::V4(c), SocketAddr::V4(s)) if *c.ip() == traffic.relay_address => {
            traffic.callers.get(s, c.port())
        }
        _ => None,
    };
    let (client_addr, client_name) = match &announced {
        Some(c) => {
            let via = c.via.as_deref().unwrap_or("relay");
            let mut name = format!("remote caller via the relay ({via})");
            if let Some(f) = &c.forwarded_for {
                name.push_str(&format!(", forwarded for {f}"));
            }
            (c.address.clone(), Some(name))
        }
        None if local => (client.to_string(), Some(traffic.node_name().to_string())),
        None => (client.to_string(), traffic.name_of(client)),
    };
    let service: Arc<str> = service.into();
    let meta = ConnMeta {
        service: service.clone(),
        direction: Direction::In,
        client: client_addr.into(),
        client_name: client_name.map(Into::into),
        server: server.to_string().into(),
        server_name: Some(service),
    };
    let caller = announced.map(|c| RemoteCaller {
        address: c.address,
        forwarded_for: c.forwarded_for,
    });
    (meta, caller)
}

/// One direction's handle on the capture.
struct Tee<'a> {
    cap: &'a Capture,
    side: Side,
}

/// How a restart's drain reaches one connection: `close` turns true when the connection must
/// end; `websocket` is set once the server answered `101` for a WebSocket.
#[derive(Clone, Debug)]
pub struct Ctl {
    /// Turns true when the connection is to be closed.
    pub close: watch::Receiver<bool>,
    /// Whether the server switched the connection to WebSocket.
    pub websocket: Arc<AtomicBool>,
}

/// How long a closing connection waits for a frame boundary, then for the client's side.
const CLOSING: Duration = Duration::from_secs(1);

/// Copies `client` <-> `upstream` until both directions end, teeing into the capture when one
/// is given (`(traffic, service name)`). When `ctl.close` turns true the connection ends
/// cleanly: a WebSocket client gets a close frame 1012 (between two of the server's frames),
/// every client gets a FIN, not a reset.
pub async fn splice(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    capture: Option<&(Arc<Traffic>, String)>,
    ctl: Ctl,
) -> std::io::Result<()> {
    let capture = capture.filter(|(t, _)| t.recording());
    let cap = match capture {
        Some((traffic, service)) => Some(Capture::start(
            traffic,
            service,
            client.peer_addr()?,
            client.local_addr()?,
        )),
        None => None,
    };
    let tee = |side| cap.as_deref().map(|c| Tee { cap: c, side });
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let up = copy_up(&mut cr, &mut uw, tee(Side::Client), ctl.close.clone());
    let down = copy_down(&mut ur, &mut cw, tee(Side::Server), ctl.clone());
    let r = tokio::try_join!(up, down);
    if *ctl.close.borrow() {
        // Closed by the drain: read what the client still sends (its close frame) until it
        // closes too, so that dropping the socket sends no reset.
        let _ = tokio::time::timeout(CLOSING, async {
            let mut buf = [0u8; 4096];
            while let Ok(n) = cr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
    if let Some(c) = &cap {
        let end = match &r {
            Ok(_) => FlowEnd::Closed,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => FlowEnd::Reset,
            Err(_) => FlowEnd::Error,
        };
        c.end(end);
    }
    r.map(|_| ())
}

/// Client to upstream; stops forwarding when the connection is closed by the drain.
async fn copy_up<R, W>(
    r: &mut R,
    w: &mut W,
    tee: Option<Tee<'_>>,
    mut close: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = tokio::select! {
            n = r.read(&mut buf) => n?,
            _ = close.wait_for(|c| *c) => return Ok(()),
        };
        if n == 0 {
            w.shutdown().await?;
            return Ok(());
        }
        let data = buf.get(..n).unwrap_or(&[]);
        w.write_all(data).await?;
        if let Some(t) = &tee {
            t.cap.data(t.side, data, None);
        }
    }
}

/// Upstream to client, following WebSocket frames; when closed by the drain it ends at a frame
/// boundary with a close frame (WebSocket) and a FIN.
async fn copy_down<R, W>(
    r: &mut R,
    w: &mut W,
    tee: Option<Tee<'_>>,
    ctl: Ctl,
) -> std::io::Result<()>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut close = ctl.close;
    let mut upgrade = Upgrade::new();
    // Each read is split off and shared with the capture, which keeps a response's body that
    // came whole in it as a view until the ring copies it (one copy, not two). Once the view
    // is gone the next reserve takes the same memory back.
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        if let Some(deadline) = closing {
            let boundary = upgrade.at_frame_boundary();
            if boundary || !upgrade.is_websocket() || tokio::time::Instant::now() >= deadline {
                if boundary {
                    w.write_all(&close_frame(SERVICE_RESTART)).await?;
                }
                w.shutdown().await?;
                return Ok(());
            }
        }
        buf.reserve(CHUNK);
        let n = tokio::select! {
            n = r.read_buf(&mut buf) => n?,
            _ = close.wait_for(|c| *c), if closing.is_none() => {
                closing = Some(tokio::time::Instant::now() + CLOSING);
                continue;
            }
            _ = sleep_until(closing) => continue,
        };
        if n == 0 {
            w.shutdown().await?;
            return Ok(());
        }
        let chunk = buf.split().freeze();
        w.write_all(&chunk).await?;
        // Cheap: past the first bytes only frame headers are looked at.
        upgrade.feed(&chunk);
        if upgrade.is_websocket() {
            ctl.websocket.store(true, Ordering::Relaxed);
        }
        if let Some(t) = &tee {
            t.cap.data(t.side, &chunk, Some(&chunk));
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use crate::daemon::listener::Listener;
    use crate::traffic::{Traffic, TrafficArgs};
    use overlay_core::traffic::capture::Filter;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn traffic(body_cap: usize) -> Arc<Traffic> {
        let args = TrafficArgs {
            inspect_listen: "off".into(),
            capture_body_cap: body_cap,
            capture_buffer: 1 << 20,
            capture_off: false,
            proto_path: Vec::new(),
        };
        Traffic::new(
            &args,
            Arc::default(),
            "node".into(),
            "100.64.0.65".parse().unwrap(),
            "100.64.0.1".parse().unwrap(),
            Arc::default(),
        )
    }

    /// A listener for service "api" forwarding to `port`, teeing into `t`.
    async fn listen(t: &Arc<Traffic>, port: u16) -> Listener {
        Listener::start(
            "127.0.0.1:0".parse().unwrap(),
            Some(port),
            Some((t.clone(), "api".into())),
        )
        .await
        .unwrap()
    }

    /// A server answering every request on a connection with `201` and `{"ok":true}`.
    async fn http_server() -> u16 {
        body_server(b"{\"ok\":true}".to_vec()).await
    }

    /// A server answering every request on a connection with `201` and `body`.
    async fn body_server(body: Vec<u8>) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1 << 16];
                    let mut seen = Vec::new();
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        // Answer once the whole test request (ending in "END") is in.
                        if seen.ends_with(b"END") {
                            let head = format!(
                                "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            );
                            let _ = s.write_all(head.as_bytes()).await;
                            let _ = s.write_all(&body).await;
                            seen.clear();
                        }
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn the_listener_tees_exchanges_into_the_capture_and_passes_bytes_intact() {
        let t = traffic(16);
        let port = http_server().await;
        let l = listen(&t, port).await;
        let mut c = TcpStream::connect(l.addr).await.unwrap();
        let body = vec![b'x'; 100_000];
        let mut req = format!(
            "POST /items HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len() + 3
        )
        .into_bytes();
        req.extend_from_slice(&body);
        req.extend_from_slice(b"END");
        c.write_all(&req).await.unwrap();
        let mut answer = vec![0u8; 256];
        let n = c.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 201 Created"));
        drop(c);
        let mut got = None;
        for _ in 0..100 {
            got = t.with_ring(|r| {
                r.list(&Filter::default(), 0, 10)
                    .first()
                    .map(|r| r.summary())
            });
            if got.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let s = got.expect("a captured exchange");
        assert_eq!(s.service, "api");
        assert_eq!(s.method.as_deref(), Some("POST"));
        assert_eq!(s.path.as_deref(), Some("/items"));
        assert_eq!(s.status, Some(201));
        assert_eq!(s.request_bytes, 100_003);
        assert!(s.truncated);
        // A loopback caller: its chunks were held while its process was looked up, then parsed
        // and let go of.
        assert_eq!(t.in_flight.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    /// A response body big enough to be held as a view of the splice's read while the local
    /// caller's process is looked up: the record has it whole, the caller is named, and
    /// nothing stays counted as held.
    #[tokio::test]
    async fn a_body_held_as_a_view_while_the_caller_is_named_is_recorded_whole() {
        let t = traffic(1 << 20);
        let body: Vec<u8> = (0..16 * 1024u32).map(|i| (i % 251) as u8).collect();
        let port = body_server(body.clone()).await;
        let l = listen(&t, port).await;
        let mut c = TcpStream::connect(l.addr).await.unwrap();
        c.write_all(b"POST /big HTTP/1.1\r\nContent-Length: 3\r\n\r\nEND")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while !answer.ends_with(&body) {
            let n = c.read(&mut buf).await.unwrap();
            assert!(n > 0, "the answer ended early");
            answer.extend_from_slice(&buf[..n]);
        }
        let mut got = None;
        for _ in 0..100 {
            got = t
                .with_ring(|r| {
                    r.list(&Filter::default(), 0, 10)
                        .iter()
                        .find(|r| r.summary().status == Some(201))
                        .map(|r| r.id)
                })
                .and_then(|id| t.get(id));
            if got
                .as_ref()
                .is_some_and(|r| r.summary().client_process.is_some())
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let r = got.expect("a captured exchange");
        let held = r
            .response()
            .map(|m| (m.body.data.to_vec(), m.body.truncated));
        assert_eq!(held, Some((body, false)));
        assert!(
            r.summary().client_process.is_some(),
            "the caller (this test) is named"
        );
        drop(c);
        assert_eq!(t.in_flight.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}

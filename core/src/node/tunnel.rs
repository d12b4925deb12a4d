//! The node's tunnel to the relay as a state machine: everything the data path decides, with
//! no sockets, no TUN device and no clock.
//!
//! [`Tunnel`] owns the boringtun `Tunn`. The driver (`node/src/tunnel.rs`) hands it packets
//! from the TUN device ([`Tunnel::send`]), the daemon's control datagrams
//! ([`Tunnel::send_control`]) and datagrams from the relay ([`Tunnel::receive`]), each with a
//! buffer to write into, and does what comes back: encrypted datagrams for the relay (over the
//! transport [`Tunnel::transport`] names), packets for the TUN device, control datagrams for
//! the daemon. It decides here, once for every packet: which source addresses the relay may
//! send from, that the relay's control channel is the daemon's alone (never to or from the
//! TUN device), what counts as the applications' traffic, and the counters.
//!
//! The driver's loop, in this order (quinn-proto style):
//! 1. move packets through `send` / `receive`;
//! 2. `handle_timeout(now)` (the WireGuard timers and the transport choice, every [`TICK`]);
//! 3. `end_turn(now)`: poll again, busy-poll, or sleep until readable or a deadline
//!    (`core::spin`), taking or giving back quick CPU wake-ups (`core::cpu_latency`);
//! 4. `poll_transmit` until `None` (handshakes, keepalives, probes, packets boringtun queued
//!    during a handshake), then `poll_event` until `None`.
//!
//! boringtun reads the clock itself for its own timers (handshake age, rekeying); everything
//! decided here uses the `now` passed in.

use crate::net::prefix::Ipv4Prefix;
use crate::net::spin::Spin;
use crate::net::wire;
use crate::node::cpu_latency::{Change, Hold, Mode, LINGER};
use crate::transport::control::{self, Owner};
use crate::transport::stream::transport::{Action, Chooser, Mode as TransportMode, Transport};
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// How often the WireGuard timers run (boringtun wants 100 to 250 ms).
pub const TICK: Duration = Duration::from_millis(250);
/// How long the data thread keeps polling after the last packet before it sleeps, when
/// polling pays (see `core::spin`). Covers an answer's round trip through the relay on a LAN
/// or one host; measured: ping through the relay between two namespaces went from ~270 to
/// ~70 µs median with the relay polling too (scripts/bench.sh dataplane).
pub const SPIN: Duration = Duration::from_micros(500);
/// What encryption adds to a packet: `send`'s `out` must hold the packet plus this.
pub const SEAL_OVERHEAD: usize = 32;
/// The smallest buffer `receive` writes into (a handshake message; cookies are smaller).
pub const MIN_OUT: usize = 148;
/// The buffer `poll_transmit` needs: the largest packet boringtun may have queued, sealed.
pub const TRANSMIT_BUF: usize = u16::MAX as usize + SEAL_OVERHEAD;
/// Room for the timers' own messages (a handshake initiation is 148 bytes).
const TIMER_BUF: usize = 256;

/// Settings of one tunnel.
#[derive(Clone, Debug)]
pub struct Config {
    /// The node's private key.
    pub private_key: [u8; 32],
    /// The relay's public key.
    pub relay_key: [u8; 32],
    /// Persistent keepalive in seconds.
    pub keepalive: Option<u16>,
    /// boringtun's session index (its low 24 bits count): the driver picks it at random.
    pub index: u32,
    /// Inner source addresses accepted from the relay.
    pub allowed: Vec<Ipv4Prefix>,
    /// The relay's overlay address: its control channel is the daemon's alone.
    pub relay_address: Ipv4Addr,
    /// The relay's UDP endpoint, resolved.
    pub relay: SocketAddr,
    /// When to ask for quick CPU wake-ups.
    pub cpu_latency: Mode,
    /// Which transports may be used.
    pub transport: TransportMode,
    /// Whether the relay has a URL for the stream.
    pub has_url: bool,
}

/// Where a datagram from the relay came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// UDP, from this address.
    Udp(SocketAddr),
    /// The stream to the relay's URL.
    Stream,
}

/// What to do with a packet from the TUN device or the daemon.
#[derive(Debug, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// Send this datagram to the relay over [`Tunnel::transport`] (the packet sealed, or a
    /// handshake initiation while boringtun queues the packet).
    Datagram(&'a [u8]),
    /// Taken, nothing to send now (queued during a handshake, or boringtun refused it).
    Held,
    /// Not carried, and counted: not IPv4, or a local program speaking the relay's control
    /// channel.
    Refused,
}

/// What to do with a datagram from the relay.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// An applications' packet for the TUN device.
    Tun(&'a [u8]),
    /// A control datagram (a whole inner packet) for the daemon, never for the TUN device.
    Daemon(&'a [u8]),
    /// Send this back the way the datagram came (a handshake answer, a keepalive after a
    /// handshake, a cookie), then call [`Tunnel::poll_transmit`] until it returns `None`.
    Reply(&'a [u8]),
    /// Nothing: a keepalive, or dropped and counted.
    Nothing,
}

/// A datagram [`Tunnel::poll_transmit`] wrote into the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Which way it goes.
    pub transport: Transport,
    /// Its length at the start of the buffer.
    pub len: usize,
}

/// What the data thread does after a turn ([`Tunnel::end_turn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Packets moved: poll again at once.
    Again,
    /// Nothing moved, but an answer is likely soon: yield, then poll again.
    Spin,
    /// Sleep until the TUN device or a socket is readable, or this deadline.
    Sleep(Instant),
}

/// Something for the driver to do besides moving datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Send over this transport from now on: open the stream (then call
    /// [`Tunnel::stream_opened`]), or go back to UDP.
    Transport(Transport),
    /// The session expired: resolve the relay's endpoint again, then call
    /// [`Tunnel::set_relay`] and [`Tunnel::initiate`].
    Expired,
    /// Take or give back the kernel's CPU-latency request, then report with
    /// [`Tunnel::cpu_latency_applied`].
    CpuLatency(Change),
}

/// Why the data path dropped a packet or a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// The TUN device handed over something that is not IPv4 (or could not be split).
    TunInvalid,
    /// WireGuard refused a datagram from the relay.
    Rejected,
    /// The relay sent from an address outside the allowed prefixes (or IPv6).
    ForeignSource,
    /// A datagram from another address than the relay's.
    UnknownSender,
    /// Sending to the relay failed.
    SendFailed,
    /// A local program wrote a packet for the relay's control channel to the TUN device.
    LocalControl,
    /// A control datagram from the relay found the daemon's queue full.
    ControlQueue,
    /// A queue to or from the stream was full.
    StreamQueue,
}

impl Dropped {
    /// Every reason, in the order [`Counters::drops`] lists them.
    pub const ALL: [Dropped; 8] = [
        Dropped::TunInvalid,
        Dropped::Rejected,
        Dropped::ForeignSource,
        Dropped::UnknownSender,
        Dropped::SendFailed,
        Dropped::LocalControl,
        Dropped::ControlQueue,
        Dropped::StreamQueue,
    ];

    /// The reason's name in `overlay status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::TunInvalid => "tun_invalid",
            Dropped::Rejected => "rejected",
            Dropped::ForeignSource => "foreign_source",
            Dropped::UnknownSender => "unknown_sender",
            Dropped::SendFailed => "send_failed",
            Dropped::LocalControl => "local_control",
            Dropped::ControlQueue => "control_queue",
            Dropped::StreamQueue => "stream_queue",
        }
    }
}

/// The data path's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Inner bytes received (control datagrams included).
    pub rx_bytes: u64,
    /// Inner bytes sent (control datagrams included).
    pub tx_bytes: u64,
    /// Inner packets received.
    pub rx_packets: u64,
    /// Inner packets sent.
    pub tx_packets: u64,
    /// How many times the CPU-latency request was taken.
    pub cpu_latency_holds: u64,
    drops: [u64; Dropped::ALL.len()],
}

impl Counters {
    /// Drops for one reason.
    pub fn dropped(&self, why: Dropped) -> u64 {
        self.drops[why as usize]
    }

    /// Every reason with its count.
    pub fn drops(&self) -> impl Iterator<Item = (Dropped, u64)> + '_ {
        Dropped::ALL.iter().map(|&d| (d, self.dropped(d)))
    }

    fn drop(&mut self, why: Dropped, n: u64) {
        let c = &mut self.drops[why as usize];
        *c = c.saturating_add(n);
    }
}

/// A snapshot for `overlay status`.
#[derive(Clone, Debug)]
pub struct Status {
    /// The counters.
    pub counters: Counters,
    /// Time since the current session's handshake (boringtun's clock); `None` without one.
    pub last_handshake: Option<Duration>,
    /// When the relay last sent anything that authenticated.
    pub last_rx: Option<Instant>,
    /// The relay's UDP endpoint.
    pub relay: SocketAddr,
    /// The transport in use.
    pub transport: Transport,
    /// The transports allowed.
    pub transport_mode: TransportMode,
    /// The CPU-latency mode configured.
    pub cpu_latency: Mode,
    /// Whether the CPU-latency request is held now.
    pub cpu_latency_held: bool,
    /// The round-trip floor to the relay, once measured.
    pub relay_rtt: Option<Duration>,
}

/// The node's tunnel to the relay (see the module documentation).
pub struct Tunnel {
    tunn: Tunn,
    allowed: Vec<Ipv4Prefix>,
    relay_address: Ipv4Addr,
    relay: SocketAddr,
    chooser: Chooser,
    spin: Spin,
    hold: Hold,
    cpu_latency: Mode,
    cpu_latency_held: bool,
    relay_rtt: Option<Duration>,
    counters: Counters,
    last_rx: Option<Instant>,
    /// Applications' packets moved since the last `end_turn`.
    moved: usize,
    /// boringtun may hold packets queued during a handshake: `poll_transmit` releases them.
    release_queued: bool,
    /// Datagrams the timers made, waiting for `poll_transmit`.
    pending: VecDeque<(Transport, Vec<u8>)>,
    events: VecDeque<Event>,
    next_tick: Instant,
    /// The session expired and the driver is resolving the relay again: no timers meanwhile.
    expired: bool,
    warned_local_control: bool,
    timer_buf: Vec<u8>,
}

impl Tunnel {
    /// A tunnel with no session yet; call [`Tunnel::initiate`] to start the handshake.
    pub fn new(cfg: Config, now: Instant) -> Tunnel {
        let tunn = Tunn::new(
            StaticSecret::from(cfg.private_key),
            PublicKey::from(cfg.relay_key),
            None,
            cfg.keepalive,
            cfg.index & 0x00ff_ffff,
            None,
        );
        Tunnel {
            tunn,
            allowed: cfg.allowed,
            relay_address: cfg.relay_address,
            relay: cfg.relay,
            chooser: Chooser::new(cfg.transport, cfg.has_url),
            spin: Spin::new(SPIN),
            hold: Hold::new(cfg.cpu_latency, LINGER),
            cpu_latency: cfg.cpu_latency,
            cpu_latency_held: false,
            relay_rtt: None,
            counters: Counters::default(),
            last_rx: None,
            moved: 0,
            release_queued: false,
            pending: VecDeque::new(),
            events: VecDeque::new(),
            next_tick: now + TICK,
            expired: false,
            warned_local_control: false,
            timer_buf: vec![0u8; TIMER_BUF],
        }
    }

    /// The transport datagrams go over now.
    pub fn transport(&self) -> Transport {
        self.chooser.current()
    }

    /// The relay's UDP endpoint.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// The relay's endpoint was resolved again.
    pub fn set_relay(&mut self, relay: SocketAddr) {
        self.relay = relay;
    }

    /// Records the round-trip floor to the relay (what `auto` CPU-latency mode decides by).
    pub fn set_relay_rtt(&mut self, rtt: Duration) {
        self.relay_rtt = Some(rtt);
    }

    /// Whether a session with the relay exists (a handshake completed).
    pub fn has_session(&self) -> bool {
        self.tunn.time_since_last_handshake().is_some()
    }

    /// Counts drops the driver saw (sending failed, a queue was full).
    pub fn count_drop(&mut self, why: Dropped, n: u64) {
        self.counters.drop(why, n);
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A snapshot for `overlay status`.
    pub fn status(&self) -> Status {
        Status {
            counters: self.counters.clone(),
            last_handshake: self.tunn.time_since_last_handshake(),
            last_rx: self.last_rx,
            relay: self.relay,
            transport: self.transport(),
            transport_mode: self.chooser.mode(),
            cpu_latency: self.cpu_latency,
            cpu_latency_held: self.cpu_latency_held,
            relay_rtt: self.relay_rtt,
        }
    }

    /// Starts a handshake (at start, and after [`Event::Expired`]); the initiation comes out of
    /// [`Tunnel::poll_transmit`].
    pub fn initiate(&mut self, now: Instant) {
        self.expired = false;
        let r = self
            .tunn
            .format_handshake_initiation(&mut self.timer_buf, false);
        if let TunnResult::WriteToNetwork(p) = r {
            let p = p.to_vec();
            self.queue(now, self.transport(), p);
        }
    }

    /// The stream to the relay's URL opened: the handshake initiation to send over it first,
    /// written into `buf` (at least [`MIN_OUT`] bytes). The relay learns from it that the
    /// stream is this node's.
    pub fn stream_opened<'a>(&mut self, buf: &'a mut [u8]) -> Option<&'a [u8]> {
        match self.tunn.format_handshake_initiation(buf, true) {
            TunnResult::WriteToNetwork(p) => Some(p),
            _ => None,
        }
    }

    /// A packet from the TUN device: seals it into `out`, which must hold the packet plus
    /// [`SEAL_OVERHEAD`] bytes and at least [`MIN_OUT`].
    pub fn send<'a>(&mut self, now: Instant, packet: &[u8], out: &'a mut [u8]) -> Outbound<'a> {
        let Ok(ip) = wire::ipv4(packet) else {
            // IPv6 router solicitations and the like: not carried yet.
            self.counters.drop(Dropped::TunInvalid, 1);
            return Outbound::Refused;
        };
        if control::owner(&ip, self.relay_address) == Owner::Daemon {
            // A local program speaking to the relay's control port: only the daemon may.
            self.counters.drop(Dropped::LocalControl, 1);
            if !self.warned_local_control {
                self.warned_local_control = true;
                tracing::warn!(
                    "dropped UDP from a local program to the relay {}: its control channel is \
                     the daemon's alone (counted as local_control in `overlay status`)",
                    self.relay_address
                );
            }
            return Outbound::Refused;
        }
        self.seal(now, packet, out, true)
    }

    /// The daemon's control datagram (a whole inner packet): sealed like [`Tunnel::send`]'s
    /// packets, but it does not come from the TUN device and is not traffic to poll for. Before
    /// a session exists boringtun queues it and the initiation comes back.
    pub fn send_control<'a>(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &'a mut [u8],
    ) -> Outbound<'a> {
        self.seal(now, packet, out, false)
    }

    fn seal<'a>(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &'a mut [u8],
        app: bool,
    ) -> Outbound<'a> {
        if out.len() < (packet.len() + SEAL_OVERHEAD).max(MIN_OUT) {
            // boringtun would panic: a driver bug, never the network's doing.
            debug_assert!(false, "seal buffer of {} bytes", out.len());
            return Outbound::Held;
        }
        match self.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(d) => {
                self.note_initiation(now, self.transport(), d);
                self.counters.tx_bytes += packet.len() as u64;
                self.counters.tx_packets += 1;
                self.moved += usize::from(app);
                Outbound::Datagram(d)
            }
            TunnResult::Err(e) => {
                tracing::debug!("encapsulate: {e:?}");
                Outbound::Held
            }
            _ => Outbound::Held,
        }
    }

    /// A datagram from the relay: opens it into `out` (at least as long as the datagram and
    /// [`MIN_OUT`]) and says where it goes.
    pub fn receive<'a>(
        &mut self,
        now: Instant,
        via: Via,
        datagram: &[u8],
        out: &'a mut [u8],
    ) -> Received<'a> {
        let src = match via {
            Via::Udp(from) if from != self.relay => {
                self.counters.drop(Dropped::UnknownSender, 1);
                return Received::Nothing;
            }
            Via::Udp(from) => from.ip(),
            Via::Stream => self.relay.ip(),
        };
        if out.len() < datagram.len().max(MIN_OUT) {
            debug_assert!(false, "receive buffer of {} bytes", out.len());
            self.counters.drop(Dropped::Rejected, 1);
            return Received::Nothing;
        }
        let r = self.tunn.decapsulate(Some(src), datagram, out);
        if !matches!(r, TunnResult::Err(_)) {
            self.last_rx = Some(now);
            if matches!(via, Via::Udp(_)) {
                // UDP works: back to it if the node was on the stream.
                if let Some(a) = self.chooser.udp_answered(now) {
                    self.act(a);
                }
            }
        }
        match r {
            TunnResult::WriteToNetwork(p) => {
                // Packets queued during the handshake go out next, the way in use.
                self.release_queued = true;
                Received::Reply(p)
            }
            TunnResult::WriteToTunnelV4(p, src) => {
                if !self.allowed.iter().any(|a| a.contains(src)) {
                    self.counters.drop(Dropped::ForeignSource, 1);
                    return Received::Nothing;
                }
                self.counters.rx_bytes += p.len() as u64;
                self.counters.rx_packets += 1;
                let daemons = wire::ipv4(p)
                    .is_ok_and(|ip| control::owner(&ip, self.relay_address) == Owner::Daemon);
                if daemons {
                    return Received::Daemon(p);
                }
                self.moved += 1;
                Received::Tun(p)
            }
            TunnResult::WriteToTunnelV6(..) => {
                self.counters.drop(Dropped::ForeignSource, 1);
                Received::Nothing
            }
            TunnResult::Done => Received::Nothing,
            TunnResult::Err(e) => {
                tracing::debug!("decapsulate: {e:?}");
                self.counters.drop(Dropped::Rejected, 1);
                Received::Nothing
            }
        }
    }

    /// When [`Tunnel::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// Runs the timers if their time came: the transport choice (fall back to the stream,
    /// probe UDP) and boringtun's (handshake retries, keepalives, expiry).
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        if let Some(a) = self.chooser.poll(now) {
            self.act(a);
        }
        if self.expired {
            return;
        }
        match self.tunn.update_timers(&mut self.timer_buf) {
            TunnResult::WriteToNetwork(p) => {
                let p = p.to_vec();
                self.queue(now, self.transport(), p);
            }
            TunnResult::Err(WireGuardError::ConnectionExpired) => {
                // Keep trying for as long as we run; the relay may have moved (DNS).
                self.expired = true;
                self.events.push_back(Event::Expired);
            }
            _ => {}
        }
    }

    /// The end of the data thread's turn at `now`: what it does next. While packets move it
    /// keeps polling; after them it busy-polls for a while if that tends to catch the answer
    /// (`core::spin`), and takes or gives back quick CPU wake-ups (`core::cpu_latency`). Only
    /// the applications' packets count: not the control channel, keepalives or handshakes.
    pub fn end_turn(&mut self, now: Instant) -> Next {
        if std::mem::take(&mut self.moved) > 0 {
            self.spin.traffic(now);
            // After the packets went: asking the kernel must not delay them.
            if let Some(c) = self.hold.traffic(now, self.relay_rtt) {
                self.events.push_back(Event::CpuLatency(c));
            }
            return Next::Again;
        }
        if self.spin.keep_polling(now) {
            return Next::Spin;
        }
        if let Some(c) = self.hold.idle(now) {
            self.events.push_back(Event::CpuLatency(c));
        }
        let wake = self.hold.timeout(now).map_or(self.next_tick, |d| now + d);
        Next::Sleep(wake.min(self.next_tick))
    }

    /// The driver applied a [`Event::CpuLatency`] change; `ok` false when the kernel cannot be
    /// asked (no device, no permission): then it is not asked again. True when this was the
    /// first time the request was taken (worth a line in the log).
    pub fn cpu_latency_applied(&mut self, change: Change, ok: bool) -> bool {
        if !ok {
            self.hold = Hold::new(Mode::Off, LINGER);
            self.cpu_latency_held = false;
            return false;
        }
        self.cpu_latency_held = change == Change::Take;
        if self.cpu_latency_held {
            self.counters.cpu_latency_holds += 1;
        }
        self.cpu_latency_held && self.counters.cpu_latency_holds == 1
    }

    /// The next datagram to send that no packet asked for, written into `buf` (at least
    /// [`TRANSMIT_BUF`] bytes): handshakes, keepalives and probes from the timers, then packets
    /// boringtun queued during a handshake.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        if buf.len() < TRANSMIT_BUF {
            debug_assert!(false, "transmit buffer of {} bytes", buf.len());
            return None;
        }
        if let Some((transport, d)) = self.pending.pop_front() {
            buf.get_mut(..d.len())?.copy_from_slice(&d);
            return Some(Transmit {
                transport,
                len: d.len(),
            });
        }
        if self.release_queued {
            if let TunnResult::WriteToNetwork(p) = self.tunn.decapsulate(None, &[], buf) {
                return Some(Transmit {
                    transport: self.transport(),
                    len: p.len(),
                });
            }
            self.release_queued = false;
        }
        None
    }

    /// The next thing for the driver to do, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Carries out a transport decision.
    fn act(&mut self, a: Action) {
        match a {
            Action::Switch(t) => self.events.push_back(Event::Transport(t)),
            Action::ProbeUdp => {
                // A new handshake over UDP: its answer comes back over UDP only if UDP passes.
                let r = self
                    .tunn
                    .format_handshake_initiation(&mut self.timer_buf, true);
                if let TunnResult::WriteToNetwork(p) = r {
                    tracing::debug!("probing UDP to the relay");
                    let p = p.to_vec();
                    self.pending.push_back((Transport::Udp, p));
                }
            }
        }
    }

    /// Queues a datagram of the timers for `poll_transmit`.
    fn queue(&mut self, now: Instant, transport: Transport, d: Vec<u8>) {
        self.note_initiation(now, transport, &d);
        self.pending.push_back((transport, d));
    }

    /// A handshake initiation (message type 1) over UDP waits for its answer: without one the
    /// transport choice falls back to the stream.
    fn note_initiation(&mut self, now: Instant, transport: Transport, d: &[u8]) {
        if transport == Transport::Udp && d.first() == Some(&1) {
            self.chooser.udp_initiation_sent(now);
        }
    }
}

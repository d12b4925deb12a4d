//! The node's tunnel against a simulated relay: real boringtun on both sides, no sockets, and
//! simulated time for everything the tunnel decides itself (busy-polling, CPU wake-ups, the
//! transport choice). boringtun's own timers read the real clock; no test here waits for them.

use super::tunnel::*;
use crate::net::wire::{build_echo_request, build_udp};
use crate::node::cpu_latency::{Change, Mode, LINGER};
use crate::transport::control::{self, CONTROL_PORT};
use crate::transport::stream::transport::{
    Mode as TransportMode, Transport, FALLBACK_AFTER, PROBE_EVERY,
};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const NODE_KEY: [u8; 32] = [1; 32];
const RELAY_KEY: [u8; 32] = [2; 32];
const NODE: Ipv4Addr = Ipv4Addr::new(100, 64, 4, 1);
const RELAY_ADDR: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(100, 64, 4, 65);

fn relay_endpoint() -> SocketAddr {
    "192.0.2.1:51820".parse().unwrap()
}

/// The relay's side: a boringtun peer that answers handshakes and opens and seals packets.
struct SimRelay {
    tunn: Tunn,
    buf: Vec<u8>,
}

impl SimRelay {
    fn new() -> SimRelay {
        let node_public = PublicKey::from(&StaticSecret::from(NODE_KEY));
        SimRelay {
            tunn: Tunn::new(
                StaticSecret::from(RELAY_KEY),
                node_public,
                None,
                None,
                7,
                None,
            ),
            buf: vec![0u8; 65536],
        }
    }

    /// Takes a datagram from the node: what goes back, and the inner packet if there was one.
    fn take(&mut self, d: &[u8]) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
        let mut back = Vec::new();
        let mut inner = None;
        match self.tunn.decapsulate(None, d, &mut self.buf) {
            TunnResult::WriteToNetwork(p) => {
                back.push(p.to_vec());
                while let TunnResult::WriteToNetwork(p) =
                    self.tunn.decapsulate(None, &[], &mut self.buf)
                {
                    back.push(p.to_vec());
                }
            }
            TunnResult::WriteToTunnelV4(p, _) => inner = Some(p.to_vec()),
            TunnResult::Err(e) => panic!("the relay refused the node's datagram: {e:?}"),
            _ => {}
        }
        (back, inner)
    }

    fn seal(&mut self, inner: &[u8]) -> Vec<u8> {
        match self.tunn.encapsulate(inner, &mut self.buf) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("the relay cannot seal: {other:?}"),
        }
    }
}

/// What `receive` gave, owned.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Tun(Vec<u8>),
    Daemon(Vec<u8>),
    Reply(Vec<u8>),
    Nothing,
}

struct Sim {
    node: Tunnel,
    relay: SimRelay,
    now: Instant,
    buf: Vec<u8>,
}

impl Sim {
    fn new(cpu_latency: Mode, transport: TransportMode, has_url: bool) -> Sim {
        let now = Instant::now();
        let cfg = Config {
            private_key: NODE_KEY,
            relay_key: PublicKey::from(&StaticSecret::from(RELAY_KEY)).to_bytes(),
            keepalive: None,
            index: 0x12_3456,
            allowed: vec!["100.64.0.0/10".parse().unwrap()],
            relay_address: RELAY_ADDR,
            relay: relay_endpoint(),
            cpu_latency,
            transport,
            has_url,
        };
        Sim {
            node: Tunnel::new(cfg, now),
            relay: SimRelay::new(),
            now,
            buf: vec![0u8; TRANSMIT_BUF],
        }
    }

    fn plain() -> Sim {
        Sim::new(Mode::Off, TransportMode::Udp, false)
    }

    /// Everything `poll_transmit` has.
    fn transmits(&mut self) -> Vec<(Transport, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(t) = self.node.poll_transmit(&mut self.buf) {
            out.push((t.transport, self.buf[..t.len].to_vec()));
        }
        out
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.node.poll_event()).collect()
    }

    fn receive(&mut self, via: Via, d: &[u8]) -> Got {
        let mut out = vec![0u8; d.len().max(MIN_OUT)];
        match self.node.receive(self.now, via, d, &mut out) {
            Received::Tun(p) => Got::Tun(p.to_vec()),
            Received::Daemon(p) => Got::Daemon(p.to_vec()),
            Received::Reply(p) => Got::Reply(p.to_vec()),
            Received::Nothing => Got::Nothing,
        }
    }

    /// A packet from the TUN device: the datagram for the relay, if one comes out.
    fn send(&mut self, p: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; p.len() + 64 + MIN_OUT];
        match self.node.send(self.now, p, &mut out) {
            Outbound::Datagram(d) => Some(d.to_vec()),
            Outbound::Held | Outbound::Refused => None,
        }
    }

    /// Runs the handshake over `via`, starting from the initiation `init`.
    fn answer_handshake(&mut self, via: Via, init: &[u8]) {
        let (back, _) = self.relay.take(init);
        assert_eq!(back.len(), 1, "one handshake response");
        let Got::Reply(keepalive) = self.receive(via, &back[0]) else {
            panic!("the node answers a handshake response with a keepalive");
        };
        assert_eq!(self.relay.take(&keepalive), (vec![], None));
        assert!(self.node.has_session());
    }

    /// Starts and completes the handshake over UDP.
    fn handshake(&mut self) {
        self.node.initiate(self.now);
        let tx = self.transmits();
        assert_eq!(tx.len(), 1, "one initiation");
        assert_eq!(
            (tx[0].0, tx[0].1[0], tx[0].1.len()),
            (Transport::Udp, 1, 148)
        );
        self.answer_handshake(Via::Udp(relay_endpoint()), &tx[0].1);
        assert!(self.transmits().is_empty());
    }
}

fn app_packet(data: &[u8]) -> Vec<u8> {
    build_udp(NODE, 5000, PEER, 6000, data)
}

#[test]
fn packets_cross_both_ways_after_a_handshake() {
    let mut s = Sim::plain();
    assert!(!s.node.has_session());
    s.handshake();
    let p = app_packet(b"to the peer");
    let d = s.send(&p).expect("a sealed datagram");
    assert_eq!(s.relay.take(&d), (vec![], Some(p.clone())));
    let back = build_udp(PEER, 6000, NODE, 5000, b"answer");
    let d = s.relay.seal(&back);
    assert_eq!(
        s.receive(Via::Udp(relay_endpoint()), &d),
        Got::Tun(back.clone())
    );
    // The stream carries the same session.
    let d = s.relay.seal(&back);
    assert_eq!(s.receive(Via::Stream, &d), Got::Tun(back.clone()));
    let c = s.node.counters();
    assert_eq!((c.tx_packets, c.tx_bytes), (1, p.len() as u64));
    assert_eq!((c.rx_packets, c.rx_bytes), (2, 2 * back.len() as u64));
    assert!(c.drops().all(|(_, n)| n == 0));
    assert!(s.node.status().last_rx.is_some());
}

#[test]
fn packets_before_the_session_wait_for_the_handshake() {
    let mut s = Sim::plain();
    let p = app_packet(b"early");
    let init = s.send(&p).expect("the packet brings out an initiation");
    assert_eq!((init[0], init.len()), (1, 148));
    // A second packet while the handshake runs is queued too.
    let p2 = app_packet(b"early too");
    assert_eq!(s.send(&p2), None);
    s.answer_handshake(Via::Udp(relay_endpoint()), &init);
    let queued = s.transmits();
    assert_eq!(queued.len(), 2, "both queued packets go out");
    let inner: Vec<_> = queued
        .iter()
        .map(|(t, d)| {
            assert_eq!(*t, Transport::Udp);
            s.relay.take(d).1.expect("a data packet")
        })
        .collect();
    assert_eq!(inner, [p, p2]);
}

#[test]
fn the_control_channel_is_the_daemons_alone() {
    let mut s = Sim::plain();
    s.handshake();
    // A local program cannot send to the relay's control port, nor to any UDP port of it.
    for port in [CONTROL_PORT, 53] {
        let forged = build_udp(NODE, 40000, RELAY_ADDR, port, br#"{"id":1,"op":"leave"}"#);
        assert_eq!(s.send(&forged), None);
    }
    assert_eq!(s.node.counters().dropped(Dropped::LocalControl), 2);
    // The daemon can, and its datagrams are not traffic to poll for.
    let req = control::request_packet(NODE, RELAY_ADDR, br#"{"id":2,"op":"ping"}"#);
    let mut out = vec![0u8; 512];
    let Outbound::Datagram(d) = s.node.send_control(s.now, &req, &mut out) else {
        panic!("the daemon's request is sealed");
    };
    let d = d.to_vec();
    assert_eq!(s.relay.take(&d).1, Some(req));
    assert!(matches!(s.node.end_turn(s.now), Next::Sleep(_)));
    // The relay's control datagrams go to the daemon, never to the TUN device.
    let reply = build_udp(RELAY_ADDR, CONTROL_PORT, NODE, CONTROL_PORT, b"{}");
    let d = s.relay.seal(&reply);
    assert_eq!(
        s.receive(Via::Udp(relay_endpoint()), &d),
        Got::Daemon(reply)
    );
    assert!(matches!(s.node.end_turn(s.now), Next::Sleep(_)));
    // Ping with the relay is the applications'.
    let ping = build_echo_request(RELAY_ADDR, NODE, 1, 1, b"x");
    let d = s.relay.seal(&ping);
    assert_eq!(s.receive(Via::Udp(relay_endpoint()), &d), Got::Tun(ping));
    assert_eq!(s.node.end_turn(s.now), Next::Again);
}

#[test]
fn what_does_not_belong_is_dropped_and_counted() {
    let mut s = Sim::plain();
    s.handshake();
    // A source outside the allowed prefixes.
    let spoofed = build_udp(Ipv4Addr::new(10, 0, 0, 1), 1, NODE, 2, b"x");
    let d = s.relay.seal(&spoofed);
    assert_eq!(s.receive(Via::Udp(relay_endpoint()), &d), Got::Nothing);
    // A datagram from another address than the relay's.
    let d = s.relay.seal(&app_packet(b"x"));
    let other: SocketAddr = "192.0.2.9:51820".parse().unwrap();
    assert_eq!(s.receive(Via::Udp(other), &d), Got::Nothing);
    // Garbage, and a replay of a datagram already taken.
    let d = s.relay.seal(&app_packet(b"once"));
    assert!(matches!(
        s.receive(Via::Udp(relay_endpoint()), &d),
        Got::Tun(_)
    ));
    assert_eq!(s.receive(Via::Udp(relay_endpoint()), &d), Got::Nothing);
    let mut garbage = vec![4u8, 0, 0, 0];
    garbage.extend_from_slice(&[0x55; 60]);
    assert_eq!(
        s.receive(Via::Udp(relay_endpoint()), &garbage),
        Got::Nothing
    );
    // Not IPv4 from the TUN device.
    let mut v6 = vec![0u8; 40];
    v6[0] = 0x60;
    assert_eq!(s.send(&v6), None);
    let c = s.node.counters();
    assert_eq!(c.dropped(Dropped::ForeignSource), 1);
    assert_eq!(c.dropped(Dropped::UnknownSender), 1);
    assert_eq!(c.dropped(Dropped::Rejected), 2);
    assert_eq!(c.dropped(Dropped::TunInvalid), 1);
    s.node.count_drop(Dropped::SendFailed, 3);
    assert_eq!(s.node.counters().dropped(Dropped::SendFailed), 3);
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

#[test]
fn the_data_thread_polls_after_traffic_then_sleeps_until_the_next_timer() {
    let mut s = Sim::plain();
    s.handshake();
    let t0 = s.now;
    assert!(matches!(s.node.end_turn(t0), Next::Sleep(_)), "idle: sleep");
    s.send(&app_packet(b"request")).unwrap();
    assert_eq!(s.node.end_turn(t0), Next::Again);
    // The answer is likely within SPIN: poll instead of sleeping.
    assert_eq!(s.node.end_turn(t0 + us(100)), Next::Spin);
    assert_eq!(s.node.end_turn(t0 + us(400)), Next::Spin);
    let t1 = t0 + SPIN + us(1);
    assert_eq!(s.node.end_turn(t1), Next::Sleep(s.node.poll_timeout()));
    assert!(s.node.poll_timeout() <= t0 + TICK);
    assert!(s.events().is_empty(), "quick wake-ups are off");
}

/// One exchange at `t`: a request out and its answer 100 µs later, each in its own turn.
fn exchange(s: &mut Sim, t: Instant) -> Vec<Event> {
    s.now = t;
    s.send(&app_packet(b"ping")).unwrap();
    assert_eq!(s.node.end_turn(t), Next::Again);
    s.now = t + us(100);
    let d = s.relay.seal(&build_udp(PEER, 6000, NODE, 5000, b"pong"));
    assert!(matches!(
        s.receive(Via::Udp(relay_endpoint()), &d),
        Got::Tun(_)
    ));
    assert_eq!(s.node.end_turn(s.now), Next::Again);
    s.events()
}

#[test]
fn close_exchanges_take_quick_wake_ups_and_quiet_gives_them_back() {
    let mut s = Sim::new(Mode::Auto, TransportMode::Udp, false);
    s.handshake();
    let t0 = s.now;
    // Auto needs a near relay that was measured.
    assert_eq!(exchange(&mut s, t0), vec![]);
    assert_eq!(exchange(&mut s, t0 + Duration::from_millis(5)), vec![]);
    s.node.set_relay_rtt(us(300));
    assert_eq!(
        exchange(&mut s, t0 + Duration::from_millis(10)),
        vec![Event::CpuLatency(Change::Take)]
    );
    assert!(
        s.node.cpu_latency_applied(Change::Take, true),
        "the first hold"
    );
    assert!(s.node.status().cpu_latency_held);
    // After the last packet: polling runs out, and LINGER later the request goes back.
    let last = s.now;
    assert_eq!(s.node.end_turn(last + us(10)), Next::Spin);
    let Next::Sleep(until) = s.node.end_turn(last + SPIN + us(10)) else {
        panic!("sleeps after polling");
    };
    assert_eq!(until, last + LINGER, "wakes to give the request back");
    assert!(s.events().is_empty());
    assert!(matches!(s.node.end_turn(last + LINGER), Next::Sleep(_)));
    assert_eq!(s.events(), vec![Event::CpuLatency(Change::Release)]);
    assert!(!s.node.cpu_latency_applied(Change::Release, true));
    assert!(!s.node.status().cpu_latency_held);
    assert_eq!(s.node.counters().cpu_latency_holds, 1);
}

#[test]
fn a_kernel_that_refuses_is_not_asked_again() {
    let mut s = Sim::new(Mode::On, TransportMode::Udp, false);
    s.handshake();
    let t0 = s.now;
    assert_eq!(exchange(&mut s, t0), vec![]);
    let got = exchange(&mut s, t0 + Duration::from_millis(5));
    assert_eq!(got, vec![Event::CpuLatency(Change::Take)]);
    assert!(!s.node.cpu_latency_applied(Change::Take, false));
    for i in 2..10 {
        assert_eq!(exchange(&mut s, t0 + Duration::from_millis(5 * i)), vec![]);
    }
    assert_eq!(s.node.counters().cpu_latency_holds, 0);
}

#[test]
fn unanswered_udp_falls_back_to_the_stream_and_udp_brings_it_back() {
    let mut s = Sim::new(Mode::Off, TransportMode::Auto, true);
    let t0 = s.now;
    s.node.initiate(t0);
    let lost = s.transmits();
    assert_eq!(lost.len(), 1, "the initiation over UDP, lost");
    assert_eq!(lost[0].0, Transport::Udp);
    s.node.handle_timeout(t0 + TICK);
    assert!(s.events().is_empty());
    // FALLBACK_AFTER without an answer: the stream.
    let t1 = t0 + FALLBACK_AFTER;
    s.node.handle_timeout(t1);
    assert_eq!(s.events(), vec![Event::Transport(Transport::Tcp)]);
    assert_eq!(s.node.transport(), Transport::Tcp);
    let mut buf = vec![0u8; MIN_OUT];
    let init = s
        .node
        .stream_opened(&mut buf)
        .expect("an initiation")
        .to_vec();
    s.now = t1 + us(500);
    s.answer_handshake(Via::Stream, &init);
    // Datagrams go over the stream now, and the session carries the packets.
    let p = app_packet(b"over the stream");
    let d = s.send(&p).unwrap();
    assert_eq!(s.relay.take(&d).1, Some(p));
    // Every PROBE_EVERY a new initiation tries UDP.
    s.node.handle_timeout(t1 + PROBE_EVERY);
    let probe = s.transmits();
    assert_eq!(probe.len(), 1);
    assert_eq!((probe[0].0, probe[0].1[0]), (Transport::Udp, 1));
    assert!(s.events().is_empty());
    // Anything authenticated over UDP moves the node back.
    let d = s.relay.seal(&app_packet(b"over UDP"));
    assert!(matches!(
        s.receive(Via::Udp(relay_endpoint()), &d),
        Got::Tun(_)
    ));
    assert_eq!(s.events(), vec![Event::Transport(Transport::Udp)]);
    assert_eq!(s.node.transport(), Transport::Udp);
}

#[test]
fn udp_only_never_leaves_udp() {
    let mut s = Sim::new(Mode::Off, TransportMode::Udp, true);
    let t0 = s.now;
    s.node.initiate(t0);
    assert_eq!(s.transmits().len(), 1);
    for i in 1..40 {
        s.node.handle_timeout(t0 + TICK * i);
    }
    assert!(s.events().is_empty());
    assert_eq!(s.node.transport(), Transport::Udp);
}

#[test]
fn timers_run_once_per_tick() {
    let mut s = Sim::plain();
    let t0 = s.now;
    let first = s.node.poll_timeout();
    assert_eq!(first, t0 + TICK);
    s.node.handle_timeout(first - us(1));
    assert_eq!(s.node.poll_timeout(), first, "not yet");
    s.node.handle_timeout(first);
    assert_eq!(s.node.poll_timeout(), first + TICK);
}

/// The contracts are the driver's; in debug builds they assert.
#[test]
#[cfg(not(debug_assertions))]
fn undersized_buffers_are_refused_without_a_panic_in_release() {
    let mut s = Sim::plain();
    let mut tiny = [0u8; 16];
    assert_eq!(
        s.node.send(s.now, &app_packet(b"x"), &mut tiny),
        Outbound::Held
    );
    assert_eq!(s.node.poll_transmit(&mut tiny), None);
}

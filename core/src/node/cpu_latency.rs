//! When a node asks the kernel to keep idle CPUs quick to wake (PM QoS CPU latency).
//!
//! A request and its answer are handed between several threads: the application, the node's
//! data thread, and (on one host, or with a relay on the same LAN) the relay's and the peer's.
//! A hand-over to a thread whose CPU is idle waits for that CPU to leave its idle state: a few
//! microseconds on a polling CPU, tens on a halted virtual CPU (measured here: a UDP echo
//! between two namespaces takes 22 µs on one vCPU and 172 µs across two). The kernel lets a
//! process ask that idle CPUs stay quick to wake while it holds a request open
//! (`/dev/cpu_dma_latency`). Idle CPUs then poll instead of halting, which costs power, so
//! [`Hold`] takes the request only while exchanges follow each other closely (a second one
//! within [`LINGER`] of the first) and gives it back [`LINGER`] after the last packet: a lone
//! exchange, such as a liveness ping or a keepalive, never takes it. In [`Mode::Auto`] it does
//! so only when the relay is near ([`NEAR_RTT`]): over a WAN the answer takes milliseconds and
//! a faster wake-up buys nothing measurable.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long after the last packet the request is kept: long enough to span the gaps of
/// interactive traffic (requests and answers, a ping every few milliseconds).
pub const LINGER: Duration = Duration::from_millis(20);
/// Traffic after at least this much quiet starts a new exchange; closer packets (a request
/// and its answer on a near path, the segments of a burst) belong to the same one.
pub const QUIET_GAP: Duration = Duration::from_millis(1);
/// In [`Mode::Auto`], the relay counts as near under this round trip: a wake-up's tens of
/// microseconds are then a noticeable share of every answer's time.
pub const NEAR_RTT: Duration = Duration::from_millis(2);
/// Round-trip samples [`MinRtt`] keeps; the smallest is the path's floor.
pub const RTT_SAMPLES: usize = 4;

/// When the node asks for quick wake-ups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// While traffic flows and the relay is near.
    Auto,
    /// While traffic flows, wherever the relay is.
    On,
    /// Never.
    Off,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Mode::Auto),
            "on" => Ok(Mode::On),
            "off" => Ok(Mode::Off),
            _ => Err(format!("'{s}' is not auto, on or off")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::On => "on",
            Mode::Off => "off",
        })
    }
}

/// What to do with the kernel request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Ask for quick wake-ups.
    Take,
    /// Give the request back.
    Release,
}

/// The hold policy for one data thread.
#[derive(Debug, Clone)]
pub struct Hold {
    mode: Mode,
    linger: Duration,
    held: bool,
    last_traffic: Option<Instant>,
}

impl Hold {
    /// A policy in `mode` that keeps the request `linger` after the last packet.
    pub fn new(mode: Mode, linger: Duration) -> Hold {
        Hold {
            mode,
            linger,
            held: false,
            last_traffic: None,
        }
    }

    /// Whether the request is held.
    pub fn held(&self) -> bool {
        self.held
    }

    /// Packets moved at `now`; `relay_rtt` is the path's round-trip floor, if measured.
    pub fn traffic(&mut self, now: Instant, relay_rtt: Option<Duration>) -> Option<Change> {
        let previous = self.last_traffic.replace(now);
        if self.held {
            return None;
        }
        // A new exchange soon after the previous one: more are likely to follow.
        let quiet = previous.map(|p| now.saturating_duration_since(p));
        let follows = quiet.is_some_and(|q| q >= QUIET_GAP && q < self.linger);
        let wanted = follows
            && match self.mode {
                Mode::Off => false,
                Mode::On => true,
                Mode::Auto => relay_rtt.is_some_and(|r| r < NEAR_RTT),
            };
        self.held = wanted;
        wanted.then_some(Change::Take)
    }

    /// Nothing moved at `now`: the request goes back once `linger` has passed.
    pub fn idle(&mut self, now: Instant) -> Option<Change> {
        let at = self.last_traffic?;
        if !self.held || now.saturating_duration_since(at) < self.linger {
            return None;
        }
        self.held = false;
        Some(Change::Release)
    }

    /// How long a thread going to sleep at `now` may sleep before [`Hold::idle`] has work.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        let at = self.last_traffic.filter(|_| self.held)?;
        Some((at + self.linger).saturating_duration_since(now))
    }
}

/// The smallest of the last [`RTT_SAMPLES`] round trips: one slow answer (a busy relay, a
/// loaded laptop) does not make a near relay look far.
#[derive(Debug, Clone, Default)]
pub struct MinRtt {
    samples: VecDeque<Duration>,
}

impl MinRtt {
    /// Records one measured round trip.
    pub fn sample(&mut self, rtt: Duration) {
        if self.samples.len() == RTT_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(rtt);
    }

    /// The floor, once there is a sample.
    pub fn get(&self) -> Option<Duration> {
        self.samples.iter().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const NEAR: Option<Duration> = Some(Duration::from_micros(300));

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// One exchange at `t`: a request and its answer 100 µs later.
    fn exchange(h: &mut Hold, t: Instant, rtt: Option<Duration>) -> Vec<Change> {
        [h.traffic(t, rtt), h.traffic(t + us(100), rtt)]
            .into_iter()
            .flatten()
            .collect()
    }

    #[test]
    fn the_second_exchange_takes_it_and_quiet_gives_it_back() {
        let t0 = Instant::now();
        let mut h = Hold::new(Mode::Auto, LINGER);
        assert_eq!(h.idle(t0), None);
        assert_eq!(h.timeout(t0), None);
        assert_eq!(exchange(&mut h, t0, NEAR), vec![]);
        assert!(!h.held());
        assert_eq!(exchange(&mut h, t0 + ms(5), NEAR), vec![Change::Take]);
        assert!(h.held());
        // Pings 5 ms apart keep it without asking the kernel again.
        for i in 2..10 {
            assert_eq!(h.idle(t0 + ms(5 * i - 1)), None);
            assert_eq!(exchange(&mut h, t0 + ms(5 * i), NEAR), vec![]);
        }
        let last = t0 + ms(45) + us(100);
        assert_eq!(h.timeout(last + ms(5)), Some(LINGER - ms(5)));
        assert_eq!(h.idle(last + LINGER - ms(1)), None);
        assert_eq!(h.idle(last + LINGER), Some(Change::Release));
        assert!(!h.held());
        assert_eq!(h.idle(last + LINGER + ms(1)), None);
        assert_eq!(h.timeout(last + LINGER + ms(1)), None);
        // Pings resuming later take it again from their second exchange.
        assert_eq!(exchange(&mut h, last + ms(100), NEAR), vec![]);
        assert_eq!(exchange(&mut h, last + ms(105), NEAR), vec![Change::Take]);
    }

    #[test]
    fn lone_exchanges_and_bulk_never_take_it() {
        let t0 = Instant::now();
        let mut h = Hold::new(Mode::On, LINGER);
        // A liveness ping every 3 s, a keepalive every 25 s.
        for i in 0..10 {
            assert_eq!(exchange(&mut h, t0 + ms(3000 * i), None), vec![]);
        }
        // A bulk transfer: packets 50 µs apart, no quiet in between (the CPUs are busy anyway).
        let t1 = t0 + ms(60_000);
        for i in 0..1000 {
            assert_eq!(h.traffic(t1 + us(50 * i), None), None);
        }
        assert!(!h.held());
    }

    #[test]
    fn auto_holds_only_for_a_near_relay_that_was_measured() {
        let t0 = Instant::now();
        let mut h = Hold::new(Mode::Auto, LINGER);
        assert_eq!(exchange(&mut h, t0, None), vec![]);
        assert_eq!(exchange(&mut h, t0 + ms(5), None), vec![]);
        assert_eq!(exchange(&mut h, t0 + ms(10), Some(ms(30))), vec![]);
        assert_eq!(exchange(&mut h, t0 + ms(15), Some(NEAR_RTT)), vec![]);
        assert_eq!(h.idle(t0 + ms(100)), None);
        assert_eq!(h.timeout(t0 + ms(100)), None);
        assert_eq!(exchange(&mut h, t0 + ms(105), NEAR), vec![]);
        assert_eq!(
            exchange(&mut h, t0 + ms(110), Some(NEAR_RTT - ms(1))),
            vec![Change::Take]
        );
    }

    #[test]
    fn on_ignores_the_distance_and_off_never_holds() {
        let t0 = Instant::now();
        let mut on = Hold::new(Mode::On, LINGER);
        assert_eq!(exchange(&mut on, t0, None), vec![]);
        assert_eq!(exchange(&mut on, t0 + ms(5), None), vec![Change::Take]);
        let mut off = Hold::new(Mode::Off, LINGER);
        for i in 0..10 {
            assert_eq!(exchange(&mut off, t0 + ms(5 * i), NEAR), vec![]);
        }
        assert_eq!(off.idle(t0 + ms(100)), None);
        assert!(!off.held());
    }

    #[test]
    fn modes_parse_and_print() {
        for m in [Mode::Auto, Mode::On, Mode::Off] {
            assert_eq!(m.to_string().parse::<Mode>(), Ok(m));
        }
        assert_eq!("OFF".parse::<Mode>(), Ok(Mode::Off));
        assert!("fast".parse::<Mode>().is_err());
    }

    #[test]
    fn min_rtt_is_the_floor_of_recent_samples() {
        let mut r = MinRtt::default();
        assert_eq!(r.get(), None);
        r.sample(ms(1));
        r.sample(ms(40));
        assert_eq!(r.get(), Some(ms(1)));
        for _ in 0..RTT_SAMPLES {
            r.sample(ms(30));
        }
        // The fast sample aged out: the relay moved away.
        assert_eq!(r.get(), Some(ms(30)));
    }
}

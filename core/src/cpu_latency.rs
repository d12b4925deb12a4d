//! When a node asks the kernel to keep idle CPUs quick to wake (PM QoS CPU latency).
//!
//! A request and its answer are handed between several threads: the application, the node's
//! data thread, and (on one host, or with a relay on the same LAN) the relay's and the peer's.
//! A hand-over to a thread whose CPU is idle waits for that CPU to leave its idle state: a few
//! microseconds on a polling CPU, tens on a halted virtual CPU (measured here: a UDP echo
//! between two namespaces takes 22 µs on one vCPU and 172 µs across two). The kernel lets a
//! process ask that idle CPUs stay quick to wake while it holds a request open
//! (`/dev/cpu_dma_latency`). Idle CPUs then poll instead of halting, which costs power, so
//! [`Hold`] takes the request only while packets move and gives it back [`LINGER`] after the
//! last one. In [`Mode::Auto`] it does so only when the relay is near ([`NEAR_RTT`]): over a
//! WAN the answer takes milliseconds and a faster wake-up buys nothing measurable.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long after the last packet the request is kept: long enough to span the gaps of
/// interactive traffic (requests and answers, a ping every few milliseconds).
pub const LINGER: Duration = Duration::from_millis(20);
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
        self.last_traffic = Some(now);
        if self.held {
            return None;
        }
        let wanted = match self.mode {
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
        self.last_traffic = None;
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

    #[test]
    fn traffic_takes_once_and_quiet_releases_after_linger() {
        let t0 = Instant::now();
        let mut h = Hold::new(Mode::Auto, LINGER);
        assert_eq!(h.idle(t0), None);
        assert_eq!(h.timeout(t0), None);
        assert_eq!(h.traffic(t0, NEAR), Some(Change::Take));
        assert!(h.held());
        // Pings 5 ms apart keep it without asking the kernel again.
        for i in 1..10 {
            assert_eq!(h.idle(t0 + ms(5 * i - 1)), None);
            assert_eq!(h.traffic(t0 + ms(5 * i), NEAR), None);
        }
        let last = t0 + ms(45);
        assert_eq!(h.timeout(last + ms(5)), Some(LINGER - ms(5)));
        assert_eq!(h.idle(last + LINGER - ms(1)), None);
        assert_eq!(h.idle(last + LINGER), Some(Change::Release));
        assert!(!h.held());
        assert_eq!(h.idle(last + LINGER + ms(1)), None);
        assert_eq!(h.timeout(last + LINGER + ms(1)), None);
        assert_eq!(h.traffic(last + ms(100), NEAR), Some(Change::Take));
    }

    #[test]
    fn auto_holds_only_for_a_near_relay_that_was_measured() {
        let t0 = Instant::now();
        let mut h = Hold::new(Mode::Auto, LINGER);
        assert_eq!(h.traffic(t0, None), None);
        assert_eq!(h.traffic(t0, Some(ms(30))), None);
        assert_eq!(h.traffic(t0, Some(NEAR_RTT)), None);
        assert_eq!(h.idle(t0 + ms(100)), None);
        assert_eq!(h.timeout(t0), None);
        assert_eq!(h.traffic(t0, Some(NEAR_RTT - ms(1))), Some(Change::Take));
    }

    #[test]
    fn on_ignores_the_distance_and_off_never_holds() {
        let t0 = Instant::now();
        let mut on = Hold::new(Mode::On, LINGER);
        assert_eq!(on.traffic(t0, None), Some(Change::Take));
        let mut off = Hold::new(Mode::Off, LINGER);
        assert_eq!(off.traffic(t0, NEAR), None);
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

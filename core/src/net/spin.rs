//! When a data-path thread should keep polling instead of sleeping: adaptive busy-polling.
//!
//! Putting a thread to sleep and waking it when the next packet arrives costs tens of
//! microseconds per hop, far more on a virtual machine whose idle CPU halts. Across a
//! request and its answer that is paid at every hop, so it dominates the latency of a quiet
//! overlay. Polling for a short while after traffic avoids it, but only pays off when more
//! traffic tends to follow soon. [`Spin`] keeps score: a poll that catches a packet is a hit,
//! one that runs out is a miss, and it stops polling when misses dominate (a relay behind a
//! WAN whose answers take milliseconds, peers that only send keepalives). While stopped it
//! still tries one poll in [`PROBE_EVERY`] to notice when polling would pay again.

use std::time::{Duration, Instant};

/// Highest score: how many misses in a row it takes to stop polling after a run of hits.
const MAX_SCORE: u8 = 16;
/// While the score is zero, one idle moment in this many is polled anyway.
pub const PROBE_EVERY: u32 = 32;

/// Adaptive busy-poll decision for one thread.
#[derive(Debug, Clone)]
pub struct Spin {
    cap: Duration,
    score: u8,
    skipped: u32,
    /// When packets last moved; `None` once the thread went (or decided to go) to sleep.
    last_traffic: Option<Instant>,
    /// Polling without traffic since `last_traffic`.
    polling: bool,
}

impl Spin {
    /// A policy that polls for at most `cap` after traffic.
    pub fn new(cap: Duration) -> Spin {
        Spin {
            cap,
            score: MAX_SCORE / 2,
            skipped: 0,
            last_traffic: None,
            polling: false,
        }
    }

    /// Packets moved at `now`.
    pub fn traffic(&mut self, now: Instant) {
        if self.polling {
            self.score = (self.score + 2).min(MAX_SCORE);
            self.polling = false;
        }
        self.last_traffic = Some(now);
    }

    /// Nothing moved at `now`: true to poll again right away, false to sleep until readable.
    pub fn keep_polling(&mut self, now: Instant) -> bool {
        let Some(at) = self.last_traffic else {
            return false;
        };
        if !self.polling {
            if self.score == 0 {
                self.skipped += 1;
                if !self.skipped.is_multiple_of(PROBE_EVERY) {
                    self.last_traffic = None;
                    return false;
                }
            }
            self.polling = true;
        }
        if now.saturating_duration_since(at) < self.cap {
            return true;
        }
        self.score = self.score.saturating_sub(1);
        self.polling = false;
        self.last_traffic = None;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_micros(300);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Polls idle moments 10 µs apart from `from` until told to sleep; returns when that was.
    fn poll_until_sleep(s: &mut Spin, from: Instant) -> Duration {
        let mut t = from;
        while s.keep_polling(t) {
            t += us(10);
            assert!(t - from < Duration::from_secs(1));
        }
        t - from
    }

    #[test]
    fn idle_never_polls_and_traffic_polls_up_to_the_cap() {
        let t0 = Instant::now();
        let mut s = Spin::new(CAP);
        assert!(!s.keep_polling(t0));
        s.traffic(t0);
        assert_eq!(poll_until_sleep(&mut s, t0), us(300));
        assert!(!s.keep_polling(t0 + us(310)));
    }

    #[test]
    fn only_misses_stop_polling_and_probes_continue_rarely() {
        let t0 = Instant::now();
        let mut s = Spin::new(CAP);
        let mut t = t0;
        let mut polled = 0;
        for _ in 0..200 {
            s.traffic(t);
            if poll_until_sleep(&mut s, t) > Duration::ZERO {
                polled += 1;
            }
            t += Duration::from_millis(25);
        }
        // Eight misses use up the starting score; then one moment in PROBE_EVERY.
        assert!(
            (8..=8 + 200 / PROBE_EVERY as usize + 1).contains(&polled),
            "{polled}"
        );
    }

    #[test]
    fn a_hit_for_every_miss_keeps_polling() {
        // A relay forwarding ping-pong: the answer comes 100 µs after a forward (hit), the
        // next request 5 ms after that (miss).
        let t0 = Instant::now();
        let mut s = Spin::new(CAP);
        let mut t = t0;
        for _ in 0..100 {
            s.traffic(t);
            assert!(s.keep_polling(t + us(50)));
            t += us(100);
            s.traffic(t);
            assert_eq!(poll_until_sleep(&mut s, t), us(300));
            t += Duration::from_millis(5);
        }
    }

    #[test]
    fn a_probe_that_hits_turns_polling_back_on() {
        let t0 = Instant::now();
        let mut s = Spin::new(CAP);
        let mut t = t0;
        for _ in 0..8 {
            s.traffic(t);
            poll_until_sleep(&mut s, t);
            t += Duration::from_millis(25);
        }
        // Score is zero: idle moments sleep until the probe.
        let mut probes = 0;
        while probes == 0 {
            s.traffic(t);
            if s.keep_polling(t + us(10)) {
                probes += 1;
                s.traffic(t + us(50)); // the probe catches a packet
            }
            t += Duration::from_millis(1);
            assert!(t - t0 < Duration::from_secs(10));
        }
        s.traffic(t);
        assert!(s.keep_polling(t + us(10)));
    }
}

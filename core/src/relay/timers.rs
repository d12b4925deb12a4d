//! The hub's timers: one table of deadlines, one answer to "when next" (quinn-proto's
//! `connection/timer.rs`).

use std::time::{Duration, Instant};

/// How often the periodic work runs (WireGuard timers want 100 to 250 ms).
pub const TICK: Duration = Duration::from_millis(100);

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// WireGuard timers, notices, expiry of names on demand, the rate limiter's second.
    Tick = 0,
    /// Endpoints and handshake timestamps changed: write them (at most once a second).
    LivePersist = 1,
    /// A write failed: try again.
    PersistRetry = 2,
}

const ALL: [Timer; 3] = [Timer::Tick, Timer::LivePersist, Timer::PersistRetry];

/// A deadline per [`Timer`], or none.
#[derive(Debug)]
pub struct Timers([Option<Instant>; 3]);

impl Timers {
    /// The first tick one [`TICK`] after `now`, nothing else armed.
    pub fn new(now: Instant) -> Timers {
        Timers([Some(now + TICK), None, None])
    }

    /// Arms `t` for `at` (replacing its deadline).
    pub fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }

    /// Disarms `t`.
    pub fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    /// Disarms and returns the timers due at `now`.
    pub fn expired(&mut self, now: Instant) -> impl Iterator<Item = Timer> {
        let mut due = [None; 3];
        for t in ALL {
            if self.0[t as usize].is_some_and(|at| at <= now) {
                self.0[t as usize] = None;
                due[t as usize] = Some(t);
            }
        }
        due.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_the_earliest_and_expired_disarms() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0);
        assert_eq!(t.next(), Some(t0 + TICK));
        t.set(Timer::PersistRetry, t0 + Duration::from_millis(50));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(t.expired(t0).count(), 0);
        let due: Vec<Timer> = t.expired(t0 + TICK).collect();
        assert_eq!(due, [Timer::Tick, Timer::PersistRetry]);
        assert_eq!(t.next(), None);
        t.set(Timer::LivePersist, t0);
        assert_eq!(t.next(), Some(t0));
        t.stop(Timer::LivePersist);
        assert_eq!(t.next(), None);
    }
}

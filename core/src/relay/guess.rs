//! Rate limiting of failed join attempts per source address (token guessing).

use std::collections::HashMap;
use std::net::IpAddr;

/// Failed attempts allowed per address per window.
pub const MAX_FAILURES: u32 = 10;
/// The window in seconds.
pub const WINDOW_SECS: u64 = 60;
/// Addresses tracked at most; beyond that the oldest windows are forgotten.
pub const MAX_TRACKED: usize = 4096;

/// Counts failures per address in fixed windows, with bounded memory.
#[derive(Debug, Default)]
pub struct GuessLimiter {
    seen: HashMap<IpAddr, (u64, u32)>,
}

impl GuessLimiter {
    /// Whether `ip` may try again now.
    pub fn allowed(&self, ip: IpAddr, now: u64) -> bool {
        match self.seen.get(&ip) {
            Some((start, n)) if now < start + WINDOW_SECS => *n < MAX_FAILURES,
            _ => true,
        }
    }

    /// Failures of `ip` in its current window.
    pub fn failures(&self, ip: IpAddr, now: u64) -> u32 {
        match self.seen.get(&ip) {
            Some((start, n)) if now < start + WINDOW_SECS => *n,
            _ => 0,
        }
    }

    /// Records a failed attempt; returns the failures in the current window.
    pub fn fail(&mut self, ip: IpAddr, now: u64) -> u32 {
        if self.seen.len() >= MAX_TRACKED && !self.seen.contains_key(&ip) {
            self.seen.retain(|_, (start, _)| now < *start + WINDOW_SECS);
            if self.seen.len() >= MAX_TRACKED {
                self.seen.clear();
            }
        }
        let e = self.seen.entry(ip).or_insert((now, 0));
        if now >= e.0 + WINDOW_SECS {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1
    }

    /// Addresses tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_window() {
        let mut g = GuessLimiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(g.allowed(ip, 100));
            g.fail(ip, 100);
        }
        assert!(!g.allowed(ip, 100));
        assert!(!g.allowed(ip, 159));
        assert!(g.allowed(ip, 160));
        assert_eq!(g.failures(ip, 159), MAX_FAILURES);
        assert_eq!(g.failures(ip, 160), 0);
        assert!(g.allowed("10.0.0.2".parse().unwrap(), 100));
    }

    #[test]
    fn memory_is_bounded() {
        let mut g = GuessLimiter::default();
        for i in 0..(MAX_TRACKED as u32 * 3) {
            g.fail(IpAddr::from(std::net::Ipv4Addr::from(i)), 5);
        }
        assert!(g.len() <= MAX_TRACKED);
    }
}

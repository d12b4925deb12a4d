//! Which way the node's WireGuard datagrams go: UDP, or the stream to the relay's URL.
//!
//! In `auto` the node starts on UDP. A handshake initiation sent over UDP that gets no answer
//! within [`FALLBACK_AFTER`] moves it to the stream (when the relay has a URL). On the stream
//! it probes UDP every [`PROBE_EVERY`] with a handshake initiation over UDP; the first
//! authenticated datagram that arrives over UDP moves it back. The WireGuard session is the
//! same on both ways, so the applications' connections carry on across a move.
//!
//! The driver reports what it sent and received with `now`, and asks [`Chooser::poll`] what
//! to do; nothing here reads a clock.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long an unanswered handshake over UDP waits before the stream is used.
pub const FALLBACK_AFTER: Duration = Duration::from_secs(3);
/// How often UDP is tried again while the stream is in use.
pub const PROBE_EVERY: Duration = Duration::from_secs(30);

/// What the user allows (`OVERLAY_TRANSPORT`, `overlay join --transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// UDP first, the stream when UDP gets no answer, back when it does.
    #[default]
    Auto,
    /// UDP only.
    Udp,
    /// The stream only.
    Tcp,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Udp => "udp",
            Mode::Tcp => "tcp",
        })
    }
}

/// An unknown transport mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?}: use auto, udp or tcp")]
pub struct ModeError(pub String);

impl FromStr for Mode {
    type Err = ModeError;

    fn from_str(s: &str) -> Result<Mode, ModeError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Mode::Auto),
            "udp" => Ok(Mode::Udp),
            "tcp" => Ok(Mode::Tcp),
            _ => Err(ModeError(s.chars().take(40).collect())),
        }
    }
}

/// The way in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Datagrams over UDP to the relay's endpoint.
    Udp,
    /// Datagrams over the stream to the relay's URL.
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// What the driver is to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send from now on over this transport (and start a handshake over it when it is the stream).
    Switch(Transport),
    /// Send a handshake initiation over UDP, as a probe (stay on the stream).
    ProbeUdp,
}

/// The transport decision of one node.
#[derive(Debug)]
pub struct Chooser {
    mode: Mode,
    has_url: bool,
    current: Transport,
    /// When the oldest handshake initiation over UDP not yet answered went out.
    unanswered_udp: Option<Instant>,
    next_probe: Option<Instant>,
}

impl Chooser {
    /// A chooser for `mode`; without a relay URL the stream is never chosen in `auto`.
    pub fn new(mode: Mode, has_url: bool) -> Chooser {
        Chooser {
            mode,
            has_url,
            current: if mode == Mode::Tcp {
                Transport::Tcp
            } else {
                Transport::Udp
            },
            unanswered_udp: None,
            next_probe: None,
        }
    }

    /// The transport in use.
    pub fn current(&self) -> Transport {
        self.current
    }

    /// The mode it was made with.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// A handshake initiation went out over UDP at `now` (on the UDP transport, or a probe).
    pub fn udp_initiation_sent(&mut self, now: Instant) {
        self.unanswered_udp.get_or_insert(now);
    }

    /// An authenticated datagram arrived over UDP: UDP works.
    pub fn udp_answered(&mut self, _now: Instant) -> Option<Action> {
        self.unanswered_udp = None;
        if self.mode == Mode::Auto && self.current == Transport::Tcp {
            self.current = Transport::Udp;
            self.next_probe = None;
            return Some(Action::Switch(Transport::Udp));
        }
        None
    }

    /// What to do at `now`, if anything; call it every timer tick.
    pub fn poll(&mut self, now: Instant) -> Option<Action> {
        if self.mode != Mode::Auto || !self.has_url {
            return None;
        }
        match self.current {
            Transport::Udp => {
                let since = self.unanswered_udp?;
                if now.saturating_duration_since(since) < FALLBACK_AFTER {
                    return None;
                }
                self.current = Transport::Tcp;
                self.unanswered_udp = None;
                self.next_probe = Some(now + PROBE_EVERY);
                Some(Action::Switch(Transport::Tcp))
            }
            Transport::Tcp => {
                let due = self.next_probe.get_or_insert(now + PROBE_EVERY);
                if now < *due {
                    return None;
                }
                *due = now + PROBE_EVERY;
                // A probe that goes unanswered must not count against UDP later.
                self.unanswered_udp = None;
                Some(Action::ProbeUdp)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_after_an_unanswered_handshake_and_returns_when_udp_answers() {
        let t0 = Instant::now();
        let mut c = Chooser::new(Mode::Auto, true);
        assert_eq!(c.current(), Transport::Udp);
        assert_eq!(c.poll(t0), None, "nothing sent yet");
        c.udp_initiation_sent(t0);
        c.udp_initiation_sent(t0 + Duration::from_secs(2));
        assert_eq!(c.poll(t0 + Duration::from_millis(2900)), None);
        assert_eq!(
            c.poll(t0 + FALLBACK_AFTER),
            Some(Action::Switch(Transport::Tcp)),
            "measured from the first unanswered initiation"
        );
        assert_eq!(c.current(), Transport::Tcp);
        let t1 = t0 + FALLBACK_AFTER;
        assert_eq!(c.poll(t1 + Duration::from_secs(29)), None);
        assert_eq!(c.poll(t1 + PROBE_EVERY), Some(Action::ProbeUdp));
        assert_eq!(c.poll(t1 + PROBE_EVERY), None, "one probe per period");
        assert_eq!(c.poll(t1 + 2 * PROBE_EVERY), Some(Action::ProbeUdp));
        assert_eq!(
            c.udp_answered(t1 + 2 * PROBE_EVERY),
            Some(Action::Switch(Transport::Udp))
        );
        assert_eq!(c.current(), Transport::Udp);
        assert_eq!(c.udp_answered(t1 + 2 * PROBE_EVERY), None);
    }

    #[test]
    fn an_answered_handshake_keeps_udp() {
        let t0 = Instant::now();
        let mut c = Chooser::new(Mode::Auto, true);
        c.udp_initiation_sent(t0);
        assert_eq!(c.udp_answered(t0 + Duration::from_millis(5)), None);
        assert_eq!(c.poll(t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn fixed_modes_and_no_url_never_switch() {
        let t0 = Instant::now();
        for (mode, has_url, want) in [
            (Mode::Udp, true, Transport::Udp),
            (Mode::Tcp, true, Transport::Tcp),
            (Mode::Auto, false, Transport::Udp),
        ] {
            let mut c = Chooser::new(mode, has_url);
            c.udp_initiation_sent(t0);
            assert_eq!(c.poll(t0 + Duration::from_secs(100)), None, "{mode}");
            assert_eq!(c.udp_answered(t0), None);
            assert_eq!(c.current(), want);
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("TCP".parse::<Mode>(), Ok(Mode::Tcp));
        assert_eq!(" auto".parse::<Mode>(), Ok(Mode::Auto));
        assert!("quic".parse::<Mode>().is_err());
    }
}

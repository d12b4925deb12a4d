//! The real callers behind connections from the relay: the relay announces each one on the
//! control channel (`overlay_core::transport::control::CallerNotice`) before the connection's first
//! packet, keyed by the service's address and the relay's source port. Only the daemon reads
//! the control channel and only the relay can send on it, so the entries cannot be forged by
//! other nodes or local users. Bounded: the oldest entries go first.

use overlay_core::transport::control::Caller;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::sync::Mutex;

/// Callers remembered at most (a connection looks its caller up when its first bytes come,
/// a moment after the notice).
pub const MAX_CALLERS: usize = 4096;

/// A connection from the relay: (service address, relay port).
type Key = (SocketAddrV4, u16);

/// Callers by (service address, relay port).
#[derive(Default)]
pub struct Callers {
    /// The callers, and their keys oldest first.
    inner: Mutex<(HashMap<Key, Caller>, VecDeque<Key>)>,
}

impl Callers {
    /// Records a notice from the relay.
    pub fn insert(&self, c: Caller) {
        let key = (c.service, c.port);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *g;
        if map.insert(key, c).is_none() {
            order.push_back(key);
        }
        while map.len() > MAX_CALLERS {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }

    /// The caller of the connection from the relay's `port` to `service`.
    pub fn get(&self, service: SocketAddrV4, port: u16) -> Option<Caller> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.get(&(service, port)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(port: u16) -> Caller {
        Caller {
            service: "100.64.4.2:8080".parse().unwrap(),
            port,
            address: "10.0.0.9:1234".into(),
            forwarded_for: None,
            via: Some("front".into()),
        }
    }

    #[test]
    fn keeps_the_newest_and_is_bounded() {
        let c = Callers::default();
        for p in 0..(MAX_CALLERS as u16 + 10) {
            c.insert(caller(p));
        }
        let svc = "100.64.4.2:8080".parse().unwrap();
        assert!(c.get(svc, 0).is_none(), "the oldest went");
        assert!(c.get(svc, MAX_CALLERS as u16 + 9).is_some());
        // A reused port: the newer notice wins.
        let mut newer = caller(20);
        newer.address = "10.0.0.10:1".into();
        c.insert(newer.clone());
        assert_eq!(c.get(svc, 20), Some(newer));
    }
}

//! The hub's output queues: datagrams to send ([`Hub::poll_transmit`]) and requests to the
//! driver ([`Hub::poll_event`]), each with a bound, since outside input fills them.
//!
//! [`Hub::poll_transmit`]: super::Hub::poll_transmit
//! [`Hub::poll_event`]: super::Hub::poll_event

use super::Event;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// Datagrams queued at most; more are dropped (counted as undeliverable). The driver drains
/// after each datagram it hands in, so only a notice to every node comes near it.
pub const MAX_TRANSMITS: usize = 32_768;
/// Bytes of queued datagrams at most.
pub const MAX_TRANSMIT_BYTES: usize = 8 << 20;
/// Events queued at most; packets for the gateway beyond it are dropped (TCP retransmits).
/// Persist requests are never dropped, and there is at most one.
pub const MAX_EVENTS: usize = 4096;

/// A datagram to send, borrowed from the hub until the next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where it goes: a UDP address, or a stream's address (`crate::transport::stream::addr`).
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: &'a [u8],
}

/// Datagrams laid out back to back in one buffer, handed out in order.
#[derive(Default)]
pub(super) struct Outbox {
    bytes: Vec<u8>,
    items: Vec<(SocketAddr, usize, usize)>,
    /// The next item to hand out.
    next: usize,
    /// Dropped because the queue was full, not yet counted by the hub.
    pub(super) dropped: u64,
}

impl Outbox {
    /// Queues `d` for `to`, or drops it when the queue is full.
    pub(super) fn push(&mut self, to: SocketAddr, d: &[u8]) {
        if self.next == self.items.len() && self.next > 0 {
            self.bytes.clear();
            self.items.clear();
            self.next = 0;
        }
        if self.items.len() - self.next >= MAX_TRANSMITS
            || self.bytes.len() + d.len() > MAX_TRANSMIT_BYTES
        {
            self.dropped += 1;
            return;
        }
        self.items.push((to, self.bytes.len(), d.len()));
        self.bytes.extend_from_slice(d);
    }

    /// The next datagram in order.
    pub(super) fn pop(&mut self) -> Option<Transmit<'_>> {
        let Some(&(destination, start, len)) = self.items.get(self.next) else {
            self.bytes.clear();
            self.items.clear();
            self.next = 0;
            return None;
        };
        self.next += 1;
        Some(Transmit {
            destination,
            contents: &self.bytes[start..start + len],
        })
    }

    /// Datagrams waiting.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.items.len() - self.next
    }
}

/// Requests to the driver, in order.
#[derive(Default)]
pub(super) struct Events {
    queue: VecDeque<Event>,
    /// A `RegistryChanged` is queued (one says it all).
    registry_changed: bool,
    /// A `FrontsChanged` is queued.
    fronts_changed: bool,
}

impl Events {
    /// Queues `e`; false when the queue is full and it was dropped. Persist requests always go
    /// in (at most one is outstanding, and acknowledged replies wait for them).
    pub(super) fn push(&mut self, e: Event) -> bool {
        match e {
            Event::RegistryChanged if self.registry_changed => return true,
            Event::RegistryChanged => self.registry_changed = true,
            Event::FrontsChanged if self.fronts_changed => return true,
            Event::FrontsChanged => self.fronts_changed = true,
            Event::Persist { .. } => {}
            _ if self.queue.len() >= MAX_EVENTS => return false,
            _ => {}
        }
        self.queue.push_back(e);
        true
    }

    /// The oldest request.
    pub(super) fn pop(&mut self) -> Option<Event> {
        let e = self.queue.pop_front()?;
        match e {
            Event::RegistryChanged => self.registry_changed = false,
            Event::FrontsChanged => self.fronts_changed = false,
            _ => {}
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmits_come_out_in_order_and_the_queue_is_bounded() {
        let mut o = Outbox::default();
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        o.push(a, b"one");
        o.push(a, b"two");
        assert_eq!(o.pop().map(|t| t.contents.to_vec()), Some(b"one".to_vec()));
        o.push(a, b"three");
        assert_eq!(o.pop().map(|t| t.contents.to_vec()), Some(b"two".to_vec()));
        assert_eq!(
            o.pop().map(|t| t.contents.to_vec()),
            Some(b"three".to_vec())
        );
        assert!(o.pop().is_none());
        assert!(o.bytes.is_empty(), "drained: the buffer is reused");
        for _ in 0..MAX_TRANSMITS + 3 {
            o.push(a, b"x");
        }
        assert_eq!((o.len(), o.dropped), (MAX_TRANSMITS, 3));
        let big = vec![0u8; MAX_TRANSMIT_BYTES];
        while o.pop().is_some() {}
        o.push(a, &big);
        o.push(a, b"y");
        assert_eq!((o.len(), o.dropped), (1, 4));
    }

    #[test]
    fn events_are_bounded_but_persist_requests_never_dropped() {
        let mut e = Events::default();
        let lookup = || {
            Event::Lookup(crate::relay::LookupRequest {
                token: 1,
                name: "x".into(),
            })
        };
        for _ in 0..MAX_EVENTS {
            assert!(e.push(lookup()));
        }
        assert!(!e.push(lookup()));
        assert!(e.push(Event::Persist {
            version: 1,
            state: Box::default()
        }));
        assert!(e.push(Event::RegistryChanged));
        assert!(e.push(Event::RegistryChanged));
        let mut n = 0;
        while e.pop().is_some() {
            n += 1;
        }
        assert_eq!(n, MAX_EVENTS + 2, "one RegistryChanged for two");
    }
}

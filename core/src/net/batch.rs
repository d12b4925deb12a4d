//! Outgoing datagrams laid out back to back, grouped into runs that one UDP GSO send can carry.
//!
//! A TCP flow through the tunnel produces long trains of equal-sized WireGuard datagrams to one
//! destination. The kernel sends such a train in one `sendmsg` with `UDP_SEGMENT` when the
//! datagrams are contiguous, all of one size, and only the last may be shorter. [`SendBatch`]
//! keeps that layout while the caller encrypts straight into it, so nothing is copied and the
//! number of send calls drops from one per packet to one per run.

use std::net::SocketAddr;

/// Largest UDP payload one GSO send may carry: 65535 less the IPv4 and UDP headers (IPv6
/// would allow a little more).
pub const MAX_RUN_BYTES: usize = 65_507;

/// One group of datagrams for a single send: `segment` bytes each, the last possibly shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Where all its datagrams go.
    pub to: SocketAddr,
    /// Offset of the first datagram in the batch's buffer.
    pub start: usize,
    /// Total bytes of the run.
    pub len: usize,
    /// Size of every datagram but possibly the last.
    pub segment: usize,
    /// Datagrams in the run.
    pub count: usize,
    /// The last datagram was shorter than `segment`: nothing more may join.
    closed: bool,
}

impl Run {
    /// A run of one datagram of `len` bytes to `to`, at offset `start`.
    pub fn begin(to: SocketAddr, start: usize, len: usize) -> Run {
        Run {
            to,
            start,
            len,
            segment: len,
            count: 1,
            closed: false,
        }
    }

    /// Adds the next datagram (`len` bytes to `to`, stored right after the run) if one GSO send
    /// can still carry it: same destination, not empty, not longer than the segment, the run
    /// not closed by a shorter one, within `max_segments` and [`MAX_RUN_BYTES`]. False, and the
    /// run unchanged, otherwise.
    pub fn extend(&mut self, to: SocketAddr, len: usize, max_segments: usize) -> bool {
        let joins = self.to == to
            && !self.closed
            && len > 0
            && len <= self.segment
            && self.count < max_segments
            && self.len + len <= MAX_RUN_BYTES;
        if joins {
            self.len += len;
            self.count += 1;
            self.closed = len < self.segment;
        }
        joins
    }
}

/// A fixed-capacity buffer of outgoing datagrams, grouped into GSO runs.
pub struct SendBatch {
    buf: Vec<u8>,
    used: usize,
    runs: Vec<Run>,
    /// Datagrams in `runs`.
    count: usize,
    max_segments: usize,
    /// Where [`SendBatch::group_by_destination`] lays datagrams out anew (allocated on first
    /// use: the node's batch, with one destination, never needs it).
    regroup: Vec<u8>,
    order: Vec<usize>,
    regrouped: Vec<Run>,
}

impl SendBatch {
    /// A batch of `capacity` bytes whose runs hold at most `max_segments` datagrams (1 when the
    /// socket cannot do GSO: every datagram is then a run of its own).
    pub fn new(capacity: usize, max_segments: usize) -> SendBatch {
        SendBatch {
            buf: vec![0; capacity],
            used: 0,
            runs: Vec::with_capacity(64),
            count: 0,
            max_segments: max_segments.max(1),
            regroup: Vec::new(),
            order: Vec::new(),
            regrouped: Vec::new(),
        }
    }

    /// Changes the segment limit (the socket found out GSO does not work); takes effect for
    /// datagrams added from now on.
    pub fn set_max_segments(&mut self, n: usize) {
        self.max_segments = n.max(1);
    }

    /// Free space for the next datagram, at least `n` bytes; `None` when the batch must be
    /// sent first. Write into it, then call [`SendBatch::commit`].
    pub fn spare(&mut self, n: usize) -> Option<&mut [u8]> {
        let end = self.used.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        Some(&mut self.buf[self.used..])
    }

    /// Adds the `len` bytes just written at the start of [`SendBatch::spare`] as a datagram to `to`.
    pub fn commit(&mut self, to: SocketAddr, len: usize) {
        let len = len.min(self.buf.len() - self.used);
        if len == 0 {
            return;
        }
        let start = self.used;
        self.used += len;
        self.count += 1;
        if let Some(run) = self.runs.last_mut() {
            if run.extend(to, len, self.max_segments) {
                return;
            }
        }
        self.runs.push(Run::begin(to, start, len));
    }

    /// Copies `datagram` in; `false` when it does not fit (send the batch first).
    pub fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        match self.spare(datagram.len()) {
            Some(space) => {
                space[..datagram.len()].copy_from_slice(datagram);
                self.commit(to, datagram.len());
                true
            }
            None => false,
        }
    }

    /// The runs in the order their datagrams were added.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// The bytes of one run.
    pub fn bytes(&self, run: &Run) -> &[u8] {
        &self.buf[run.start..run.start + run.len]
    }

    /// Datagrams waiting.
    pub fn datagrams(&self) -> usize {
        self.count
    }

    /// Lays the datagrams out again so that each destination's come together (in the order
    /// they were added) and form runs as long as GSO allows. Output for many peers arrives
    /// interleaved (a bulk flow one way, its acks the other); grouped, each peer's burst is
    /// one send instead of one per datagram. Nothing is copied when every destination's
    /// datagrams are already together.
    pub fn group_by_destination(&mut self) {
        self.order.clear();
        self.order.extend(0..self.runs.len());
        let runs = &self.runs;
        self.order.sort_unstable_by_key(|&i| (runs[i].to, i));
        // Already together when each destination's runs are consecutive (the order of the
        // destinations does not matter).
        let together = self
            .order
            .windows(2)
            .all(|w| runs[w[0]].to != runs[w[1]].to || w[1] == w[0] + 1);
        if together {
            return;
        }
        if self.regroup.len() != self.buf.len() {
            self.regroup = vec![0; self.buf.len()];
        }
        let mut regrouped = std::mem::take(&mut self.regrouped);
        regrouped.clear();
        let mut used = 0;
        for &i in &self.order {
            let run = self.runs[i];
            let bytes = &self.buf[run.start..run.start + run.len];
            for d in bytes.chunks(run.segment.max(1)) {
                self.regroup[used..used + d.len()].copy_from_slice(d);
                let joined = regrouped
                    .last_mut()
                    .is_some_and(|r| r.extend(run.to, d.len(), self.max_segments));
                if !joined {
                    regrouped.push(Run::begin(run.to, used, d.len()));
                }
                used += d.len();
            }
        }
        std::mem::swap(&mut self.buf, &mut self.regroup);
        self.regrouped = std::mem::replace(&mut self.runs, regrouped);
        self.used = used;
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Forgets everything (after sending).
    pub fn clear(&mut self) {
        self.used = 0;
        self.count = 0;
        self.runs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn sizes(b: &SendBatch) -> Vec<(u16, usize, usize, usize)> {
        b.runs()
            .iter()
            .map(|r| (r.to.port(), r.segment, r.count, r.len))
            .collect()
    }

    #[test]
    fn equal_datagrams_to_one_peer_form_one_run() {
        let mut b = SendBatch::new(1 << 17, 64);
        for _ in 0..10 {
            assert!(b.push(a(1), &[7; 1452]));
        }
        assert_eq!(sizes(&b), vec![(1, 1452, 10, 14520)]);
        assert_eq!(b.bytes(&b.runs()[0]).len(), 14520);
        assert_eq!(b.datagrams(), 10);
    }

    #[test]
    fn a_shorter_datagram_ends_the_run_and_a_longer_one_starts_another() {
        let mut b = SendBatch::new(1 << 17, 64);
        b.push(a(1), &[0; 100]);
        b.push(a(1), &[0; 100]);
        b.push(a(1), &[0; 60]); // short: closes
        b.push(a(1), &[0; 60]); // cannot join a closed run
        b.push(a(1), &[0; 80]); // longer than 60: new run
        assert_eq!(
            sizes(&b),
            vec![(1, 100, 3, 260), (1, 60, 1, 60), (1, 80, 1, 80)]
        );
    }

    #[test]
    fn destinations_segment_limits_and_byte_limits_split_runs() {
        let mut b = SendBatch::new(1 << 18, 3);
        for _ in 0..4 {
            b.push(a(1), &[0; 10]);
        }
        b.push(a(2), &[0; 10]);
        assert_eq!(
            sizes(&b),
            vec![(1, 10, 3, 30), (1, 10, 1, 10), (2, 10, 1, 10)]
        );

        let mut b = SendBatch::new(1 << 18, 1000);
        for _ in 0..50 {
            b.push(a(1), &[0; 1452]);
        }
        let runs = b.runs();
        assert!(runs.iter().all(|r| r.len <= MAX_RUN_BYTES));
        assert_eq!(runs.iter().map(|r| r.count).sum::<usize>(), 50);
        assert_eq!(runs.len(), 2);
    }

    #[test]
    fn a_full_batch_refuses_and_clear_empties_it() {
        let mut b = SendBatch::new(100, 64);
        assert!(b.push(a(1), &[1; 60]));
        assert!(!b.push(a(1), &[1; 60]));
        assert!(b.spare(41).is_none());
        b.clear();
        assert!(b.is_empty());
        assert!(b.push(a(1), &[2; 100]));
        assert_eq!(b.bytes(&b.runs()[0]), &[2; 100][..]);
    }

    #[test]
    fn without_gso_every_datagram_is_its_own_run() {
        let mut b = SendBatch::new(1 << 16, 1);
        b.push(a(1), &[0; 10]);
        b.push(a(1), &[0; 10]);
        assert_eq!(sizes(&b), vec![(1, 10, 1, 10), (1, 10, 1, 10)]);
    }

    #[test]
    fn grouping_by_destination_keeps_each_ones_order() {
        let mut b = SendBatch::new(1 << 16, 64);
        for i in 0..5u8 {
            b.push(a(1), &[i; 100]);
            b.push(a(2), &[i; 10]);
        }
        b.push(a(1), &[9; 40]);
        assert_eq!(b.runs().len(), 11);
        b.group_by_destination();
        assert_eq!(sizes(&b), vec![(1, 100, 6, 540), (2, 10, 5, 50)]);
        let one = b.bytes(&b.runs()[0]);
        assert_eq!(&one[..100], &[0; 100][..]);
        assert_eq!(&one[400..500], &[4; 100][..]);
        assert_eq!(&one[500..], &[9; 40][..]);
        assert_eq!(b.bytes(&b.runs()[1])[40..], [4; 10]);
        assert_eq!(b.datagrams(), 11);
        // Already grouped: nothing moves.
        let before = b.runs().to_vec();
        b.group_by_destination();
        assert_eq!(b.runs(), &before[..]);
    }

    #[test]
    fn commit_in_place_keeps_what_was_written() {
        let mut b = SendBatch::new(1 << 12, 64);
        let s = b.spare(3).unwrap();
        s[..3].copy_from_slice(b"abc");
        b.commit(a(9), 3);
        let s = b.spare(3).unwrap();
        s[..3].copy_from_slice(b"def");
        b.commit(a(9), 3);
        assert_eq!(b.bytes(&b.runs()[0]), b"abcdef");
    }
}

//! Passive TCP reassembly from IPv4 packets (read through the `wire` views), read-only: what each side of a connection sent,
//! in order.
//!
//! [`Tracker::packet`] takes every packet seen (both directions) and queues [`TcpEvent`]s. Only
//! connections whose SYN was seen, and that the caller chose to follow, are tracked. Segments
//! that arrive early wait in a small per-direction buffer; when it overflows, or a segment never
//! comes, the missing bytes become a [`TcpEvent::Gap`] and the stream continues after them.
//! Sequence numbers compare modulo 2^32. Memory: at most [`TcpLimits::max_connections`]
//! connections, each with at most [`TcpLimits::max_out_of_order`] bytes buffered per direction.

use crate::net::wire;
use crate::traffic::http1::Side;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;

/// Bounds of the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections tracked at once; the least recently active goes when a new one comes.
    pub max_connections: usize,
    /// Out-of-order bytes buffered per direction.
    pub max_out_of_order: usize,
    /// A connection silent this long is given up.
    pub idle_ms: u64,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 4096,
            max_out_of_order: 256 * 1024,
            idle_ms: 300_000,
        }
    }
}

/// A connection: who sent the SYN, and to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The side that sent the SYN.
    pub client: SocketAddrV4,
    /// The side it connected to.
    pub server: SocketAddrV4,
}

/// How a tracked connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEnd {
    /// Both sides sent FIN.
    Fin,
    /// A RST.
    Reset,
    /// Silent for too long.
    Idle,
    /// Dropped for a newer connection.
    Evicted,
}

/// What the tracker saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpEvent {
    /// A new connection (its SYN).
    Open(FlowKey),
    /// In-order bytes from one side.
    Data(FlowKey, Side, Vec<u8>),
    /// Bytes from one side that were never seen (count, when known).
    Gap(FlowKey, Side, u64),
    /// The connection ended.
    Close(FlowKey, TcpEnd),
}

/// The fields of a TCP segment the tracker uses, read from its `wire` view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpHeader {
    seq: u32,
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
}

/// `a` comes before `b` in sequence space.
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[derive(Debug, Default)]
struct Stream {
    /// The next sequence number expected; `None` before the SYN of this side.
    next: Option<u32>,
    /// Segments that came early: (seq, bytes).
    early: Vec<(u32, Vec<u8>)>,
    early_bytes: usize,
    /// Sequence number of this side's FIN, once seen.
    fin_at: Option<u32>,
    finished: bool,
}

#[derive(Debug)]
struct Conn {
    streams: [Stream; 2],
    last_ms: u64,
}

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

/// Follows TCP connections through the packets of both directions.
#[derive(Debug)]
pub struct Tracker {
    limits: TcpLimits,
    conns: HashMap<FlowKey, Conn>,
    out: VecDeque<TcpEvent>,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(limits: TcpLimits) -> Self {
        Tracker {
            limits,
            conns: HashMap::new(),
            out: VecDeque::new(),
        }
    }

    /// Connections tracked.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Looks at one IPv4 packet. A SYN starts tracking when `follow` says so for its key.
    pub fn packet(&mut self, pkt: &[u8], now_ms: u64, follow: impl FnOnce(&FlowKey) -> bool) {
        // Fragments (never on our TUN, which has DF traffic) are not reassembled.
        let Ok(ip) = wire::ipv4(pkt) else {
            return;
        };
        let Ok(seg) = wire::tcp(&ip) else {
            return;
        };
        let data = seg.payload();
        let h = TcpHeader {
            // The sequence space wraps: the bits are what counts.
            seq: seg.seq_number().0 as u32,
            syn: seg.syn(),
            ack: seg.ack(),
            fin: seg.fin(),
            rst: seg.rst(),
        };
        let src = SocketAddrV4::new(ip.src_addr(), seg.src_port());
        let dst = SocketAddrV4::new(ip.dst_addr(), seg.dst_port());
        let fwd = FlowKey {
            client: src,
            server: dst,
        };
        let rev = FlowKey {
            client: dst,
            server: src,
        };
        let (key, side) = if self.conns.contains_key(&fwd) {
            (fwd, Side::Client)
        } else if self.conns.contains_key(&rev) {
            (rev, Side::Server)
        } else {
            if !h.syn || h.ack || !follow(&fwd) {
                return;
            }
            self.open(fwd, now_ms);
            (fwd, Side::Client)
        };
        self.segment(key, side, &h, data, now_ms);
    }

    fn open(&mut self, key: FlowKey, now_ms: u64) {
        if self.conns.len() >= self.limits.max_connections {
            let oldest = self
                .conns
                .iter()
                .min_by_key(|(_, c)| c.last_ms)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.conns.remove(&k);
                self.out.push_back(TcpEvent::Close(k, TcpEnd::Evicted));
            }
        }
        self.conns.insert(
            key,
            Conn {
                streams: [Stream::default(), Stream::default()],
                last_ms: now_ms,
            },
        );
        self.out.push_back(TcpEvent::Open(key));
    }

    fn segment(&mut self, key: FlowKey, side: Side, h: &TcpHeader, data: &[u8], now_ms: u64) {
        let max_early = self.limits.max_out_of_order;
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.last_ms = now_ms;
        if h.rst {
            self.conns.remove(&key);
            self.out.push_back(TcpEvent::Close(key, TcpEnd::Reset));
            return;
        }
        let s = &mut conn.streams[idx(side)];
        let mut seq = h.seq;
        if h.syn {
            if s.next.is_none() {
                s.next = Some(h.seq.wrapping_add(1));
            }
            seq = h.seq.wrapping_add(1);
        }
        let next = *s.next.get_or_insert(seq);
        if h.fin {
            s.fin_at = Some(seq.wrapping_add(data.len() as u32));
        }
        let out = &mut self.out;
        if !data.is_empty() {
            if seq_lt(next, seq) {
                // Early: keep it until the hole fills, within the budget.
                let already = s.early.iter().any(|(q, _)| *q == seq);
                if !already {
                    if s.early_bytes + data.len() > max_early {
                        skip_hole(s, key, side, out);
                    }
                    if s.next.is_some_and(|n| seq_lt(n, seq)) {
                        s.early_bytes += data.len();
                        s.early.push((seq, data.to_vec()));
                    } else {
                        deliver(s, key, side, seq, data, out);
                    }
                }
            } else {
                deliver(s, key, side, seq, data, out);
            }
            drain_early(s, key, side, out);
        }
        if let (Some(fin), Some(n)) = (s.fin_at, s.next) {
            if fin == n && !s.finished {
                s.finished = true;
                s.next = Some(n.wrapping_add(1));
            }
        }
        if conn.streams.iter().all(|s| s.fin_at.is_some()) {
            // Both sides are done sending: whatever is still missing will not come.
            for (i, s) in conn.streams.iter_mut().enumerate() {
                let side = if i == 0 { Side::Client } else { Side::Server };
                while !s.early.is_empty() {
                    skip_hole(s, key, side, &mut self.out);
                }
                if let (Some(fin), Some(n)) = (s.fin_at, s.next) {
                    if !s.finished && seq_lt(n, fin) {
                        self.out.push_back(TcpEvent::Gap(
                            key,
                            side,
                            u64::from(fin.wrapping_sub(n)),
                        ));
                    }
                }
                s.finished = true;
            }
        }
        if conn.streams.iter().all(|s| s.finished) {
            self.conns.remove(&key);
            self.out.push_back(TcpEvent::Close(key, TcpEnd::Fin));
        }
    }

    /// Gives up on connections silent for longer than the idle limit.
    pub fn expire(&mut self, now_ms: u64) {
        let idle = self.limits.idle_ms;
        let dead: Vec<FlowKey> = self
            .conns
            .iter()
            .filter(|(_, c)| now_ms.saturating_sub(c.last_ms) > idle)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.conns.remove(&k);
            self.out.push_back(TcpEvent::Close(k, TcpEnd::Idle));
        }
    }

    /// The next event, in order.
    pub fn poll(&mut self) -> Option<TcpEvent> {
        self.out.pop_front()
    }
}

/// Gives out the part of `data` (starting at `seq`) at or after the expected sequence number.
fn deliver(
    s: &mut Stream,
    key: FlowKey,
    side: Side,
    seq: u32,
    data: &[u8],
    out: &mut VecDeque<TcpEvent>,
) {
    let Some(next) = s.next else {
        return;
    };
    let already = next.wrapping_sub(seq) as usize;
    if already >= data.len() {
        return; // A retransmission of bytes already given out.
    }
    let fresh = data.get(already..).unwrap_or(&[]);
    s.next = Some(next.wrapping_add(fresh.len() as u32));
    out.push_back(TcpEvent::Data(key, side, fresh.to_vec()));
}

/// Gives out the buffered segments that became contiguous.
fn drain_early(s: &mut Stream, key: FlowKey, side: Side, out: &mut VecDeque<TcpEvent>) {
    loop {
        let Some(next) = s.next else {
            return;
        };
        let Some(i) = s.early.iter().position(|(q, _)| !seq_lt(next, *q)) else {
            return;
        };
        let (q, d) = s.early.swap_remove(i);
        s.early_bytes -= d.len();
        deliver(s, key, side, q, &d, out);
    }
}

/// The buffer is full: declare the bytes before the earliest buffered segment lost.
fn skip_hole(s: &mut Stream, key: FlowKey, side: Side, out: &mut VecDeque<TcpEvent>) {
    let Some(next) = s.next else {
        return;
    };
    let earliest = s
        .early
        .iter()
        .map(|(q, _)| *q)
        .min_by_key(|q| q.wrapping_sub(next));
    if let Some(q) = earliest {
        out.push_back(TcpEvent::Gap(key, side, u64::from(q.wrapping_sub(next))));
        s.next = Some(q);
        drain_early(s, key, side, out);
    }
}

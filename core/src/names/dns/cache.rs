//! Encoded replies kept per question, so that a repeated query costs a lookup and a copy.
//!
//! Building an answer with hickory takes about 2 µs (two parses, a resolver pass over every
//! instance, an encode, a dozen allocations); the same name is asked again and again, and the
//! reply only differs in the ID and the case of the question. [`AnswerCache`] keys replies by the
//! question as the server sees it: header flags, the name folded to lower case, type, class and the
//! fixed fields of an OPT record; a hit copies the stored reply and patches the ID and the
//! question's case.
//!
//! Only plain queries are cached: opcode QUERY, one question with an uncompressed name, nothing in
//! the answer and authority sections, at most one OPT record without options, no trailing bytes.
//! Everything else (EDNS options, odd counts) goes through [`super::answer`] each time, so the
//! cache never has to imitate its error handling.
//!
//! Staleness: every entry belongs to a generation of the name table, a number the caller bumps
//! whenever anything an answer depends on changes. A lookup with a newer generation empties the
//! cache. Size: two segments of at most [`AnswerCache::new`]'s byte budget each; when the current
//! one is full it becomes the previous one and the old previous one is dropped, and a hit in the
//! previous segment moves the entry back, so names in use stay and a flood of distinct names
//! cannot grow memory.

use super::DnsOutcome;
use std::collections::HashMap;

/// Longest key: flags (2), OPT count (1), name (255), type and class (4), OPT record (11).
const KEY_MAX: usize = 2 + 1 + 255 + 4 + 11;

/// Bytes charged per entry on top of key and reply (map slot, two boxes).
const ENTRY_OVERHEAD: usize = 64;

/// Offset of the question in a message.
const QUESTION: usize = 12;

/// Type code of the OPT pseudo-record.
const OPT: u16 = 41;

/// Replies to recent questions, for one server address and transport.
#[derive(Debug)]
pub struct AnswerCache {
    generation: u64,
    current: HashMap<Box<[u8]>, Box<[u8]>>,
    previous: HashMap<Box<[u8]>, Box<[u8]>>,
    current_bytes: usize,
    segment_bytes: usize,
}

/// A plain query's cache key, built on the stack.
struct Key {
    bytes: [u8; KEY_MAX],
    len: usize,
    /// Length of the question name in the query (and in the reply).
    name_len: usize,
}

impl Key {
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl AnswerCache {
    /// An empty cache holding at most about `2 * segment_bytes` bytes.
    pub fn new(segment_bytes: usize) -> Self {
        AnswerCache {
            generation: 0,
            current: HashMap::new(),
            previous: HashMap::new(),
            current_bytes: 0,
            segment_bytes,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the reply to `query` into `out` and returns its length, if the cache has one for
    /// this `generation` of the name table and it fits `out`.
    pub fn reply(&mut self, query: &[u8], generation: u64, out: &mut [u8]) -> Option<usize> {
        self.sync(generation);
        let key = plain_key(query)?;
        let k = key.as_slice();
        if let Some(stored) = self.current.get(k) {
            return patch(stored, query, key.name_len, out);
        }
        // A name still in use survives the segment turnover.
        let (k, r) = self.previous.remove_entry(k)?;
        let n = patch(&r, query, key.name_len, out);
        self.current_bytes += cost(&k, &r);
        self.current.insert(k, r);
        if self.current_bytes > self.segment_bytes {
            self.turn_over();
        }
        n
    }

    /// Keeps `outcome` as the reply to `query` if it may be reused: a reply (not a forward or a
    /// drop) to a plain query that is not waiting on an on-demand lookup (`asks_relay`), computed
    /// from `generation` of the name table.
    pub fn remember(
        &mut self,
        query: &[u8],
        generation: u64,
        outcome: &DnsOutcome,
        asks_relay: bool,
    ) {
        let DnsOutcome::Reply(reply) = outcome else {
            return;
        };
        if generation > self.generation {
            self.sync(generation);
        }
        if asks_relay || generation != self.generation {
            // An answer from an older table must not outlive it.
            return;
        }
        let Some(key) = plain_key(query) else {
            return;
        };
        // The reply must carry the question where the query had it, so that patching the ID and
        // the name's case is all a hit needs (BADVERS and header-only errors carry none).
        let name = QUESTION..QUESTION + key.name_len;
        let same_question = reply.get(4..6) == Some(&[0, 1])
            && matches!((reply.get(name.clone()), query.get(name)),
                (Some(a), Some(b)) if a.eq_ignore_ascii_case(b));
        if !same_question {
            return;
        }
        let k: Box<[u8]> = key.as_slice().into();
        let r: Box<[u8]> = reply.as_slice().into();
        self.current_bytes += cost(&k, &r);
        if let Some(old) = self.current.insert(k, r) {
            self.current_bytes = self
                .current_bytes
                .saturating_sub(old.len() + ENTRY_OVERHEAD);
        }
        if self.current_bytes > self.segment_bytes {
            self.turn_over();
        }
    }

    fn sync(&mut self, generation: u64) {
        if generation != self.generation {
            self.current.clear();
            self.previous.clear();
            self.current_bytes = 0;
            self.generation = generation;
        }
    }

    fn turn_over(&mut self) {
        self.previous = std::mem::take(&mut self.current);
        self.current_bytes = 0;
    }
}

/// Copies `stored` into `out` with the ID and the question name (its case, for clients that
/// randomize it) taken from `query`.
fn patch(stored: &[u8], query: &[u8], name_len: usize, out: &mut [u8]) -> Option<usize> {
    let out = out.get_mut(..stored.len())?;
    out.copy_from_slice(stored);
    out.get_mut(..2)?.copy_from_slice(query.get(..2)?);
    let name = QUESTION..QUESTION + name_len;
    out.get_mut(name.clone())?.copy_from_slice(query.get(name)?);
    Some(stored.len())
}

fn cost(k: &[u8], r: &[u8]) -> usize {
    k.len() + r.len() + ENTRY_OVERHEAD
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The key of a plain query (see the module doc), or `None` for anything else.
fn plain_key(q: &[u8]) -> Option<Key> {
    let flags = q.get(2..4)?;
    // A query (QR clear) with opcode QUERY.
    if flags.first()? & 0xf8 != 0 {
        return None;
    }
    let (qd, an, ns, ar) = (be16(q, 4)?, be16(q, 6)?, be16(q, 8)?, be16(q, 10)?);
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut key = Key {
        bytes: [0; KEY_MAX],
        len: 0,
        name_len: 0,
    };
    key.bytes[..2].copy_from_slice(flags);
    key.bytes[2] = ar as u8;
    let mut at = QUESTION;
    loop {
        let l = usize::from(*q.get(at)?);
        // Pointers and extended label types: leave them to the full parser.
        if l & 0xc0 != 0 {
            return None;
        }
        at += 1 + l;
        if at - QUESTION > 255 {
            return None;
        }
        if l == 0 {
            break;
        }
    }
    let name = q.get(QUESTION..at)?;
    key.name_len = name.len();
    let mut rest_end = at + 4;
    if ar == 1 {
        // OPT: root name, type 41, class = payload size, TTL = extended rcode, version and
        // flags (DO), no options.
        let opt = q.get(rest_end..rest_end + 11)?;
        if opt.first() != Some(&0) || be16(opt, 1)? != OPT || be16(opt, 9)? != 0 {
            return None;
        }
        rest_end += 11;
    }
    if q.len() != rest_end {
        return None;
    }
    let rest = q.get(at..rest_end)?;
    let end = 3 + name.len() + rest.len();
    let dst = key.bytes.get_mut(3..end)?;
    let (n, r) = dst.split_at_mut(name.len());
    for (d, s) in n.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    r.copy_from_slice(rest);
    key.len = end;
    Some(key)
}

#[cfg(test)]
mod tests;

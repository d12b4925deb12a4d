//! The ring's body log: bodies written one after another into a few large blocks.
//!
//! With one allocation per body, storing a record copied its body into memory the allocator
//! handed back from some evicted record, long out of the cache, and evicting it freed that
//! memory again, at places the prefetcher cannot guess; with a ring smaller than the allocator's
//! arena, freeing also gave pages back to the kernel that the next bodies faulted in again
//! (6,897 page faults in 8 s of the capture bench with a 16 MiB ring; 126 with the log). Here the ring appends each body
//! to the block being written and hands out shared views of it ([`Bytes`]): a record's clone
//! shares its bodies. The ring evicts oldest first, so a block is done with once the oldest
//! record left starts in a later one; its memory is then kept (one spare) for the next block.
//! Writes go one after another, large ones past the cache ([`stream`]), and nothing is freed
//! per record. A body larger than a quarter block keeps the allocation it came in (no copy; in
//! a block it could leave up to that much unused).
//!
//! Memory: the blocks in use (the ring counts them against its cap) and at most one spare.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Smallest and largest block: a ring gets blocks of 1/16 of it up to the largest; a ring too
/// small for blocks of the smallest keeps every body in its own allocation.
const MIN_BLOCK: usize = 4 << 10;
const MAX_BLOCK: usize = 1 << 20;

/// Bodies in blocks written in sequence (see the module docs).
#[derive(Debug)]
pub struct BodyLog {
    /// Bytes per block (0: the log takes no bodies).
    block: usize,
    /// Blocks written full, oldest first: their number, and the handle that can take their
    /// memory back once no record holds a view of it.
    full: VecDeque<(u64, BytesMut)>,
    /// The unwritten rest of the block being written (none before the first body).
    current: Option<BytesMut>,
    /// The number of the block being written.
    seq: u64,
    /// A block's memory, emptied, for the next block.
    spare: Option<BytesMut>,
}

impl BodyLog {
    /// A log for a ring of `cap` bytes.
    pub fn new(cap: usize) -> Self {
        BodyLog {
            block: Some((cap / 16).min(MAX_BLOCK))
                .filter(|b| *b >= MIN_BLOCK)
                .unwrap_or(0),
            full: VecDeque::new(),
            current: None,
            seq: 0,
            spare: None,
        }
    }

    /// Bytes per block.
    pub fn block_size(&self) -> usize {
        self.block
    }

    /// The number of the block being written: every body stored from now on is in it or a
    /// later one.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Blocks in use (written full or being written).
    pub fn blocks(&self) -> usize {
        self.full.len() + usize::from(self.current.is_some())
    }

    /// Whether a body of `len` bytes goes into the log (the rest keep their own allocation).
    pub fn takes(&self, len: usize) -> bool {
        len > 0 && len <= self.block / 4
    }

    /// Copies `data` to the end of the log: its view, and how many bytes of new blocks the
    /// log took for it (0 or one block). `data` must be one the log [`takes`](Self::takes).
    pub fn append(&mut self, data: &[u8]) -> (Bytes, usize) {
        let mut grew = 0;
        let room = self.current.as_ref().map_or(0, |c| c.capacity() - c.len());
        if room < data.len() {
            let next = self.new_block();
            if let Some(done) = self.current.replace(next) {
                self.full.push_back((self.seq, done));
                self.seq += 1;
            }
            grew = self.block;
        }
        let Some(cur) = self.current.as_mut() else {
            return (Bytes::copy_from_slice(data), 0);
        };
        if data.len() >= STREAM_FROM {
            stream::append(cur, data);
        } else {
            cur.extend_from_slice(data);
        }
        (cur.split().freeze(), grew)
    }

    /// Lets go of the blocks numbered below `seq` (no record uses them any more): the bytes
    /// freed from the ring's count.
    pub fn release_before(&mut self, seq: u64) -> usize {
        let mut freed = 0;
        while let Some((n, _)) = self.full.front() {
            if *n >= seq {
                break;
            }
            let Some((_, mut handle)) = self.full.pop_front() else {
                break;
            };
            freed += self.block;
            // The memory comes back only when no view of it is left (a record cloned for a
            // reply may still hold one); then it is the next block's, without an allocation.
            if self.spare.is_none() && handle.try_reclaim(self.block) {
                handle.clear();
                self.spare = Some(handle);
            }
        }
        freed
    }

    /// Lets go of every block (the ring was cleared); the bytes freed.
    pub fn clear(&mut self) -> usize {
        let freed = self.blocks() * self.block;
        self.full.clear();
        self.current = None;
        self.seq += 1;
        freed
    }

    fn new_block(&mut self) -> BytesMut {
        self.spare
            .take()
            .unwrap_or_else(|| BytesMut::with_capacity(self.block))
    }
}

/// Bodies from this size on are written past the cache (see [`stream`]).
const STREAM_FROM: usize = 4 << 10;

/// Writing a body past the cache. A block is memory written a ring ago, long out of the cache:
/// an ordinary store first reads each line in, then writes it back, two trips to memory per
/// line, and pushes out of the cache what the node, its services and the kernel use. A
/// non-temporal store only writes. Measured on a 16 KiB body in a 64 MiB ring: 0.9 µs instead of
/// 1.6 (AMD EPYC, nested VM; docs/benchmarks.md). Small bodies are copied as usual: a line
/// written in part is worse done past the cache.
mod stream {
    use bytes::BytesMut;

    /// Appends `data` to `dst`, which has room for it.
    #[cfg(target_arch = "x86_64")]
    pub fn append(dst: &mut BytesMut, data: &[u8]) {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        let len = dst.len();
        let n = data.len();
        let spare = dst.spare_capacity_mut();
        if spare.len() < n {
            dst.extend_from_slice(data);
            return;
        }
        let to = spare.as_mut_ptr().cast::<u8>();
        let from = data.as_ptr();
        // Bytes up to a 16-byte boundary the usual way, then 16 at a time, then the tail.
        let lead = (to as usize).wrapping_neg() % 16;
        let lead = lead.min(n);
        let whole = lead + (n - lead) / 16 * 16;
        // SAFETY: `to` has room for `n` bytes (checked above) and `from` holds `n`; the two do
        // not overlap (`data` is not in `dst`'s spare room). `to.add(i)` for `i` from `lead`
        // in steps of 16 is 16-byte aligned, as `_mm_stream_si128` needs, and `i + 16 <=
        // whole <= n`. SSE2 is part of every x86_64 target. All `n` bytes are written before
        // `set_len` takes them in.
        unsafe {
            std::ptr::copy_nonoverlapping(from, to, lead);
            let mut i = lead;
            while i < whole {
                let v = _mm_loadu_si128(from.add(i).cast::<__m128i>());
                _mm_stream_si128(to.add(i).cast::<__m128i>(), v);
                i += 16;
            }
            std::ptr::copy_nonoverlapping(from.add(whole), to.add(whole), n - whole);
            // Non-temporal stores are weakly ordered: make them visible before the view is.
            _mm_sfence();
            dst.set_len(len + n);
        }
    }

    /// Appends `data` to `dst` (other targets: the usual copy).
    #[cfg(not(target_arch = "x86_64"))]
    pub fn append(dst: &mut BytesMut, data: &[u8]) {
        dst.extend_from_slice(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_share_blocks_and_come_back_whole() {
        let mut log = BodyLog::new(64 << 10);
        assert_eq!(log.block_size(), MIN_BLOCK);
        let (a, grew) = log.append(b"first body");
        assert_eq!((&a[..], grew), (&b"first body"[..], MIN_BLOCK));
        let (b, grew) = log.append(&[7u8; 1000]);
        assert_eq!((b.len(), grew), (1000, 0));
        assert_eq!(
            &a[..],
            b"first body",
            "a later body leaves an earlier one alone"
        );
        assert_eq!(log.blocks(), 1);
        assert!(log.takes(1024) && !log.takes(1025) && !log.takes(0));
        let big: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let mut log = BodyLog::new(64 << 20);
        let (v, _) = log.append(&big[..STREAM_FROM + 3]);
        assert_eq!(
            &v[..],
            &big[..STREAM_FROM + 3],
            "a body written past the cache"
        );
    }

    #[test]
    fn a_full_block_is_let_go_and_its_memory_used_again() {
        let mut log = BodyLog::new(64 << 10);
        let mut views = Vec::new();
        for i in 0..5u8 {
            views.push(log.append(&[i; 1024]).0);
        }
        // Four bodies fill block 0; the fifth opened block 1.
        assert_eq!((log.seq(), log.blocks()), (1, 2));
        let old = views[0].as_ptr();
        assert_eq!(log.release_before(1), MIN_BLOCK);
        assert!(log.spare.is_none(), "views of block 0 are still held");
        // With every view of a released block gone, its memory is the next block's.
        let mut log = BodyLog::new(64 << 10);
        let first: Vec<Bytes> = (0..4u8).map(|i| log.append(&[i; 1024]).0).collect();
        let old_first = first[0].as_ptr();
        drop(first);
        let _fifth = log.append(&[9; 10]).0;
        assert_eq!(log.release_before(1), MIN_BLOCK);
        assert!(log.spare.is_some());
        // Block 1 holds 10 bytes: the fourth 1 KiB body opens block 2.
        for _ in 0..3 {
            assert_eq!(log.append(&[1; 1024]).1, 0);
        }
        let (reused, grew) = log.append(&[2; 1024]);
        assert_eq!(grew, MIN_BLOCK);
        assert_eq!(reused.as_ptr(), old_first, "the spare block's memory");
        assert!(log.spare.is_none());
        assert!(views.iter().all(|v| v.len() == 1024) && !old.is_null());
    }

    #[test]
    fn streamed_bytes_are_the_bytes_at_every_alignment() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        for skew in 0..17 {
            for n in [0, 1, 15, 16, 17, 100, 4096, 4097, 4999 - skew] {
                let mut dst = BytesMut::with_capacity(8192);
                dst.extend_from_slice(&data[..skew]);
                stream::append(&mut dst, &data[skew..skew + n]);
                assert_eq!(&dst[..], &data[..skew + n], "skew {skew}, {n} bytes");
            }
        }
        // Without room it is the usual append.
        let mut dst = BytesMut::with_capacity(4);
        stream::append(&mut dst, &data[..100]);
        assert_eq!(&dst[..], &data[..100]);
    }

    #[test]
    fn clear_lets_go_of_every_block() {
        let mut log = BodyLog::new(1 << 30);
        assert_eq!(log.block_size(), MAX_BLOCK);
        assert!(
            !BodyLog::new(32 << 10).takes(1),
            "a ring too small for blocks"
        );
        log.append(b"x");
        assert_eq!(log.clear(), MAX_BLOCK);
        assert_eq!(log.blocks(), 0);
        let (v, grew) = log.append(b"y");
        assert_eq!((&v[..], grew), (&b"y"[..], MAX_BLOCK));
    }
}

//! The bounded record store: a byte cap, oldest out first.

use super::filter::Filter;
use super::record::Record;
use std::collections::VecDeque;

/// Records in arrival order, within a byte budget.
#[derive(Debug)]
pub struct Ring {
    cap: usize,
    used: usize,
    next_id: u64,
    items: VecDeque<(Record, usize)>,
    evicted: u64,
}

impl Ring {
    /// A ring holding at most about `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Ring {
            cap,
            used: 0,
            next_id: 1,
            items: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Stores `r` with the next id, evicting the oldest records to make room; returns the id.
    pub fn push(&mut self, mut r: Record) -> u64 {
        r.id = self.next_id;
        self.next_id += 1;
        let size = r.size();
        while self.used + size > self.cap {
            match self.items.pop_front() {
                Some((_, s)) => {
                    self.used -= s;
                    self.evicted += 1;
                }
                None => break,
            }
        }
        self.used += size;
        self.items.push_back((r, size));
        self.next_id - 1
    }

    /// The record `id`, if it is still held.
    pub fn get(&self, id: u64) -> Option<&Record> {
        let i = self.items.binary_search_by_key(&id, |(r, _)| r.id).ok()?;
        self.items.get(i).map(|(r, _)| r)
    }

    /// The newest `limit` records with an id above `after` that match `filter`, oldest first.
    pub fn list(&self, filter: &Filter, after: u64, limit: usize) -> Vec<&Record> {
        let mut out: Vec<&Record> = self
            .items
            .iter()
            .rev()
            .map(|(r, _)| r)
            .take_while(|r| r.id > after)
            .filter(|r| filter.matches(r))
            .take(limit)
            .collect();
        out.reverse();
        out
    }

    /// Forgets every record (ids keep increasing).
    pub fn clear(&mut self) {
        self.items.clear();
        self.used = 0;
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held (approximately).
    pub fn used(&self) -> usize {
        self.used
    }

    /// Records evicted so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The id the next record gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
}

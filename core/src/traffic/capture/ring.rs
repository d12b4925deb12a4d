//! The bounded record store: a byte cap, oldest out first.

use super::bodylog::BodyLog;
use super::filter::Filter;
use super::record::{Body, Record, RecordKind};
use crate::traffic::http1::Protocol;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A page of the list, newest first: records and groups of collapsed flows.
#[derive(Debug, Default)]
pub struct Page<'a> {
    /// What to show, newest first.
    pub rows: Vec<Row<'a>>,
    /// Matching records older than this page remain (ask with `before` = [`Page::oldest`]).
    pub more: bool,
    /// The oldest id this page looked at.
    pub oldest: Option<u64>,
    /// Records that matched (each group counts all of its members).
    pub matched: usize,
}

/// One row of a page.
#[derive(Debug)]
pub enum Row<'a> {
    /// A record.
    Record(&'a Record),
    /// Flows that are not HTTP, of one caller to one server, collapsed.
    Group(FlowGroup),
}

/// Plain TCP flows with the same service, direction, caller, server and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowGroup {
    /// The filter value (`group=KEY`) that lists its members.
    pub group: String,
    /// The newest member's id.
    pub id: u64,
    /// The oldest member's id (in this page).
    pub first_id: u64,
    /// Members (in this page).
    pub count: u64,
    /// Local service.
    pub service: String,
    /// In or out.
    pub direction: super::Direction,
    /// Caller.
    pub client_name: Option<String>,
    /// Server `ip:port`.
    pub server: String,
    /// Server name.
    pub server_name: Option<String>,
    /// The members' protocol.
    pub protocol: Protocol,
    /// Bytes up, summed.
    pub request_bytes: u64,
    /// Bytes down, summed.
    pub response_bytes: u64,
    /// The newest member's start.
    pub started_ms: u64,
}

impl FlowGroup {
    /// The group as a list row (`type: "group"`).
    pub fn summary(&self) -> super::record::Summary {
        super::record::Summary {
            id: self.id,
            kind: super::record::SummaryKind::Group,
            service: self.service.clone(),
            direction: self.direction,
            client: String::new(),
            client_name: self.client_name.clone(),
            server: self.server.clone(),
            server_name: self.server_name.clone(),
            started_ms: self.started_ms,
            duration_ms: None,
            method: None,
            path: None,
            status: None,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            truncated: false,
            error: None,
            protocol: Some(self.protocol),
            version: None,
            client_process: None,
            remote_caller: None,
            grpc_method: None,
            grpc_status: None,
            grpc_status_name: None,
            messages: None,
            group: Some(self.group.clone()),
            count: Some(self.count),
            first_id: Some(self.first_id),
        }
    }
}

/// What the per-service view shows of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceCount {
    /// The service.
    pub service: String,
    /// Records held.
    pub records: u64,
    /// Of those, exchanges.
    pub exchanges: u64,
    /// Exchanges with a 5xx, a gRPC error or no answer.
    pub errors: u64,
    /// The newest record's start.
    pub last_ms: u64,
}

/// The key grouping a plain flow: `service|direction|caller|server|protocol`.
pub fn group_key(r: &Record) -> Option<String> {
    let RecordKind::Flow {
        protocol,
        websocket: None,
        ..
    } = &r.kind
    else {
        return None;
    };
    let caller = r
        .client_process
        .as_ref()
        .map(|p| p.command.clone())
        .or_else(|| r.client_name.as_deref().map(str::to_string))
        .unwrap_or_else(|| {
            r.client
                .rsplit_once(':')
                .map_or(r.client.to_string(), |x| x.0.to_string())
        });
    Some(format!(
        "{}|{}|{}|{}|{:?}",
        r.service,
        r.direction.as_str(),
        caller,
        r.server,
        protocol
    ))
}

/// Records in arrival order, within a byte budget.
#[derive(Debug)]
pub struct Ring {
    cap: usize,
    used: usize,
    next_id: u64,
    /// Records, oldest first, with the bytes each is counted for (its bodies in the log not
    /// included: the log's blocks are counted instead) and the first log block it may use.
    items: VecDeque<(Record, usize, u64)>,
    evicted: u64,
    log: BodyLog,
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
            log: BodyLog::new(cap),
        }
    }

    /// Stores `r` with the next id, evicting the oldest records to make room; returns the id.
    /// Its bodies are copied into the body log (see [`BodyLog`]), but for large ones.
    pub fn push(&mut self, mut r: Record) -> u64 {
        r.id = self.next_id;
        self.next_id += 1;
        let block = self.log.seq();
        let mut size = r.size();
        for body in bodies(&mut r) {
            if self.log.takes(body.data.len()) {
                let (view, grew) = self.log.append(&body.data);
                size -= view.len();
                self.used += grew;
                body.data = view;
            } else if !body.data.is_unique() && !body.data.is_empty() {
                // A view of a read larger than the body (ConnectionCapture::data_in): the
                // ring counts only the body, so it keeps only the body.
                body.data = bytes::Bytes::copy_from_slice(&body.data);
            }
        }
        while self.used + size > self.cap {
            self.fetch_ahead();
            let Some((_, s, _)) = self.items.pop_front() else {
                break;
            };
            self.used -= s;
            self.evicted += 1;
            // Blocks older than the oldest record left are no record's any more.
            let oldest = self.items.front().map_or(block, |(_, _, b)| *b);
            self.used -= self.log.release_before(oldest);
        }
        self.used += size;
        self.items.push_back((r, size, block));
        self.next_id - 1
    }

    /// Dropping an evicted record frees its heads' allocations, long out of the cache, and
    /// each free waited for memory (8% of the capture's work with 16 KiB bodies). Records go
    /// in runs (a new body block makes room for dozens), so while one is evicted the third
    /// after it has its allocations fetched, and the sixth the lines that point to them
    /// (the distances measured best with the bench's exchanges).
    fn fetch_ahead(&self) {
        if let Some((r, ..)) = self.items.get(6) {
            let at: *const Record = r;
            for line in (0..std::mem::size_of::<Record>()).step_by(64) {
                prefetch(at.cast::<u8>().wrapping_add(line));
            }
        }
        if let Some((r, ..)) = self.items.get(3) {
            // The allocator's header is just before each allocation.
            for p in r.heap().filter(|p| !p.is_null()) {
                prefetch(p.wrapping_sub(16));
            }
        }
    }

    /// The record `id`, if it is still held.
    pub fn get(&self, id: u64) -> Option<&Record> {
        let i = self.items.binary_search_by_key(&id, |(r, ..)| r.id).ok()?;
        self.items.get(i).map(|(r, ..)| r)
    }

    /// The newest `limit` records with an id above `after` that match `filter`, oldest first.
    pub fn list(&self, filter: &Filter, after: u64, limit: usize) -> Vec<&Record> {
        let mut out: Vec<&Record> = self
            .items
            .iter()
            .rev()
            .map(|(r, ..)| r)
            .take_while(|r| r.id > after)
            .filter(|r| filter.matches(r))
            .take(limit)
            .collect();
        out.reverse();
        out
    }

    /// A page through the whole ring, newest first: up to `limit` rows of records matching
    /// `filter` with ids between `after` and `before` (exclusive). With `collapse`, plain TCP
    /// flows (not HTTP, not WebSocket) of one caller to one server become one group row.
    pub fn page(
        &self,
        filter: &Filter,
        after: u64,
        before: Option<u64>,
        limit: usize,
        collapse: bool,
    ) -> Page<'_> {
        let mut page = Page::default();
        let mut groups: HashMap<String, usize> = HashMap::new();
        let mut rows = 0usize;
        let candidates = self
            .items
            .iter()
            .rev()
            .map(|(r, ..)| r)
            .skip_while(|r| before.is_some_and(|b| r.id >= b))
            .take_while(|r| r.id > after)
            .filter(|r| filter.matches(r));
        for r in candidates {
            let key = if collapse { group_key(r) } else { None };
            if let Some(k) = key {
                if let Some(row) = groups.get(&k).and_then(|i| page.rows.get_mut(*i)) {
                    if let (
                        Row::Group(g),
                        RecordKind::Flow {
                            bytes_up,
                            bytes_down,
                            ..
                        },
                    ) = (row, &r.kind)
                    {
                        g.count += 1;
                        g.first_id = r.id;
                        g.request_bytes += bytes_up;
                        g.response_bytes += bytes_down;
                    }
                    page.matched += 1;
                    page.oldest = Some(r.id);
                    continue;
                }
                if rows == limit {
                    page.more = true;
                    break;
                }
                let RecordKind::Flow {
                    protocol,
                    bytes_up,
                    bytes_down,
                    ..
                } = &r.kind
                else {
                    continue;
                };
                groups.insert(k.clone(), page.rows.len());
                page.rows.push(Row::Group(FlowGroup {
                    group: k,
                    id: r.id,
                    first_id: r.id,
                    count: 1,
                    service: r.service.to_string(),
                    direction: r.direction,
                    client_name: r.client_name.as_deref().map(str::to_string),
                    server: r.server.to_string(),
                    server_name: r.server_name.as_deref().map(str::to_string),
                    protocol: *protocol,
                    request_bytes: *bytes_up,
                    response_bytes: *bytes_down,
                    started_ms: r.started_ms,
                }));
            } else {
                if rows == limit {
                    page.more = true;
                    break;
                }
                page.rows.push(Row::Record(r));
            }
            rows += 1;
            page.matched += 1;
            page.oldest = Some(r.id);
        }
        page
    }

    /// Counts per service over the whole ring, by name.
    pub fn services(&self) -> Vec<ServiceCount> {
        let mut by: BTreeMap<&str, ServiceCount> = BTreeMap::new();
        for (r, ..) in &self.items {
            let c = by.entry(&*r.service).or_insert_with(|| ServiceCount {
                service: r.service.to_string(),
                ..ServiceCount::default()
            });
            c.records += 1;
            c.last_ms = c.last_ms.max(r.started_ms);
            if let RecordKind::Exchange {
                response,
                error,
                grpc,
                ..
            } = &r.kind
            {
                c.exchanges += 1;
                let status = response.as_ref().and_then(|m| m.head.status);
                let grpc_err = grpc
                    .as_ref()
                    .is_some_and(|g| g.status.is_some_and(|s| s != 0));
                if error.is_some() || status.is_none_or(|s| s >= 500) || grpc_err {
                    c.errors += 1;
                }
            }
        }
        by.into_values().collect()
    }

    /// Forgets every record (ids keep increasing).
    pub fn clear(&mut self) {
        self.items.clear();
        self.log.clear();
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

/// The bodies of a record's exchange.
fn bodies(r: &mut Record) -> impl Iterator<Item = &mut Body> {
    let (request, response) = match &mut r.kind {
        RecordKind::Exchange {
            request, response, ..
        } => (Some(request), response.as_mut()),
        RecordKind::Flow { .. } => (None, None),
    };
    request.into_iter().chain(response).map(|m| &mut m.body)
}

/// Asks the CPU to bring the line at `p` into its caches: a hint, with no effect on what the
/// program does (elsewhere than x86-64, nothing).
#[inline]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults, whatever the address;
    // SSE is part of every x86-64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

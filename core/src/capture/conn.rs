//! One connection's capture: bytes of both directions in, records out.

use super::record::{Direction, FlowEnd, MessageRecord, Record, RecordKind};
use crate::http1::{Conversation, Limits, Output, Protocol, Side};
use std::collections::VecDeque;

/// Who talks to whom, fixed for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnMeta {
    /// The local service involved.
    pub service: String,
    /// In or out.
    pub direction: Direction,
    /// Client `ip:port`.
    pub client: String,
    /// Client name.
    pub client_name: Option<String>,
    /// Server `ip:port`.
    pub server: String,
    /// Server name.
    pub server_name: Option<String>,
}

/// Turns one connection's bytes into exchange records, and a flow record at the end when the
/// connection was not plain HTTP.
#[derive(Debug)]
pub struct ConnectionCapture {
    meta: ConnMeta,
    conv: Conversation,
    started_ms: u64,
    /// Bytes were missed in at least one direction.
    incomplete: bool,
    closed: bool,
    out: VecDeque<Record>,
}

impl ConnectionCapture {
    /// A connection that opened at `now_ms`.
    pub fn new(meta: ConnMeta, limits: Limits, now_ms: u64) -> Self {
        ConnectionCapture {
            meta,
            conv: Conversation::new(limits),
            started_ms: now_ms,
            incomplete: false,
            closed: false,
            out: VecDeque::new(),
        }
    }

    /// Bytes seen from `side`.
    pub fn data(&mut self, side: Side, bytes: &[u8], now_ms: u64) {
        if self.closed {
            return;
        }
        self.conv.feed(side, bytes, now_ms);
        self.drain();
    }

    /// Bytes from `side` were missed (`len` of them, when known): HTTP parsing cannot continue,
    /// so what was parsed is given out and the rest is only counted.
    pub fn gap(&mut self, side: Side, len: u64, now_ms: u64) {
        if self.closed {
            return;
        }
        if !self.incomplete {
            self.incomplete = true;
            self.conv.finish(now_ms);
            self.drain();
        }
        match side {
            Side::Client => self.conv.bytes_client += len,
            Side::Server => self.conv.bytes_server += len,
        }
    }

    /// The connection ended.
    pub fn close(&mut self, end: FlowEnd, now_ms: u64) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.conv.finish(now_ms);
        self.drain();
        let protocol = self.conv.protocol();
        if protocol != Protocol::Http || self.incomplete {
            let kind = RecordKind::Flow {
                protocol: if protocol == Protocol::Unknown {
                    Protocol::Tcp
                } else {
                    protocol
                },
                bytes_up: self.conv.bytes_client,
                bytes_down: self.conv.bytes_server,
                end,
                incomplete: self.incomplete,
                note: self.conv.error().map(str::to_string),
            };
            let r = self.record(
                self.started_ms,
                Some(now_ms.saturating_sub(self.started_ms)),
                kind,
            );
            self.out.push_back(r);
        }
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next record (its id is 0 until the ring assigns one).
    pub fn poll(&mut self) -> Option<Record> {
        self.out.pop_front()
    }

    fn record(&self, started_ms: u64, duration_ms: Option<u64>, kind: RecordKind) -> Record {
        Record {
            id: 0,
            service: self.meta.service.clone(),
            direction: self.meta.direction,
            client: self.meta.client.clone(),
            client_name: self.meta.client_name.clone(),
            server: self.meta.server.clone(),
            server_name: self.meta.server_name.clone(),
            started_ms,
            duration_ms,
            kind,
        }
    }

    fn drain(&mut self) {
        while let Some(Output::Exchange(e)) = self.conv.poll() {
            let duration = e.ended_ms.map(|t| t.saturating_sub(e.started_ms));
            let r = self.record(
                e.started_ms,
                duration,
                RecordKind::Exchange {
                    request: MessageRecord::from(e.request),
                    response: e.response.map(MessageRecord::from),
                    error: e.error,
                },
            );
            self.out.push_back(r);
        }
    }
}

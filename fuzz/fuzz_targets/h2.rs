//! The capture's HTTP/2, gRPC, protobuf and WebSocket decoders on arbitrary bytes: never a
//! panic, and memory within the limits. The input after the HTTP/2 preface is split into
//! client and server chunks; the same bytes also go through the WebSocket message follower,
//! the protobuf wire decoder and the gRPC message cutter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::traffic::capture::conn::ConnMeta;
use overlay_core::traffic::capture::h2::{frame::PREFACE, H2Conn};
use overlay_core::traffic::capture::ws::{WsConn, MAX_MESSAGES, MAX_MESSAGE_DATA};
use overlay_core::traffic::capture::{grpc, protobuf, ConnectionCapture, Direction, FlowEnd};
use overlay_core::traffic::http1::{Limits, Side};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        body_cap: 256,
        max_head_bytes: 1024,
        max_headers: 16,
    };
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let side = |chunk: &[u8], i: usize| {
        if chunk.first().is_some_and(|b| b & 0x80 != 0) || i % 3 == 2 {
            Side::Server
        } else {
            Side::Client
        }
    };
    // HTTP/2 with the preface already sent.
    let mut h2 = H2Conn::new(limits);
    h2.feed(Side::Client, PREFACE, 0);
    for (i, chunk) in data.chunks(step).enumerate() {
        h2.feed(side(chunk, i), chunk, i as u64);
    }
    h2.finish(u64::MAX);
    while let Some((e, g)) = h2.poll() {
        for m in std::iter::once(&e.request).chain(e.response.as_ref()) {
            assert!(m.body.len() <= limits.body_cap);
            assert!(m.head.headers.len() <= limits.max_headers);
        }
        if let Some(g) = g {
            assert!(!g.service.is_empty() && !g.method.is_empty());
        }
    }
    // The whole connection capture (HTTP/1.x, upgrades, HTTP/2) from the client's first byte.
    let meta = ConnMeta {
        service: "s".into(),
        direction: Direction::In,
        client: "c".into(),
        client_name: None,
        server: "s".into(),
        server_name: None,
    };
    let mut c = ConnectionCapture::new(meta, limits, 0);
    for (i, chunk) in data.chunks(step).enumerate() {
        c.data(side(chunk, i), chunk, i as u64);
    }
    c.close(FlowEnd::Closed, u64::MAX);
    while let Some(r) = c.poll() {
        let _ = serde_json::to_string(&r.summary());
    }
    // WebSocket messages.
    let mut ws = WsConn::new("/", limits.body_cap);
    for (i, chunk) in data.chunks(step).enumerate() {
        ws.feed(side(chunk, i), chunk, i as u64);
    }
    for log in ws.take_full().into_iter().chain([ws.finish()]) {
        assert!(log.messages.len() <= MAX_MESSAGES + 2);
        assert!(log
            .messages
            .iter()
            .all(|m| m.data.len() <= MAX_MESSAGE_DATA));
        let _ = serde_json::to_string(&log);
    }
    // gRPC messages and protobuf fields.
    for m in grpc::messages(data) {
        let _ = grpc::message_view(&m, None);
    }
    if let Some(fields) = protobuf::decode(data) {
        let _ = protobuf::to_json(&fields);
    }
    let mut counter = grpc::MessageCounter::default();
    counter.feed(data);
});

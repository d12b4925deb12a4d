//! The inspector's HTTP/1.x parser and TCP reassembly on arbitrary bytes: never a panic, and
//! memory stays within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::capture::tcp::{TcpLimits, Tracker};
use overlay_core::http1::{Conversation, Limits, Output, Side};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        body_cap: 64,
        max_head_bytes: 512,
        max_headers: 8,
    };
    let mut c = Conversation::new(limits);
    // The first byte picks the split points; chunks alternate sides by their first bit.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for (i, chunk) in data.chunks(step).enumerate() {
        let side = if chunk.first().is_some_and(|b| b & 0x80 != 0) || i % 3 == 2 {
            Side::Server
        } else {
            Side::Client
        };
        c.feed(side, chunk, i as u64);
    }
    c.finish(u64::MAX);
    while let Some(Output::Exchange(e)) = c.poll() {
        assert!(e.request.body.len() <= limits.body_cap);
        assert!(e.request.head.headers.len() <= limits.max_headers);
    }
    let mut t = Tracker::new(TcpLimits {
        max_connections: 4,
        max_out_of_order: 256,
        idle_ms: 10,
    });
    for (i, chunk) in data.chunks(step.max(20)).enumerate() {
        t.packet(chunk, i as u64, |_| true);
    }
    t.expire(u64::MAX);
    while t.poll().is_some() {}
});

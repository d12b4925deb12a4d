//! The inspector's HTTP/1.x parser and TCP reassembly on arbitrary bytes: never a panic, and
//! memory stays within the limits. The server's bytes fed as shared reads (as a listener feeds
//! them) give the same exchanges as fed as slices. Parsed heads also go through credential
//! masking and the inspector's access decision (network input reaches both).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use overlay_core::traffic::capture::access::{self, Secret};
use overlay_core::traffic::capture::mask;
use overlay_core::traffic::capture::tcp::{TcpLimits, Tracker};
use overlay_core::traffic::http1::{Conversation, Limits, Output, Side};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        body_cap: 64,
        max_head_bytes: 512,
        max_headers: 8,
    };
    let mut c = Conversation::new(limits);
    let mut shared = Conversation::new(limits);
    // The first byte picks the split points; chunks alternate sides by their first bit.
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for (i, chunk) in data.chunks(step).enumerate() {
        let side = if chunk.first().is_some_and(|b| b & 0x80 != 0) || i % 3 == 2 {
            Side::Server
        } else {
            Side::Client
        };
        c.feed(side, chunk, i as u64);
        let read = Bytes::copy_from_slice(chunk);
        shared.feed_in(side, &read, Some(&read), i as u64);
    }
    c.finish(u64::MAX);
    shared.finish(u64::MAX);
    let outputs: Vec<Output> = std::iter::from_fn(|| c.poll()).collect();
    let from_shared: Vec<Output> = std::iter::from_fn(|| shared.poll()).collect();
    assert_eq!(outputs, from_shared);
    let mut outputs = outputs.into_iter();
    let secret = Secret::from_bytes([3; 32]);
    let listener = "127.0.0.1:4141".parse().expect("addr");
    while let Some(Output::Exchange(e)) = outputs.next() {
        assert!(e.request.body.len() <= limits.body_cap);
        assert!(e.request.head.headers.len() <= limits.max_headers);
        let head = &e.request.head;
        let masked = mask::mask_headers(&head.headers);
        assert_eq!(masked.len(), head.headers.len());
        // Same names, same count (duplicates may unmask to the first of their name).
        // The inspector sends edited headers back as name/value pairs.
        let edited = masked
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let unmasked = mask::unmask_headers(&head.headers, edited);
        assert_eq!(unmasked.len(), head.headers.len());
        let target = head.target.clone().unwrap_or_default();
        assert_eq!(
            mask::unmask_target(&target, mask::mask_target(&target)),
            target
        );
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let _ = access::decide(
            &access::Request {
                method: head.method.as_deref().unwrap_or(""),
                path,
                query,
                host: head.header("host"),
                origin: head.header("origin"),
                cookie: head.header("cookie"),
                token_header: head.header(access::HEADER),
                listener,
            },
            &secret,
        );
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

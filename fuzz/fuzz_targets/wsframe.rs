//! `wsframe::Upgrade` (the drain's WebSocket frame tracker) on arbitrary server bytes, half the
//! time after a real `101` handshake so that the frame parser gets the input.
//!
//! Properties: never panics; the state does not depend on how the stream is split into
//! chunks (all at once, at an input-chosen point, byte by byte); a stream that is not a
//! `101` answer is never taken for a WebSocket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::traffic::wsframe::Upgrade;

const HANDSHAKE: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut stream = Vec::new();
    if first & 1 == 1 {
        stream.extend_from_slice(HANDSHAKE);
    }
    stream.extend_from_slice(rest);
    let mut whole = Upgrade::new();
    whole.feed(&stream);
    let at = usize::from(first >> 1).min(stream.len());
    let mut split = Upgrade::new();
    split.feed(&stream[..at]);
    split.feed(&stream[at..]);
    let mut bytes = Upgrade::new();
    for b in &stream {
        bytes.feed(std::slice::from_ref(b));
    }
    assert_eq!(whole, split, "split at {at}");
    assert_eq!(whole, bytes, "byte by byte");
    let _ = whole.at_frame_boundary();
    if !stream.starts_with(b"HTTP/1.1 101") && !stream.starts_with(b"HTTP/1.0 101") {
        assert!(!whole.is_websocket());
    }
});

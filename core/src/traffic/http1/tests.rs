use super::*;
use bytes::Bytes;

fn limits(cap: usize) -> Limits {
    Limits {
        body_cap: cap,
        ..Limits::default()
    }
}

fn exchanges(c: &mut Conversation) -> Vec<Exchange> {
    std::iter::from_fn(|| c.poll())
        .map(|Output::Exchange(e)| e)
        .collect()
}

/// Feeds `data` one byte at a time too, to check that splitting never changes the result.
fn run(client: &[u8], server: &[u8], cap: usize) -> (Vec<Exchange>, Protocol) {
    let whole = {
        let mut c = Conversation::new(limits(cap));
        c.feed(Side::Client, client, 1);
        c.feed(Side::Server, server, 2);
        c.finish(3);
        (exchanges(&mut c), c.protocol())
    };
    let mut c = Conversation::new(limits(cap));
    for b in client {
        c.feed(Side::Client, std::slice::from_ref(b), 1);
    }
    for b in server {
        c.feed(Side::Server, std::slice::from_ref(b), 2);
    }
    c.finish(3);
    assert_eq!(whole.0, exchanges(&mut c), "byte-wise parse differs");
    // The server's bytes as shared reads (whole, and in two): bodies may become views of
    // them, and nothing else changes.
    for split in [server.len(), server.len() / 2] {
        let mut c = Conversation::new(limits(cap));
        c.feed(Side::Client, client, 1);
        let (a, b) = server.split_at(split);
        for part in [a, b] {
            let chunk = Bytes::copy_from_slice(part);
            c.feed_in(Side::Server, &chunk, Some(&chunk), 2);
        }
        c.finish(3);
        assert_eq!(
            whole.0,
            exchanges(&mut c),
            "a parse of shared reads differs"
        );
    }
    whole
}

/// The exchanges of `requests` answered by `reads`, each fed as a shared read.
fn answered_in_shared_reads(cap: usize, requests: &[u8], reads: &[&Bytes]) -> Vec<Exchange> {
    let mut c = Conversation::new(limits(cap));
    c.feed(Side::Client, requests, 1);
    for read in reads {
        c.feed_in(Side::Server, read, Some(read), 2);
    }
    exchanges(&mut c)
}

#[test]
fn a_response_body_whole_in_a_shared_read_is_a_view_of_it() {
    // /a's body whole in the read, /b's across two reads.
    let first = Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab",
    );
    let second = Bytes::from_static(b"cd");
    let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    let ex = answered_in_shared_reads(1024, two, &[&first, &second]);
    let bodies: Vec<_> = ex
        .iter()
        .filter_map(|e| e.response.as_ref())
        .map(|r| &r.body)
        .collect();
    assert_eq!(bodies.len(), 2);
    assert!(bodies[0].is_view());
    let at = first
        .windows(5)
        .position(|w| w == b"hello")
        .expect("in the read");
    assert_eq!(bodies[0].as_ptr(), first[at..].as_ptr());
    assert_eq!(*bodies[0], b"hello");
    assert!(!bodies[1].is_view());
    assert_eq!(*bodies[1], b"abcd");

    // Over the cap: a copy, cut. Chunked: a copy.
    let read = Bytes::from_static(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    );
    let ex = answered_in_shared_reads(3, two, &[&read]);
    let r0 = ex[0].response.as_ref().expect("answered");
    assert!(!r0.body.is_view() && r0.truncated && r0.body == b"hel" && r0.body_len == 5);
    let r1 = ex[1].response.as_ref().expect("answered");
    assert!(!r1.body.is_view() && r1.body == b"ok");
}

#[test]
fn an_early_response_lets_go_of_its_read() {
    // The server answers before the request's body ended: the response waits for it, with a
    // copy of its body, not a view of the read.
    let mut c = Conversation::new(limits(1024));
    c.feed(
        Side::Client,
        b"POST /up HTTP/1.1\r\nContent-Length: 4\r\n\r\nab",
        1,
    );
    let read = Bytes::copy_from_slice(b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\n\r\nbig");
    c.feed_in(Side::Server, &read, Some(&read), 2);
    assert!(
        read.is_unique(),
        "the waiting response still holds the read"
    );
    c.feed(Side::Client, b"cd", 3);
    let ex = exchanges(&mut c);
    let r = ex[0].response.as_ref().expect("answered");
    assert_eq!(r.head.status, Some(413));
    assert!(!r.body.is_view());
    assert_eq!(r.body, b"big");
}

#[test]
fn test_parse_request_and_response() {
    let (ex, proto) = run(
        b"POST /orders?x=1 HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        1024,
    );
    assert_eq!(proto, Protocol::Http);
    assert_eq!(ex.len(), 1);
    let e = &ex[0];
    assert_eq!(e.request.head.method.as_deref(), Some("POST"));
    assert_eq!(e.request.head.target.as_deref(), Some("/orders?x=1"));
    assert_eq!(e.request.head.path(), "/orders");
    assert_eq!(e.request.head.header("host"), Some("orders"));
    assert_eq!(e.request.body, b"hello");
    let r = e.response.as_ref().expect("response");
    assert_eq!(r.head.status, Some(201));
    assert_eq!(r.head.reason.as_deref(), Some("Created"));
    assert_eq!(r.body, b"{}");
    assert!(r.complete && e.request.complete && e.error.is_none());
    assert_eq!((e.started_ms, e.ended_ms), (1, Some(2)));
}

#[test]
fn pipelined_requests_pair_in_order() {
    let (ex, _) = run(
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nB\
HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n",
        1024,
    );
    let got: Vec<_> = ex
        .iter()
        .map(|e| {
            (
                e.request.head.target.clone().unwrap_or_default(),
                e.response.as_ref().and_then(|r| r.head.status),
                e.response.as_ref().map(|r| r.body.to_vec()),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("/a".into(), Some(200), Some(b"A".to_vec())),
            ("/b".into(), Some(404), Some(b"B".to_vec())),
            ("/c".into(), Some(200), Some(vec![])),
        ]
    );
}

#[test]
fn chunked_body_is_dechunked_and_capped() {
    let (ex, _) = run(
        b"GET / HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        7,
    );
    let r = ex[0].response.as_ref().expect("response");
    assert_eq!(r.body, b"hello w");
    assert_eq!(r.body_len, 11);
    assert!(r.truncated && r.complete);
}

#[test]
fn body_until_close_and_interim_responses() {
    let (ex, _) = run(
        b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nstreamed",
        1024,
    );
    let r = ex[0].response.as_ref().expect("response");
    assert_eq!(r.head.status, Some(200));
    assert_eq!(r.body, b"streamed");
    assert!(ex[0].error.is_none());
}

#[test]
fn bad_chunk_size_is_recorded_as_malformed() {
    let (ex, proto) = run(
        b"GET / HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nrest",
        1024,
    );
    assert_eq!(proto, Protocol::MalformedHttp);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].error.as_deref(), Some("bad chunk size"));
    let r = ex[0].response.as_ref().expect("partial response");
    assert_eq!(r.head.status, Some(200));
    assert!(!r.complete);
    // An overflowing size is as bad.
    let (ex, _) = run(
        b"GET / HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        1024,
    );
    assert_eq!(ex[0].error.as_deref(), Some("bad chunk size"));
}

#[test]
fn header_flood_and_huge_head_stop_parsing() {
    let mut flood = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..500 {
        flood.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    flood.extend_from_slice(b"\r\n");
    let mut c = Conversation::new(Limits::default());
    c.feed(Side::Client, &flood, 1);
    c.finish(2);
    assert_eq!(c.protocol(), Protocol::MalformedHttp);
    assert_eq!(c.error(), Some("more than 128 header lines"));
    let mut c = Conversation::new(Limits::default());
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 200_000));
    c.feed(Side::Client, &big, 1);
    assert_eq!(c.error(), Some("header section larger than 65536 bytes"));
}

#[test]
fn binary_garbage_is_a_tcp_flow() {
    let (ex, proto) = run(&[0x16, 0x03, 0x01, 0, 0xff, 0], b"\x00\x01", 1024);
    assert!(ex.is_empty());
    assert_eq!(proto, Protocol::Tcp);
    let (_, proto) = run(b"", b"SSH-2.0-OpenSSH\r\n", 1024);
    assert_eq!(proto, Protocol::Tcp);
}

#[test]
fn websocket_upgrade_then_opaque() {
    let (ex, proto) = run(
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x85garbage",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi",
        1024,
    );
    assert_eq!(proto, Protocol::Websocket);
    assert_eq!(ex.len(), 1);
    assert_eq!(
        ex[0].response.as_ref().and_then(|r| r.head.status),
        Some(101)
    );
}

#[test]
fn connect_tunnel_is_opaque() {
    let (ex, proto) = run(
        b"CONNECT db:5432 HTTP/1.1\r\n\r\n\x00\x00\x00\x08",
        b"HTTP/1.1 200 OK\r\n\r\n\x00\x01",
        1024,
    );
    assert_eq!(proto, Protocol::Upgraded);
    assert_eq!(ex.len(), 1);
}

#[test]
fn request_without_response_and_cut_body() {
    let (ex, _) = run(
        b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
        b"",
        1024,
    );
    assert_eq!(ex.len(), 1);
    assert!(ex[0].response.is_none());
    assert!(!ex[0].request.complete);
    assert_eq!(ex[0].request.body, b"abc");
    assert!(ex[0].error.is_some());
}

#[test]
fn conflicting_content_length_is_an_error() {
    let mut c = Conversation::new(Limits::default());
    c.feed(
        Side::Client,
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        1,
    );
    assert_eq!(
        c.error(),
        Some("ambiguous framing: more than one Content-Length")
    );
    let mut c = Conversation::new(Limits::default());
    c.feed(
        Side::Client,
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        1,
    );
    assert_eq!(c.error(), Some("bad Content-Length"));
}

/// One request's fate: the recorded request (head only for refused framing) and the error.
fn framed(req: &[u8]) -> (Vec<Exchange>, Option<String>) {
    let mut c = Conversation::new(Limits::default());
    c.feed(Side::Client, req, 1);
    c.finish(2);
    let err = c.error().map(str::to_string);
    (exchanges(&mut c), err)
}

#[test]
fn ambiguous_framing_is_marked_not_guessed() {
    for (name, req, why) in [
        (
            "CL.TE",
            &b"POST /a HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"[..],
            "ambiguous framing: both Content-Length and Transfer-Encoding",
        ),
        (
            "TE.CL",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nGET /x H\r\n0\r\n\r\n",
            "ambiguous framing: both Content-Length and Transfer-Encoding",
        ),
        (
            "CL.CL",
            b"POST /a HTTP/1.1\r\nContent-Length: 0, 5\r\n\r\nhello",
            "ambiguous framing: more than one Content-Length",
        ),
        (
            "obs-fold",
            b"POST /a HTTP/1.1\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
            "ambiguous framing: a folded header line (obs-fold)",
        ),
        (
            "TE not chunked",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "unsupported Transfer-Encoding",
        ),
        (
            "chunked twice",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            "unsupported Transfer-Encoding",
        ),
        (
            "TE in HTTP/1.0",
            b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "ambiguous framing: Transfer-Encoding in an HTTP/1.0 request",
        ),
    ] {
        let (ex, err) = framed(req);
        assert_eq!(err.as_deref(), Some(why), "{name}");
        // The request is recorded with the reason; nothing after it is taken as a request.
        assert_eq!(ex.len(), 1, "{name}: {ex:?}");
        assert_eq!(ex[0].request.head.target.as_deref(), Some("/a"), "{name}");
        assert_eq!(ex[0].error.as_deref(), Some(why), "{name}");
    }
}

#[test]
fn chunk_sizes_are_read_strictly() {
    for (size_line, ok) in [
        (&b"5\r\n"[..], true),
        (b"5;ext=1\r\n", true),
        (b"5 ;ext\r\n", true),
        (b"5 \r\n", true),
        (b"0x5\r\n", false),
        (b"5\n", false),
        (b" 5\r\n", false),
        (b"+5\r\n", false),
        (b"5z\r\n", false),
        (b"10000000000000000\r\n", false),
        // Only spaces and tabs may follow the digits: no bare CR, no form feed.
        (b"5\r;ext\r\n", false),
        (b"5\x0c\r\n", false),
    ] {
        let mut req = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(size_line);
        req.extend_from_slice(b"hello\r\n0\r\n\r\n");
        let (ex, err) = framed(&req);
        let name = String::from_utf8_lossy(size_line).into_owned();
        assert_eq!(err.is_none(), ok, "{name:?}: {err:?}");
        if ok {
            assert_eq!(ex[0].request.body, b"hello", "{name:?}");
        } else {
            assert_eq!(err.as_deref(), Some("bad chunk size"), "{name:?}");
        }
    }
    // The data must end in CRLF.
    let (_, err) =
        framed(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n");
    assert_eq!(err.as_deref(), Some("missing CRLF after chunk data"));
}

#[test]
fn response_without_request_is_malformed() {
    let mut c = Conversation::new(Limits::default());
    c.feed(Side::Client, b"GET / HTTP/1.1\r\n\r\n", 1);
    c.feed(
        Side::Server,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        2,
    );
    assert_eq!(c.protocol(), Protocol::MalformedHttp);
    assert_eq!(exchanges(&mut c).len(), 1);
}

#[test]
fn pipelining_is_bounded() {
    let mut c = Conversation::new(Limits::default());
    for _ in 0..(MAX_PIPELINED * 3) {
        c.feed(Side::Client, b"GET / HTTP/1.1\r\n\r\n", 1);
    }
    assert!(c.pending.len() <= MAX_PIPELINED);
    assert_eq!(exchanges(&mut c).len(), MAX_PIPELINED * 2);
}

#[test]
fn responses_before_the_request_body_ends() {
    // 100 Continue while the body is pending, then the final answer.
    let mut c = Conversation::new(limits(4));
    c.feed(
        Side::Client,
        b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
        1,
    );
    c.feed(Side::Server, b"HTTP/1.1 100 Continue\r\n\r\n", 2);
    c.feed(Side::Client, b"0123456789", 3);
    c.feed(
        Side::Server,
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        4,
    );
    let ex = exchanges(&mut c);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].request.body_len, 10);
    assert!(ex[0].request.truncated);
    assert_eq!(
        ex[0].response.as_ref().and_then(|r| r.head.status),
        Some(201)
    );
    // An early final answer (413) pairs with the request when its body ends.
    let mut c = Conversation::new(limits(4));
    c.feed(
        Side::Client,
        b"POST /up HTTP/1.1\r\nContent-Length: 4\r\n\r\nab",
        1,
    );
    c.feed(
        Side::Server,
        b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n",
        2,
    );
    assert!(exchanges(&mut c).is_empty());
    c.feed(Side::Client, b"cd", 3);
    let ex = exchanges(&mut c);
    assert_eq!(
        ex[0].response.as_ref().and_then(|r| r.head.status),
        Some(413)
    );
    assert!(ex[0].error.is_none());
}

/// A head is read in place when it comes whole and buffered when it comes in pieces; the size
/// limit is the same either way.
#[test]
fn head_limit_is_the_same_whole_or_in_pieces() {
    let head_of = |len: usize| {
        let mut h = b"GET / HTTP/1.1\r\nX: ".to_vec();
        let pad = len - h.len() - 4;
        h.extend(std::iter::repeat_n(b'a', pad));
        h.extend_from_slice(b"\r\n\r\n");
        assert_eq!(h.len(), len);
        h
    };
    let max = Limits::default().max_head_bytes;
    for (len, ok) in [(max, true), (max + 1, false)] {
        let head = head_of(len);
        for pieces in [1, 7, len] {
            let mut c = Conversation::new(Limits::default());
            for part in head.chunks(len.div_ceil(pieces)) {
                c.feed(Side::Client, part, 1);
            }
            assert_eq!(
                c.error().is_none(),
                ok,
                "head of {len} bytes in {pieces} pieces"
            );
        }
    }
}

#[test]
fn a_bare_cr_or_form_feed_in_a_header_value_is_refused() {
    // Around a value only spaces and tabs are trimmed (as httparse reads it): a CR or form feed
    // at either end of a value is part of it, and refused, not trimmed away.
    for value in [&b"\r5"[..], b"5\r", b"\x0c5", b"5\x0c", b"5\r5"] {
        let mut req = b"POST /a HTTP/1.1\r\nContent-Length: ".to_vec();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n\r\nhello");
        let (_, err) = framed(&req);
        assert_eq!(
            err,
            Some(HttpError::Header.to_string()),
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
    let (ex, err) = framed(b"POST /a HTTP/1.1\r\nContent-Length: \t5 \r\n\r\nhello");
    assert_eq!(err, None);
    assert_eq!(ex[0].request.body, b"hello");
}

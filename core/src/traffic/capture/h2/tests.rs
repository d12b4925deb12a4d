use super::frame::{emit, flag, kind, PREFACE};
use super::*;

/// One side's encoder and frames.
struct Peer {
    enc: loona_hpack::Encoder<'static>,
    out: Vec<u8>,
}

impl Peer {
    fn client() -> Peer {
        let mut out = PREFACE.to_vec();
        emit(&mut out, kind::SETTINGS, 0, 0, &[]);
        Peer {
            enc: loona_hpack::Encoder::new(),
            out,
        }
    }
    fn server() -> Peer {
        let mut out = Vec::new();
        emit(&mut out, kind::SETTINGS, 0, 0, &[]);
        Peer {
            enc: loona_hpack::Encoder::new(),
            out,
        }
    }
    fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end: bool) {
        let block = self
            .enc
            .encode(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        let f = flag::END_HEADERS | if end { flag::END_STREAM } else { 0 };
        emit(&mut self.out, kind::HEADERS, f, stream, &block);
    }
    fn data(&mut self, stream: u32, bytes: &[u8], end: bool) {
        let f = if end { flag::END_STREAM } else { 0 };
        emit(&mut self.out, kind::DATA, f, stream, bytes);
    }
}

fn run(conn: &mut H2Conn, client: &[u8], server: &[u8], split: usize) -> Vec<H2Exchange> {
    // The client's bytes first (a server answers only what it got), each side in chunks.
    for a in client.chunks(split) {
        conn.feed(Side::Client, a, 10);
    }
    for b in server.chunks(split) {
        conn.feed(Side::Server, b, 20);
    }
    conn.finish(30);
    std::iter::from_fn(|| conn.poll()).collect()
}

fn grpc_frame(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

#[test]
fn test_parse_a_grpc_call_over_any_split() {
    let mut c = Peer::client();
    let mut s = Peer::server();
    let req = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/helloworld.Greeter/SayHello"),
        (":authority", "greeter:50051"),
        ("content-type", "application/grpc"),
        ("authorization", "Bearer s3cret"),
        ("te", "trailers"),
    ];
    c.headers(1, &req, false);
    c.data(1, &grpc_frame(b"\x0a\x05world"), true);
    s.headers(
        1,
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    );
    s.data(1, &grpc_frame(b"\x0a\x0bhello world"), false);
    s.headers(
        1,
        &[("grpc-status", "5"), ("grpc-message", "no%20such")],
        true,
    );
    // A second call on stream 3 reuses the dynamic table (indexed fields).
    c.headers(3, &req, true);
    s.headers(
        3,
        &[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "0"),
        ],
        true,
    );
    for split in [1, 3, 9, 100, 100_000] {
        let got = run(&mut H2Conn::new(Limits::default()), &c.out, &s.out, split);
        assert_eq!(got.len(), 2, "split {split}");
        let (e, g) = &got[0];
        assert_eq!(e.request.head.method.as_deref(), Some("POST"));
        assert_eq!(
            e.request.head.target.as_deref(),
            Some("/helloworld.Greeter/SayHello")
        );
        assert_eq!(e.request.head.version, "HTTP/2");
        assert_eq!(e.request.head.header(":authority"), Some("greeter:50051"));
        assert_eq!(
            e.request.head.header("authorization"),
            Some("Bearer s3cret")
        );
        let resp = e.response.as_ref().unwrap();
        assert_eq!(resp.head.status, Some(200));
        assert_eq!(
            resp.trailers.to_vec(),
            vec![
                ("grpc-status".into(), "5".into()),
                ("grpc-message".into(), "no%20such".into())
            ]
        );
        assert_eq!(&resp.body[5..], b"\x0a\x0bhello world");
        assert!(e.error.is_none() && e.request.complete && resp.complete);
        assert_eq!((e.started_ms, e.ended_ms), (10, Some(20)));
        let g = g.as_ref().unwrap();
        assert_eq!(
            (g.service.as_str(), g.method.as_str()),
            ("helloworld.Greeter", "SayHello")
        );
        assert_eq!((g.status, g.message.as_deref()), (Some(5), Some("no such")));
        assert_eq!((g.requests, g.responses), (1, 1));
        let (e, g) = &got[1];
        assert_eq!(
            e.request.head.target.as_deref(),
            Some("/helloworld.Greeter/SayHello")
        );
        assert_eq!(g.as_ref().unwrap().status, Some(0), "trailers-only answer");
    }
}

#[test]
fn h2c_upgrade_continues_the_first_request_as_stream_1() {
    let mut s = Peer::server();
    s.headers(
        1,
        &[(":status", "200"), ("content-type", "text/plain")],
        false,
    );
    s.data(1, b"hi", true);
    let c = Peer::client();
    let request = Message {
        head: Head {
            method: Some("GET".into()),
            target: Some("/up".into()),
            version: "HTTP/1.1".into(),
            ..Head::default()
        },
        ..Message::default()
    };
    let mut conn = H2Conn::upgraded(Limits::default(), request, 5);
    let got = run(&mut conn, &c.out, &s.out, 7);
    assert_eq!(got.len(), 1);
    let e = &got[0].0;
    assert_eq!(e.request.head.target.as_deref(), Some("/up"));
    assert_eq!(e.response.as_ref().unwrap().body, b"hi");
    assert!(e.error.is_none());
}

#[test]
fn resets_bodies_over_the_cap_and_unfinished_streams() {
    let mut c = Peer::client();
    let mut s = Peer::server();
    c.headers(
        1,
        &[(":method", "POST"), (":path", "/big"), (":scheme", "http")],
        false,
    );
    c.data(1, &[7u8; 100], false);
    c.data(1, &[7u8; 100], true);
    s.headers(1, &[(":status", "100")], false);
    s.headers(1, &[(":status", "201")], true);
    c.headers(
        3,
        &[(":method", "GET"), (":path", "/reset"), (":scheme", "http")],
        true,
    );
    emit(&mut s.out, kind::RST_STREAM, 0, 3, &[0, 0, 0, 8]);
    c.headers(
        5,
        &[(":method", "GET"), (":path", "/open"), (":scheme", "http")],
        true,
    );
    let limits = Limits {
        body_cap: 150,
        ..Limits::default()
    };
    let got = run(&mut H2Conn::new(limits), &c.out, &s.out, 1000);
    let by_path = |p: &str| {
        got.iter()
            .find(|(e, _)| e.request.head.target.as_deref() == Some(p))
            .map(|(e, _)| e.clone())
            .unwrap()
    };
    let big = by_path("/big");
    assert_eq!(
        (
            big.request.body.len(),
            big.request.body_len,
            big.request.truncated
        ),
        (150, 200, true)
    );
    assert_eq!(
        big.response.unwrap().head.status,
        Some(201),
        "100 is interim"
    );
    assert_eq!(
        by_path("/reset").error.as_deref(),
        Some("reset by the server: CANCEL")
    );
    assert!(by_path("/open").error.unwrap().contains("closed before"));
}

#[test]
fn garbage_and_lost_tables_are_recorded_not_guessed() {
    // Not HTTP/2 at all.
    let mut conn = H2Conn::new(Limits::default());
    conn.feed(Side::Client, b"PRI * HTTP/2.0\r\n\r\nXX", 0);
    assert!(conn.error().is_some());
    // A header block with an index past the table: that direction's headers are unknown.
    let mut c = Peer::client();
    emit(
        &mut c.out,
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &[0xff, 0x7f],
    );
    c.headers(3, &[(":method", "GET"), (":path", "/x")], true);
    let mut conn = H2Conn::new(Limits::default());
    conn.feed(Side::Client, &c.out, 0);
    conn.finish(1);
    let got: Vec<_> = std::iter::from_fn(|| conn.poll()).collect();
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|(e, _)| e.error.as_deref().is_some_and(|e| e.contains("unknown"))));
    // A dynamic table size update past what SETTINGS allow loses the table too.
    let mut conn = H2Conn::new(Limits::default());
    let mut c = PREFACE.to_vec();
    let mut block = vec![0x3f, 0xe1, 0xff, 0x03]; // size update to 65536
    block.push(0x82);
    emit(
        &mut c,
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block,
    );
    conn.feed(Side::Client, &c, 0);
    conn.finish(1);
    assert!(conn.poll().unwrap().0.error.unwrap().contains("unknown"));
    // The same update is fine once the server allowed it.
    let mut conn = H2Conn::new(Limits::default());
    let mut srv = Vec::new();
    emit(&mut srv, kind::SETTINGS, 0, 0, &[0, 1, 0, 1, 0, 0]);
    conn.feed(Side::Server, &srv, 0);
    conn.feed(Side::Client, &c, 0);
    conn.finish(1);
    let (e, _) = conn.poll().unwrap();
    assert_eq!(e.request.head.method.as_deref(), Some("GET"));
}

#[test]
fn a_large_huffman_block_does_not_keep_its_buffers() {
    // A literal field whose value is 40,000 Huffman-coded 'a's (five bits each, eight per five
    // bytes), then an ordinary request on the same connection.
    let mut block = vec![0x00, 0x05];
    block.extend_from_slice(b"x-big");
    let coded = [0x18, 0xc6, 0x31, 0x8c, 0x63].repeat(5000);
    block.push(0xff);
    let mut rest = coded.len() - 127;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
    block.extend_from_slice(&coded);
    block.extend_from_slice(&[0x82, 0x84]); // :method GET, :path /
    let mut c = PREFACE.to_vec();
    emit(&mut c, kind::SETTINGS, 0, 0, &[]);
    emit(
        &mut c,
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        1,
        &block,
    );
    let mut conn = H2Conn::new(Limits::default());
    conn.feed(Side::Client, &c, 0);
    assert!(conn.st.plain.capacity() <= KEEP_SCRATCH);
    assert!(conn.st.huffman.capacity() <= KEEP_SCRATCH);
    let mut p = Peer::client();
    p.out.clear();
    p.headers(3, &[(":method", "GET"), (":path", "/next")], true);
    conn.feed(Side::Client, &p.out, 1);
    conn.finish(2);
    let got: Vec<_> = std::iter::from_fn(|| conn.poll()).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0.request.head.method.as_deref(), Some("GET"));
    assert_eq!(got[1].0.request.head.target.as_deref(), Some("/next"));
}

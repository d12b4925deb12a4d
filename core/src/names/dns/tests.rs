use super::*;
use crate::names::registry::Protocol;
use hickory_proto::op::Query;
use std::str::FromStr;

/// The node's DNS address (also used by the cache tests).
pub(super) const SERVER: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);

/// An instance on port 8080/tcp (also used by the cache tests).
pub(super) fn inst(
    name: &str,
    tag: Option<&str>,
    node: Option<&str>,
    addr: [u8; 4],
) -> ServiceInstance {
    ServiceInstance {
        name: name.into(),
        tag: tag.map(Into::into),
        node: node.map(Into::into),
        address: Ipv4Addr::from(addr),
        port: 8080,
        protocol: Protocol::Tcp,
        callback_url: None,
        target: None,
        registered: 0,
    }
}

struct World {
    instances: Vec<ServiceInstance>,
    nodes: Vec<(String, Ipv4Addr)>,
}

impl World {
    fn new() -> Self {
        World {
            instances: vec![
                inst("orders", None, Some("nodea"), [100, 64, 4, 2]),
                inst("orders", None, None, [100, 64, 0, 2]),
                inst("orders", None, Some("nodeb"), [100, 64, 4, 66]),
                inst("orders", Some("v2"), Some("nodeb"), [100, 64, 4, 67]),
                inst("users", None, None, [100, 64, 0, 3]),
            ],
            nodes: vec![
                ("nodea".into(), Ipv4Addr::new(100, 64, 4, 1)),
                ("nodeb".into(), Ipv4Addr::new(100, 64, 4, 65)),
            ],
        }
    }

    fn ctx(&self) -> DnsContext<'_> {
        context(&self.instances, &self.nodes, 42)
    }
}

/// What node `nodea` answers from in domain `ovl.internal` (also used by the cache tests).
pub(super) fn context<'a>(
    instances: &'a [ServiceInstance],
    nodes: &'a [(String, Ipv4Addr)],
    serial: u32,
) -> DnsContext<'a> {
    DnsContext {
        instances,
        nodes,
        local_node: "nodea",
        domain: "ovl.internal",
        server_addr: SERVER,
        ttl: DEFAULT_TTL,
        serial,
        network: Some(
            crate::net::prefix::Ipv4Prefix::new(Ipv4Addr::new(100, 64, 0, 0), 10).unwrap(),
        ),
    }
}

fn query_with(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    query_id(0xbeef, name, qtype, edns)
}

/// A recursive query with `id`, with EDNS and that payload size when `edns` is set (also used
/// by the cache tests).
pub(super) fn query_id(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    query_with(name, qtype, None)
}

fn ask_bytes(bytes: &[u8], w: &World, tcp: bool) -> Message {
    match answer(bytes, &w.ctx(), tcp) {
        DnsOutcome::Reply(b) => {
            if !tcp {
                assert!(b.len() <= usize::from(EDNS_PAYLOAD));
            }
            Message::from_vec(&b).unwrap()
        }
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn ask(name: &str, qtype: RecordType) -> Message {
    ask_bytes(&query(name, qtype), &World::new(), false)
}

/// The A records of an answer (also used by the cache tests).
pub(super) fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn has_soa(records: &[Record]) -> bool {
    records.iter().any(|r| matches!(r.data, RData::SOA(_)))
}

#[test]
fn a_record_of_the_preferred_instance() {
    let m = ask("orders.ovl.internal.", RecordType::A);
    assert_eq!(m.metadata.id, 0xbeef);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert!(m.metadata.recursion_desired);
    assert_eq!(m.queries.len(), 1);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(100, 64, 4, 2)]);
    assert_eq!(m.answers[0].ttl, DEFAULT_TTL);
    assert_eq!(
        m.answers[0].name,
        Name::from_str("orders.ovl.internal.").unwrap()
    );
    assert!(m.edns.is_none());
}

#[test]
fn bare_names_and_case_are_kept() {
    let m = ask("orders.", RecordType::A);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(100, 64, 4, 2)]);
    let m = ask("OrDeRs.OVL.internal.", RecordType::A);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(100, 64, 4, 2)]);
    assert!(m.answers[0]
        .name
        .eq_case(&Name::from_ascii("OrDeRs.OVL.internal.").unwrap()));
}

#[test]
fn qualified_tagged_and_node_names() {
    let m = ask("orders.nodeb.ovl.internal.", RecordType::A);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(100, 64, 4, 66)]);
    let m = ask("v2.orders.ovl.internal.", RecordType::A);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(100, 64, 4, 67)]);
    let m = ask("v2.orders.nodeb.ovl.internal.", RecordType::A);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(100, 64, 4, 67)]);
    let m = ask("nodeb.ovl.internal.", RecordType::A);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(100, 64, 4, 65)]);
    let m = ask("users.ovl.internal.", RecordType::A);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(100, 64, 0, 3)]);
}

#[test]
fn remote_preferred_when_nothing_local() {
    let mut w = World::new();
    w.instances.remove(0);
    let m = ask_bytes(&query("orders.ovl.internal.", RecordType::A), &w, false);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(100, 64, 0, 2)]);
    w.instances.remove(0);
    let m = ask_bytes(&query("orders.ovl.internal.", RecordType::A), &w, false);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(100, 64, 4, 66)]);
}

#[test]
fn txt_describes_the_instance() {
    let txt = |name: &str| -> Vec<String> {
        let m = ask(name, RecordType::TXT);
        assert_eq!(m.answers.len(), 1);
        match &m.answers[0].data {
            RData::TXT(t) => t
                .txt_data
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
            other => panic!("not TXT: {other:?}"),
        }
    };
    assert_eq!(
        txt("orders.ovl.internal."),
        vec!["node=nodea", "tag=", "where=local"]
    );
    assert_eq!(
        txt("v2.orders.nodeb.ovl.internal."),
        vec!["node=nodeb", "tag=v2", "where=peer"]
    );
    assert_eq!(
        txt("users.ovl.internal."),
        vec!["node=", "tag=", "where=remote"]
    );
}

#[test]
fn srv_lists_instances_with_priorities_and_glue() {
    let m = ask("_orders._tcp.ovl.internal.", RecordType::SRV);
    let srv: Vec<(u16, u16, u16, String)> = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => (s.priority, s.weight, s.port, s.target.to_ascii()),
            other => panic!("not SRV: {other:?}"),
        })
        .collect();
    assert_eq!(
        srv,
        vec![
            (0, 0, 8080, "orders.nodea.ovl.internal.".to_string()),
            // The remote one under a name a local instance never shadows.
            (1, 0, 8080, "orders.remote.ovl.internal.".to_string()),
            (2, 0, 8080, "orders.nodeb.ovl.internal.".to_string()),
            (3, 0, 8080, "v2.orders.nodeb.ovl.internal.".to_string()),
        ]
    );
    assert_eq!(m.additionals.len(), 4);
    assert!(matches!(m.additionals[3].data, RData::A(A(a)) if a == Ipv4Addr::new(100, 64, 4, 67)));
    let m = ask("_orders._udp.ovl.internal.", RecordType::SRV);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // That target resolves to the remote instance although nodea runs orders itself.
    let m = ask("orders.remote.ovl.internal.", RecordType::A);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(100, 64, 0, 2)]);
    assert_eq!(
        a_records(&ask("orders.ovl.internal.", RecordType::A)),
        vec![Ipv4Addr::new(100, 64, 4, 2)]
    );
    let m = ask("nosuch.remote.ovl.internal.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // A name found on demand (port 0) has no SRV records: no port to give.
    let mut w = World::new();
    let mut cache = inst("cache", None, None, [100, 64, 0, 9]);
    cache.port = 0;
    w.instances.push(cache);
    let m = ask_bytes(
        &query("_cache._tcp.ovl.internal.", RecordType::SRV),
        &w,
        false,
    );
    assert!(m.answers.is_empty(), "{:?}", m.answers);
    assert_eq!(
        a_records(&ask_bytes(
            &query("cache.ovl.internal.", RecordType::A),
            &w,
            false
        )),
        vec![Ipv4Addr::new(100, 64, 0, 9)]
    );
    // An SRV name has no address.
    let m = ask("_orders._tcp.ovl.internal.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && has_soa(&m.authorities));
}

#[test]
fn apex_soa_ns_and_name_server_address() {
    let m = ask("ovl.internal.", RecordType::SOA);
    assert_eq!(m.answers.len(), 1);
    let RData::SOA(soa) = &m.answers[0].data else {
        panic!("not SOA");
    };
    assert_eq!(soa.serial, 42);
    assert_eq!(soa.minimum, DEFAULT_TTL);
    assert_eq!(soa.mname.to_ascii(), "ns.ovl.internal.");
    let m = ask("ovl.internal.", RecordType::NS);
    assert!(matches!(&m.answers[0].data, RData::NS(ns) if ns.0.to_ascii() == "ns.ovl.internal."));
    assert!(matches!(m.additionals[0].data, RData::A(A(a)) if a == SERVER));
    let m = ask("ns.ovl.internal.", RecordType::A);
    assert_eq!(a_records(&m), vec![SERVER]);
    let m = ask("ovl.internal.", RecordType::A);
    assert!(m.answers.is_empty() && has_soa(&m.authorities));
    let m = ask("ovl.internal.", RecordType::ANY);
    assert_eq!(m.answers.len(), 2);
}

#[test]
fn other_types_of_existing_names_are_nodata() {
    for (name, t) in [
        ("orders.ovl.internal.", RecordType::AAAA),
        ("orders.ovl.internal.", RecordType::MX),
        ("nodea.ovl.internal.", RecordType::AAAA),
        ("ns.ovl.internal.", RecordType::AAAA),
        ("_tcp.ovl.internal.", RecordType::A),
    ] {
        let m = ask(name, t);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{name} {t}"
        );
        assert!(m.answers.is_empty(), "{name} {t}");
        assert!(has_soa(&m.authorities), "{name} {t}");
    }
    let m = ask("orders.ovl.internal.", RecordType::ANY);
    assert_eq!(m.answers.len(), 2, "A and TXT");
}

#[test]
fn unknown_names_in_the_domain_are_nxdomain_with_soa() {
    for name in [
        "nope.ovl.internal.",
        "orders.nodez.ovl.internal.",
        "a.b.c.d.ovl.internal.",
    ] {
        let m = ask(name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty());
        assert!(has_soa(&m.authorities));
    }
}

#[test]
fn names_outside_the_domain_are_forwarded() {
    let w = World::new();
    for name in ["example.com.", "nope.", "orders.example.com.", "."] {
        assert_eq!(
            answer(&query(name, RecordType::A), &w.ctx(), false),
            DnsOutcome::Forward,
            "{name}"
        );
    }
}

#[test]
fn edns_is_echoed_and_sizes_respected() {
    let m = ask_bytes(
        &query_with("orders.ovl.internal.", RecordType::A, Some(4096)),
        &World::new(),
        false,
    );
    let e = m.edns.expect("OPT in the reply");
    assert_eq!(e.max_payload(), EDNS_PAYLOAD);

    // Many instances: an SRV answer larger than any UDP limit.
    let mut w = World::new();
    for i in 0..60u8 {
        w.instances.push(inst(
            "big",
            None,
            Some(&format!("node-with-a-long-name-{i}")),
            [100, 64, 5, i],
        ));
    }
    let q = |edns| query_with("_big._tcp.ovl.internal.", RecordType::SRV, edns);
    let size = |tcp: bool, edns: Option<u16>| match answer(&q(edns), &w.ctx(), tcp) {
        DnsOutcome::Reply(b) => {
            let m = Message::from_vec(&b).unwrap();
            (b.len(), m.metadata.truncation, m.answers.len())
        }
        other => panic!("{other:?}"),
    };
    let (len, tc, n) = size(false, None);
    assert!(len <= 512 && tc && n < 60, "{len} {tc} {n}");
    let (len, tc, n) = size(false, Some(1000));
    assert!(len <= 1000 && tc && n < 60, "{len} {tc} {n}");
    let (len, tc, _) = size(false, Some(65000));
    assert!(len <= usize::from(EDNS_PAYLOAD) && tc);
    let (len, tc, _) = size(false, Some(100));
    assert!(len <= 512 && tc, "sizes under 512 count as 512");
    let (len, tc, n) = size(true, None);
    assert!(len > 1232 && !tc && n == 60, "{len} {tc} {n}");

    // Additional records go first, without TC.
    let (_, tc, n) = {
        let mut w2 = World::new();
        for i in 0..9u8 {
            w2.instances
                .push(inst("mid", None, Some(&format!("n{i}")), [100, 64, 6, i]));
        }
        match answer(
            &query("_mid._tcp.ovl.internal.", RecordType::SRV),
            &w2.ctx(),
            false,
        ) {
            DnsOutcome::Reply(b) => {
                let m = Message::from_vec(&b).unwrap();
                assert!(m.additionals.is_empty());
                (b.len(), m.metadata.truncation, m.answers.len())
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(!tc && n == 9);
}

#[test]
fn unsupported_edns_version_gets_badvers() {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_str("orders.ovl.internal.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_version(1);
    m.set_edns(e);
    let r = ask_bytes(&m.to_vec().unwrap(), &World::new(), false);
    // BADVERS and BADSIG share the value 16; decoding names it BADSIG.
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert!(r.edns.is_some());
}

#[test]
fn malformed_queries_get_formerr() {
    let w = World::new();
    let formerr = |bytes: &[u8]| {
        let m = ask_bytes(bytes, &w, false);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.id, u16::from_be_bytes([bytes[0], bytes[1]]));
    };
    // No question.
    formerr(&[0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // Two questions.
    let mut two = query("a.ovl.internal.", RecordType::A);
    two[5] = 2;
    formerr(&two);
    // The question runs past the end.
    let q = query("orders.ovl.internal.", RecordType::A);
    formerr(&q[..q.len() - 3]);
    // Garbage in the question.
    formerr(&[0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x7f, 1, 2]);
    // Two OPT records.
    let mut two_opt = query_with("orders.ovl.internal.", RecordType::A, Some(1232));
    let opt = two_opt[two_opt.len() - 11..].to_vec();
    two_opt.extend_from_slice(&opt);
    two_opt[11] = 2;
    formerr(&two_opt);
}

#[test]
fn compression_loops_do_not_hang_or_panic() {
    let w = World::new();
    // The question name is a pointer to itself.
    let self_loop = [
        0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
    ];
    // Two labels pointing at each other.
    let two_loop = [
        0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0xc0, 16, 1, b'b', 0xc0, 12, 0, 1, 0, 1,
    ];
    // A pointer forward, past the end.
    let forward = [
        0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0, 1, 0, 1,
    ];
    for bytes in [&self_loop[..], &two_loop[..], &forward[..]] {
        match answer(bytes, &w.ctx(), false) {
            DnsOutcome::Drop => {}
            DnsOutcome::Reply(b) => {
                let m = Message::from_vec(&b).unwrap();
                assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
            }
            DnsOutcome::Forward => panic!("a loop was forwarded"),
        }
    }
    // A name longer than 255 bytes.
    let mut long = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..130 {
        long.extend_from_slice(&[1, b'a']);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    let m = ask_bytes(&long, &w, false);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn other_opcodes_get_notimp_and_responses_are_dropped() {
    let w = World::new();
    for opcode in [1u8, 2, 4, 5, 15] {
        let mut q = query("orders.ovl.internal.", RecordType::A);
        q[2] = (q[2] & 0x87) | (opcode << 3);
        let m = ask_bytes(&q, &w, false);
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp, "{opcode}");
        assert_eq!(u8::from(m.metadata.op_code), opcode);
    }
    let mut resp = query("orders.ovl.internal.", RecordType::A);
    resp[2] |= 0x80;
    assert_eq!(answer(&resp, &w.ctx(), false), DnsOutcome::Drop);
    for n in 0..12 {
        assert_eq!(answer(&resp[..n], &w.ctx(), false), DnsOutcome::Drop);
    }
}

#[test]
fn other_classes_and_zone_transfers_are_refused() {
    let mut m = Message::new(9, MessageType::Query, OpCode::Query);
    let mut q = Query::query(
        Name::from_str("orders.ovl.internal.").unwrap(),
        RecordType::TXT,
    );
    q.set_query_class(DNSClass::CH);
    m.add_query(q);
    let r = ask_bytes(&m.to_vec().unwrap(), &World::new(), false);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    let r = ask("ovl.internal.", RecordType::AXFR);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn a_broken_domain_gets_servfail_not_a_panic() {
    let w = World::new();
    let mut ctx = w.ctx();
    ctx.domain = "bad..domain";
    match answer(&query("orders.", RecordType::A), &ctx, false) {
        DnsOutcome::Reply(b) => {
            let m = Message::from_vec(&b).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        }
        other => panic!("{other:?}"),
    }
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_and_truncated_input_never_panics() {
    let w = World::new();
    let ctx = w.ctx();
    let samples = [
        query("orders.ovl.internal.", RecordType::A),
        query_with("_orders._tcp.ovl.internal.", RecordType::SRV, Some(1232)),
        query_with("ovl.internal.", RecordType::ANY, Some(512)),
        query("example.com.", RecordType::AAAA),
    ];
    for s in &samples {
        for n in 0..=s.len() {
            for tcp in [false, true] {
                let out = answer(&s[..n], &ctx, tcp);
                if n < 12 {
                    assert_eq!(out, DnsOutcome::Drop);
                }
            }
        }
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in 0..20_000 {
        let len = (rng.next() % 600) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 && len >= 12 {
            // Mostly plausible headers: a query with one question.
            bytes[2] &= 0x07;
            bytes[4] = 0;
            bytes[5] = 1;
        }
        let _ = answer(&bytes, &ctx, i % 3 == 0);
    }
    for i in 0..20_000 {
        let mut bytes = samples[i % samples.len()].clone();
        for _ in 0..(1 + rng.next() % 4) {
            let at = (rng.next() as usize) % bytes.len();
            bytes[at] = rng.next() as u8;
        }
        if let DnsOutcome::Reply(b) = answer(&bytes, &ctx, false) {
            assert!(b.len() <= usize::from(EDNS_PAYLOAD));
            assert!(Message::from_vec(&b).is_ok(), "replies decode");
        }
    }
}

#[test]
fn on_demand_candidates_are_unknown_single_labels() {
    let w = World::new();
    let c = |name: &str, t: RecordType| on_demand_candidate(&query(name, t), &w.ctx());
    assert_eq!(
        c("inventory.ovl.internal.", RecordType::A).as_deref(),
        Some("inventory")
    );
    assert_eq!(
        c("Inventory.ovl.internal.", RecordType::AAAA).as_deref(),
        Some("inventory")
    );
    // Known names, nodes, deeper names, other types, other domains: no.
    assert_eq!(c("orders.ovl.internal.", RecordType::A), None);
    assert_eq!(c("nodeb.ovl.internal.", RecordType::A), None);
    assert_eq!(c("a.b.ovl.internal.", RecordType::A), None);
    assert_eq!(c("inventory.ovl.internal.", RecordType::SRV), None);
    assert_eq!(c("inventory.example.com.", RecordType::A), None);
    assert_eq!(c("ns.ovl.internal.", RecordType::A), None);
    assert_eq!(on_demand_candidate(b"\x00\x01garbage", &w.ctx()), None);
}

#[test]
fn overlay_reverse_names_are_answered_never_forwarded() {
    // A service instance and a node, by address.
    let m = ask("2.4.64.100.in-addr.arpa.", RecordType::PTR);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    let ptrs: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(ptrs, vec!["orders.nodea.ovl.internal."]);
    let m = ask("65.4.64.100.in-addr.arpa.", RecordType::PTR);
    assert!(matches!(&m.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "nodeb.ovl.internal."));
    let m = ask("3.0.64.100.in-addr.arpa.", RecordType::PTR);
    assert!(matches!(&m.answers[0].data, RData::PTR(p) if p.0.to_ascii() == "users.ovl.internal."));
    // An overlay address nobody has: NXDOMAIN with the reverse zone's SOA, not forwarded.
    let m = ask("9.9.64.100.in-addr.arpa.", RecordType::PTR);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(has_soa(&m.authorities));
    // Inside the network's reverse zone but above an address: no records, exists.
    for name in [
        "64.100.in-addr.arpa.",
        "4.64.100.in-addr.arpa.",
        "127.100.in-addr.arpa.",
    ] {
        let m = ask(name, RecordType::PTR);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.answers.is_empty() && has_soa(&m.authorities), "{name}");
    }
    // Other types of an existing address: NODATA.
    let m = ask("2.4.64.100.in-addr.arpa.", RecordType::A);
    assert!(m.answers.is_empty() && has_soa(&m.authorities));
    // Outside the overlay network, and odd spellings: forwarded as before.
    let w = World::new();
    for name in [
        "1.0.168.192.in-addr.arpa.",
        "1.0.63.100.in-addr.arpa.",
        "1.0.128.100.in-addr.arpa.",
        "100.in-addr.arpa.",
        "02.4.64.100.in-addr.arpa.",
        "x.4.64.100.in-addr.arpa.",
        "1.2.4.64.100.in-addr.arpa.",
    ] {
        assert_eq!(
            answer(&query(name, RecordType::PTR), &w.ctx(), false),
            DnsOutcome::Forward,
            "{name}"
        );
    }
    // Without a network, every reverse name is forwarded.
    let mut ctx = w.ctx();
    ctx.network = None;
    assert_eq!(
        answer(
            &query("2.4.64.100.in-addr.arpa.", RecordType::PTR),
            &ctx,
            false
        ),
        DnsOutcome::Forward
    );
}

#[test]
fn servfail_and_refused_echo_the_question() {
    let q = query_with("example.org.", RecordType::A, Some(1232));
    for (out, code) in [
        (servfail(&q, false), ResponseCode::ServFail),
        (refused(&q, true), ResponseCode::Refused),
    ] {
        let DnsOutcome::Reply(r) = out else {
            panic!("no reply");
        };
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.response_code, code);
        assert_eq!(m.metadata.id, 0xbeef);
        assert_eq!(m.queries.len(), 1);
        assert!(m.edns.is_some());
    }
    assert_eq!(servfail(&[1, 2, 3], false), DnsOutcome::Drop);
    // A reply is not a query.
    let DnsOutcome::Reply(r) = servfail(&q, false) else {
        panic!()
    };
    assert_eq!(servfail(&r, false), DnsOutcome::Drop);
}

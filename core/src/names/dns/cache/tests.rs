use super::super::{answer, on_demand_candidate, DnsContext};
use super::*;
use crate::names::registry::ServiceInstance;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use std::net::Ipv4Addr;

/// The reply bytes of an outcome, for comparisons.
trait ReplyBytes {
    fn into_reply(self) -> Vec<u8>;
}

impl ReplyBytes for DnsOutcome {
    fn into_reply(self) -> Vec<u8> {
        match self {
            DnsOutcome::Reply(r) => r,
            other => panic!("expected a reply, got {other:?}"),
        }
    }
}

fn inst(name: &str, node: Option<&str>, addr: [u8; 4]) -> ServiceInstance {
    crate::names::dns::tests::inst(name, None, node, addr)
}

/// A name table and its generation, as the node keeps them.
struct Table {
    instances: Vec<ServiceInstance>,
    nodes: Vec<(String, Ipv4Addr)>,
    generation: u64,
}

impl Table {
    fn new() -> Self {
        Table {
            instances: vec![
                inst("orders", Some("nodea"), [100, 64, 4, 2]),
                inst("users", None, [100, 64, 0, 3]),
            ],
            nodes: vec![
                ("nodea".into(), Ipv4Addr::new(100, 64, 4, 1)),
                ("nodeb".into(), Ipv4Addr::new(100, 64, 4, 65)),
            ],
            generation: 1,
        }
    }

    fn ctx(&self) -> DnsContext<'_> {
        crate::names::dns::tests::context(&self.instances, &self.nodes, 1)
    }

    fn fresh(&self, q: &[u8]) -> DnsOutcome {
        answer(q, &self.ctx(), false)
    }

    /// What the node's UDP loop does: the cache, else the full answer (then kept).
    fn serve(&self, cache: &mut AnswerCache, q: &[u8]) -> (Vec<u8>, bool) {
        let mut out = [0u8; 2048];
        if let Some(n) = cache.reply(q, self.generation, &mut out) {
            return (out[..n].to_vec(), true);
        }
        let outcome = self.fresh(q);
        let asks = on_demand_candidate(q, &self.ctx()).is_some();
        cache.remember(q, self.generation, &outcome, asks);
        match outcome {
            DnsOutcome::Reply(r) => (r, false),
            other => panic!("expected a reply, got {other:?}"),
        }
    }
}

fn query(id: u16, name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    crate::names::dns::tests::query_id(id, name, qtype, edns)
}

fn a_records(reply: &[u8]) -> Vec<Ipv4Addr> {
    crate::names::dns::tests::a_records(&Message::from_vec(reply).unwrap())
}

fn rcode(reply: &[u8]) -> ResponseCode {
    Message::from_vec(reply).unwrap().metadata.response_code
}

#[test]
fn hits_are_byte_for_byte_the_full_answer() {
    let t = Table::new();
    let mut cache = AnswerCache::new(64 * 1024);
    let names = [
        ("orders.ovl.internal.", RecordType::A, None),
        ("orders.ovl.internal.", RecordType::TXT, Some(1232)),
        ("orders.ovl.internal.", RecordType::AAAA, None),
        ("_orders._tcp.ovl.internal.", RecordType::SRV, Some(512)),
        ("ovl.internal.", RecordType::ANY, None),
        ("ns.ovl.internal.", RecordType::A, None),
        ("nodeb.ovl.internal.", RecordType::A, None),
        ("no.such.ovl.internal.", RecordType::A, None),
    ];
    for (name, qtype, edns) in names {
        let (first, hit) = t.serve(&mut cache, &query(1, name, qtype, edns));
        assert!(!hit, "{name}: first query is a miss");
        for id in [2, 0xffff] {
            let q = query(id, name, qtype, edns);
            let (cached, hit) = t.serve(&mut cache, &q);
            assert!(hit, "{name} {qtype}: second query is a hit");
            assert_eq!(cached, t.fresh(&q).into_reply(), "{name} {qtype}");
        }
        assert_eq!(first[..2], [0, 1]);
    }
    assert_eq!(cache.len(), names.len());
}

#[test]
fn the_question_keeps_the_case_it_was_asked_in() {
    let t = Table::new();
    let mut cache = AnswerCache::new(64 * 1024);
    t.serve(
        &mut cache,
        &query(1, "orders.ovl.internal.", RecordType::A, None),
    );
    let q = query(7, "OrDeRs.OVL.internal.", RecordType::A, None);
    let (cached, hit) = t.serve(&mut cache, &q);
    assert!(hit, "case-insensitive key");
    let m = Message::from_vec(&cached).unwrap();
    assert_eq!(m.metadata.id, 7);
    assert!(m.queries[0]
        .name()
        .eq_case(&Name::from_ascii("OrDeRs.OVL.internal.").unwrap()));
    assert_eq!(a_records(&cached), vec![Ipv4Addr::new(100, 64, 4, 2)]);
    let fresh = Message::from_vec(&t.fresh(&q).into_reply()).unwrap();
    assert_eq!(m.answers, fresh.answers);
    assert_eq!(m.metadata, fresh.metadata);
}

#[test]
fn flags_and_edns_are_part_of_the_key() {
    let t = Table::new();
    let mut cache = AnswerCache::new(64 * 1024);
    let with_rd = query(1, "orders.ovl.internal.", RecordType::A, None);
    let mut without_rd = with_rd.clone();
    without_rd[2] &= !0x01;
    let edns = query(1, "orders.ovl.internal.", RecordType::A, Some(1232));
    let mut edns_do = edns.clone();
    let flags = edns_do.len() - 4;
    edns_do[flags] |= 0x80;
    let variants = [with_rd, without_rd, edns, edns_do];
    for q in &variants {
        assert!(!t.serve(&mut cache, q).1);
    }
    for q in &variants {
        let (r, hit) = t.serve(&mut cache, q);
        assert!(hit);
        assert_eq!(r, t.fresh(q).into_reply());
    }
    assert_eq!(cache.len(), variants.len());
}

#[test]
fn a_new_generation_is_never_answered_from_an_old_one() {
    let mut t = Table::new();
    let mut cache = AnswerCache::new(64 * 1024);
    let q = query(1, "api.ovl.internal.", RecordType::A, None);
    // Unknown, then registered, moved, unregistered: each step bumps the generation. Unknown
    // single labels are asked of the relay each time, so never kept.
    assert_eq!(rcode(&t.serve(&mut cache, &q).0), ResponseCode::NXDomain);
    assert!(!t.serve(&mut cache, &q).1);
    t.instances
        .push(inst("api", Some("nodeb"), [100, 64, 4, 70]));
    t.generation += 1;
    let (r, hit) = t.serve(&mut cache, &q);
    assert!(!hit);
    assert_eq!(a_records(&r), vec![Ipv4Addr::new(100, 64, 4, 70)]);
    assert!(t.serve(&mut cache, &q).1);
    // A local instance now shadows the peer's.
    t.instances
        .push(inst("api", Some("nodea"), [100, 64, 4, 9]));
    t.generation += 1;
    assert_eq!(
        a_records(&t.serve(&mut cache, &q).0),
        vec![Ipv4Addr::new(100, 64, 4, 9)]
    );
    t.instances.retain(|i| i.name != "api");
    t.generation += 1;
    let (r, hit) = t.serve(&mut cache, &q);
    assert!(!hit);
    assert_eq!(rcode(&r), ResponseCode::NXDomain);
    assert!(a_records(&r).is_empty());
    // The same for a deeper name, whose NXDOMAIN is kept.
    let q = query(1, "api.nodeb.ovl.internal.", RecordType::A, None);
    assert_eq!(rcode(&t.serve(&mut cache, &q).0), ResponseCode::NXDomain);
    assert!(t.serve(&mut cache, &q).1);
    t.instances
        .push(inst("api", Some("nodeb"), [100, 64, 4, 71]));
    t.generation += 1;
    assert_eq!(
        a_records(&t.serve(&mut cache, &q).0),
        vec![Ipv4Addr::new(100, 64, 4, 71)]
    );
}

#[test]
fn answers_from_an_older_table_are_not_kept() {
    let t = Table::new();
    let mut cache = AnswerCache::new(64 * 1024);
    let q = query(1, "orders.ovl.internal.", RecordType::A, None);
    let mut out = [0u8; 512];
    // One thread computed with generation 1 while the cache already saw 2.
    assert_eq!(cache.reply(&q, 2, &mut out), None);
    cache.remember(&q, 1, &t.fresh(&q), false);
    assert!(cache.is_empty());
    assert_eq!(cache.reply(&q, 2, &mut out), None);
}

#[test]
fn forwards_on_demand_lookups_and_odd_queries_are_not_kept() {
    let t = Table::new();
    let mut cache = AnswerCache::new(64 * 1024);
    let g = t.generation;
    let mut out = [0u8; 512];
    let _ = cache.reply(&[], g, &mut out);
    // Outside the domain.
    let q = query(1, "example.com.", RecordType::A, None);
    cache.remember(&q, g, &t.fresh(&q), false);
    // An unknown single label the relay may know.
    let q = query(1, "inventory.ovl.internal.", RecordType::A, None);
    assert!(on_demand_candidate(&q, &t.ctx()).is_some());
    cache.remember(&q, g, &t.fresh(&q), true);
    // EDNS version 1: BADVERS carries no question.
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("orders.ovl.internal.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_version(1);
    m.set_edns(e);
    let q = m.to_vec().unwrap();
    cache.remember(&q, g, &t.fresh(&q), false);
    // An EDNS option (a cookie), trailing bytes, two questions, a compressed name, a response.
    let base = query(1, "orders.ovl.internal.", RecordType::A, Some(1232));
    let mut cookie = base.clone();
    let rdlen = cookie.len() - 2;
    cookie[rdlen + 1] = 12;
    cookie.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut trailing = query(1, "orders.ovl.internal.", RecordType::A, None);
    trailing.push(0);
    let mut two = query(1, "orders.ovl.internal.", RecordType::A, None);
    two[5] = 2;
    let compressed = [
        0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
    ];
    let mut response = query(1, "orders.ovl.internal.", RecordType::A, None);
    response[2] |= 0x80;
    for q in [&cookie, &trailing, &two, &compressed[..], &response] {
        let outcome = t.fresh(q);
        cache.remember(q, g, &outcome, false);
        assert_eq!(cache.reply(q, g, &mut out), None);
    }
    assert!(cache.is_empty(), "{cache:?}");
    // The cookie query still gets its full answer.
    assert_eq!(
        a_records(&t.fresh(&cookie).into_reply()),
        vec![Ipv4Addr::new(100, 64, 4, 2)]
    );
}

#[test]
fn a_reply_larger_than_the_buffer_is_a_miss() {
    let t = Table::new();
    let mut cache = AnswerCache::new(64 * 1024);
    let q = query(1, "orders.ovl.internal.", RecordType::A, None);
    cache.remember(&q, t.generation, &t.fresh(&q), false);
    let mut small = [0u8; 20];
    assert_eq!(cache.reply(&q, t.generation, &mut small), None);
    let mut out = [0u8; 512];
    assert!(cache.reply(&q, t.generation, &mut out).is_some());
}

#[test]
fn memory_is_bounded_and_names_in_use_stay() {
    let t = Table::new();
    let budget = 4096;
    let mut cache = AnswerCache::new(budget);
    let hot = query(1, "orders.ovl.internal.", RecordType::A, None);
    t.serve(&mut cache, &hot);
    for i in 0..5000 {
        let q = query(1, &format!("n{i}.x.ovl.internal."), RecordType::A, None);
        t.serve(&mut cache, &q);
        assert!(
            t.serve(&mut cache, &hot).1,
            "the hot name was dropped at {i}"
        );
        assert!(cache.len() < 2 * budget / ENTRY_OVERHEAD, "{}", cache.len());
    }
}

#[test]
fn random_input_never_panics() {
    let t = Table::new();
    let mut cache = AnswerCache::new(8192);
    let sample = query(1, "orders.ovl.internal.", RecordType::A, Some(1232));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = [0u8; 1500];
    let mut hits = 0;
    for i in 0..20_000u64 {
        let mut q = sample.clone();
        if i % 2 == 0 {
            for _ in 0..(1 + next() % 3) {
                let at = (next() as usize) % q.len();
                q[at] = next() as u8;
            }
        } else {
            q.truncate((next() as usize) % (q.len() + 1));
        }
        let outcome = t.fresh(&q);
        cache.remember(&q, 1, &outcome, false);
        if let Some(n) = cache.reply(&q, 1, &mut out) {
            // Whatever was kept is what the full path answers (names compare without case).
            let full = Message::from_vec(&outcome.into_reply()).unwrap();
            assert_eq!(Message::from_vec(&out[..n]).unwrap(), full);
            hits += 1;
        }
    }
    assert!(
        hits > 1000,
        "only {hits} hits: the test no longer reaches the cache"
    );
}

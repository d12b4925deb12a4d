use super::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record};
use std::str::FromStr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_str(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn reply(id: u16, name: &str, code: ResponseCode, ttl: u32) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Response, OpCode::Query);
    let n = Name::from_str(name).unwrap();
    m.add_query(Query::query(n.clone(), RecordType::A));
    m.metadata.response_code = code;
    if code == ResponseCode::NoError {
        m.add_answer(Record::from_rdata(n, ttl, RData::A(A::new(192, 0, 2, 1))));
    }
    m.to_vec().unwrap()
}

#[test]
fn silent_servers_are_skipped_with_growing_pauses() {
    let mut u = Upstreams::new(&[ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.1")]);
    let p = u.plan(0);
    assert_eq!(
        p.sends,
        vec![(ip("10.0.0.1"), 0), (ip("10.0.0.2"), STAGGER_MS)]
    );
    assert!(p.deadline <= 1000, "an answer within 1 s");
    u.silent(ip("10.0.0.1"), 1000);
    // The dead one is skipped: the live one goes first, at once.
    assert_eq!(u.plan(1001).sends, vec![(ip("10.0.0.2"), 0)]);
    u.silent(ip("10.0.0.2"), 1000);
    assert!(u.all_down(1001));
    assert!(u.plan(1001).sends.is_empty(), "all dead: answer at once");
    // Tried again after the pause; a second silence doubles it.
    assert_eq!(u.plan(1000 + DOWN_BASE_MS).sends.len(), 2);
    u.silent(ip("10.0.0.1"), 5000);
    assert!(u
        .plan(5000 + DOWN_BASE_MS)
        .sends
        .iter()
        .all(|(a, _)| *a != ip("10.0.0.1")));
    assert!(u
        .plan(5000 + 2 * DOWN_BASE_MS)
        .sends
        .iter()
        .any(|(a, _)| *a == ip("10.0.0.1")));
    // Pauses stop growing.
    for _ in 0..40 {
        u.silent(ip("10.0.0.1"), 0);
    }
    assert!(
        !u.all_down(DOWN_MAX_MS)
            || u.plan(DOWN_MAX_MS)
                .sends
                .iter()
                .any(|(a, _)| *a == ip("10.0.0.1"))
    );
    // An answer brings it back at once.
    u.answered(ip("10.0.0.1"));
    assert_eq!(u.plan(1).sends.first(), Some(&(ip("10.0.0.1"), 0)));
    assert!(Upstreams::new(&[]).plan(0).sends.is_empty());
}

#[test]
fn every_send_is_before_the_deadline() {
    let addrs: Vec<IpAddr> = (1..=10).map(|i| ip(&format!("10.0.0.{i}"))).collect();
    let p = Upstreams::new(&addrs).plan(0);
    assert!(!p.sends.is_empty());
    assert!(p.sends.iter().all(|(_, at)| *at < p.deadline));
}

#[test]
fn servfail_and_refused_move_on() {
    assert!(try_next(&reply(1, "a.example.", ResponseCode::ServFail, 0)));
    assert!(try_next(&reply(1, "a.example.", ResponseCode::Refused, 0)));
    assert!(!try_next(&reply(
        1,
        "a.example.",
        ResponseCode::NXDomain,
        0
    )));
    assert!(!try_next(&reply(
        1,
        "a.example.",
        ResponseCode::NoError,
        60
    )));
    assert!(try_next(&[]));
    let q = query(7, "a.example.");
    assert!(matches_query(
        &reply(7, "a.example.", ResponseCode::NoError, 1),
        &q
    ));
    assert!(!matches_query(
        &reply(8, "a.example.", ResponseCode::NoError, 1),
        &q
    ));
    assert!(!matches_query(&q, &q), "a query is no reply");
}

#[test]
fn stale_answers_carry_the_query_id_and_a_short_ttl() {
    let mut c = StaleCache::new(64 * 1024);
    let q = query(1, "www.example.");
    c.remember(
        &q,
        &reply(1, "www.example.", ResponseCode::NoError, 3600),
        0,
    );
    assert_eq!(c.len(), 1);
    let later = query(99, "WWW.Example.");
    let stale = c.stale_reply(&later, 10_000).expect("stale answer");
    let m = Message::from_vec(&stale).unwrap();
    assert_eq!(m.metadata.id, 99);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].ttl, STALE_TTL);
    assert!(
        c.stale_reply(&later, STALE_MAX_AGE_MS + 1).is_none(),
        "too old"
    );
    assert!(c.stale_reply(&query(2, "other.example."), 0).is_none());
    // SERVFAIL and truncated answers are never kept; NXDOMAIN is.
    c.remember(
        &query(3, "f.example."),
        &reply(3, "f.example.", ResponseCode::ServFail, 0),
        0,
    );
    assert!(c.stale_reply(&query(3, "f.example."), 0).is_none());
    c.remember(
        &query(4, "n.example."),
        &reply(4, "n.example.", ResponseCode::NXDomain, 0),
        0,
    );
    assert_eq!(
        rcode(&c.stale_reply(&query(4, "n.example."), 0).unwrap()),
        Some(ResponseCode::NXDomain)
    );
}

#[test]
fn the_stale_cache_stays_within_its_budget() {
    let budget = 8 * 1024;
    let mut c = StaleCache::new(budget);
    for i in 0..2000u16 {
        let name = format!("n{i}.example.");
        c.remember(
            &query(i, &name),
            &reply(i, &name, ResponseCode::NoError, 60),
            u64::from(i),
        );
        assert!(c.bytes <= budget);
        assert!(c.order.len() <= 2 * c.entries.len() + 17);
    }
    // The newest stay.
    assert!(c.stale_reply(&query(1, "n1999.example."), 2000).is_some());
    assert!(c.stale_reply(&query(1, "n0.example."), 2000).is_none());
    // The same name again and again does not grow the order queue without bound.
    for t in 0..1000u64 {
        c.remember(
            &query(1, "same.example."),
            &reply(1, "same.example.", ResponseCode::NoError, 60),
            3000 + t,
        );
    }
    assert!(c.order.len() <= 2 * c.entries.len() + 17);
    // Garbage in, nothing kept, nothing panics.
    c.remember(&[1, 2, 3], &[4, 5, 6, 7], 0);
    assert!(c.stale_reply(&[0xff; 40], 0).is_none());
}

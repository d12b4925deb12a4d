//! What `overlay resolve NAME` needs to show the DNS server's own answer: the names a stub
//! resolver with our search domain tries, a query to put through the server, and its reply in
//! words.

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Serialize;

/// The names the system resolver tries for `name`, in order, with `domain` first in its search
/// list and `ndots:1` (glibc's default): a name without dots is tried under the domain first, a
/// dotted one as written first; a name already in the domain only as written.
pub fn candidates(name: &str, domain: &str) -> Vec<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Vec::new();
    }
    let in_domain = name == domain || name.ends_with(&format!(".{domain}"));
    if domain.is_empty() || in_domain {
        return vec![name];
    }
    let qualified = format!("{name}.{domain}");
    if name.contains('.') {
        vec![name, qualified]
    } else {
        vec![qualified, name]
    }
}

/// A recursive query for `name`: SRV for `_service._proto` names, else A; `None` if `name` is
/// not a DNS name.
pub fn query_for(name: &str, id: u16) -> Option<Vec<u8>> {
    let fq = format!("{}.", name.trim_end_matches('.'));
    let n = Name::from_ascii(&fq).ok()?;
    let qtype = if name.starts_with('_') {
        RecordType::SRV
    } else {
        RecordType::A
    };
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(n, qtype));
    m.to_vec().ok()
}

/// A reply in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`...
    pub rcode: String,
    /// The answer records as `TYPE data`, e.g. `A 100.64.0.7`, `SRV 0 0 8080 api.ovl.internal.`.
    pub answers: Vec<String>,
}

/// Decodes `reply`; `None` if it does not parse.
pub fn summarize(reply: &[u8]) -> Option<Summary> {
    let m = Message::from_vec(reply).ok()?;
    let answers = m
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => format!("A {}", a.0),
            other => format!("{} {other}", r.record_type()),
        })
        .collect();
    Some(Summary {
        rcode: mnemonic(u16::from(m.metadata.response_code)),
        answers,
    })
}

/// The usual name of a response code, as dig prints it.
fn mnemonic(code: u16) -> String {
    match code {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order_like_glibc() {
        let d = "ovl.internal";
        assert_eq!(candidates("db", d), vec!["db.ovl.internal", "db"]);
        assert_eq!(
            candidates("v3.hello", d),
            vec!["v3.hello", "v3.hello.ovl.internal"]
        );
        assert_eq!(candidates("API.ovl.internal.", d), vec!["api.ovl.internal"]);
        assert_eq!(candidates("ovl.internal", d), vec!["ovl.internal"]);
        assert_eq!(candidates("", d), Vec::<String>::new());
    }

    #[test]
    fn queries_and_summaries() {
        let q = query_for("_api._tcp.ovl.internal", 7).unwrap();
        let m = Message::from_vec(&q).unwrap();
        assert_eq!(m.queries[0].query_type(), RecordType::SRV);
        assert_eq!(
            Message::from_vec(&query_for("api", 1).unwrap())
                .unwrap()
                .queries[0]
                .query_type(),
            RecordType::A
        );
        assert!(query_for("a..b", 1).is_none());
        assert!(summarize(&[1, 2, 3]).is_none());
        let s = summarize(&q).unwrap();
        assert_eq!(s.rcode, "NOERROR");
        assert!(s.answers.is_empty());
    }
}

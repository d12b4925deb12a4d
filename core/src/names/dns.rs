//! The node's DNS answers, from query bytes to reply bytes.
//!
//! [`answer`] decodes one query, resolves it with [`Resolver`] and encodes the reply; names outside
//! the overlay domain come back as [`DnsOutcome::Forward`] so the caller sends the original bytes to
//! the upstream resolvers. Every input is untrusted: nothing here panics, whatever the bytes.
//!
//! Records (TTL [`DnsContext::ttl`], short so that moves propagate):
//! - `A` of a service name: the chosen instance; of a node name: the node; `TXT` on the same names:
//!   `node=`, `tag=`, `where=local|remote|peer`.
//! - `SRV` of `_name._tcp` / `_name._udp`: every instance, priority 0, 1, 2... in preference order,
//!   weight 0, the instance's port and its own A name as target (A glue in the additional section).
//! - `SOA` and `NS` at the apex; `ns.<domain>` is the server's own address (the relay refuses `ns`
//!   as a service or node name, so nothing else takes it).
//! - Other types of existing names: no answers and the SOA (NODATA); unknown names: NXDOMAIN and the
//!   SOA.
//!
//! Replies over UDP fit the client's EDNS size (at most [`EDNS_PAYLOAD`]) or 512 bytes without EDNS:
//! the additional section goes first, then answers, and TC is set. Over TCP the limit is 65535.

use crate::names::registry::ServiceInstance;
use crate::names::resolver::{srv_target, where_, Resolution, Resolver};
use crate::net::prefix::Ipv4Prefix;
use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_proto::ProtoError;
use std::net::Ipv4Addr;

mod cache;
pub mod explain;
pub mod upstream;
pub use cache::AnswerCache;

/// Default TTL of every record, in seconds.
pub const DEFAULT_TTL: u32 = 5;

/// The UDP payload size advertised in replies, and the most a UDP reply uses.
pub const EDNS_PAYLOAD: u16 = 1232;

/// Largest reply without EDNS over UDP.
const PLAIN_UDP_LIMIT: usize = 512;

/// The label of the name server's own name under the domain.
pub const NS_LABEL: &str = "ns";

/// What the DNS server needs to answer.
#[derive(Clone, Copy, Debug)]
pub struct DnsContext<'a> {
    /// The known service instances.
    pub instances: &'a [ServiceInstance],
    /// The nodes and their overlay addresses.
    pub nodes: &'a [(String, Ipv4Addr)],
    /// This node's name.
    pub local_node: &'a str,
    /// The overlay domain, e.g. `ovl.internal`.
    pub domain: &'a str,
    /// The DNS server's own address (for the NS glue).
    pub server_addr: Ipv4Addr,
    /// TTL of every record.
    pub ttl: u32,
    /// The SOA serial (e.g. the registry view's sequence number, truncated).
    pub serial: u32,
    /// The overlay network, whose reverse zone (`in-addr.arpa`) is answered here and never
    /// forwarded; `None` forwards every reverse name.
    pub network: Option<Ipv4Prefix>,
}

/// What to do with a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsOutcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// The name is outside the domain: forward the original query upstream.
    Forward,
    /// Not worth an answer (too short to carry an id, or not a query).
    Drop,
}

/// Answers one DNS query; `tcp` lifts the UDP size limit.
pub fn answer(query: &[u8], ctx: &DnsContext<'_>, tcp: bool) -> DnsOutcome {
    if query.len() < 12 {
        return DnsOutcome::Drop;
    }
    let Ok(header) = Header::read(&mut BinDecoder::new(query)) else {
        return DnsOutcome::Drop;
    };
    if header.metadata.message_type != MessageType::Query {
        return DnsOutcome::Drop;
    }
    let plain_limit = if tcp {
        usize::from(u16::MAX)
    } else {
        PLAIN_UDP_LIMIT
    };
    if header.metadata.op_code != OpCode::Query {
        return error_reply(&header.metadata, ResponseCode::NotImp, plain_limit);
    }
    if header.counts.queries != 1 {
        return error_reply(&header.metadata, ResponseCode::FormErr, plain_limit);
    }
    let Ok(request) = Message::from_vec(query) else {
        return error_reply(&header.metadata, ResponseCode::FormErr, plain_limit);
    };
    let Some(question) = request.queries.first() else {
        return error_reply(&header.metadata, ResponseCode::FormErr, plain_limit);
    };
    let limit = match (&request.edns, tcp) {
        (_, true) => usize::from(u16::MAX),
        (Some(e), false) => usize::from(e.max_payload().clamp(512, EDNS_PAYLOAD)),
        (None, false) => PLAIN_UDP_LIMIT,
    };

    let labels: Vec<String> = question
        .name()
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    let reverse = ctx.network.and_then(|net| reverse_name(&labels, net));
    let resolver = Resolver::new(ctx.instances, ctx.nodes, ctx.local_node, ctx.domain);
    let resolution = resolver.resolve_labels(&labels);
    if resolution == Resolution::NotInDomain && reverse.is_none() {
        return DnsOutcome::Forward;
    }

    let mut response = Message::new(header.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.authoritative = true;
    response.metadata.recursion_available = true;
    response.add_query(question.clone());
    if let Some(e) = &request.edns {
        response.set_edns(our_edns());
        if e.version() > 0 {
            response.metadata.response_code = ResponseCode::BADVERS;
            response.metadata.authoritative = false;
            response.queries.clear();
            return finish(response, limit);
        }
    }
    if !matches!(question.query_class(), DNSClass::IN | DNSClass::ANY) {
        response.metadata.response_code = ResponseCode::Refused;
        response.metadata.authoritative = false;
        return finish(response, limit);
    }
    let is_ns_host = resolution == Resolution::NxDomain
        && labels.len() == domain_labels(ctx.domain) + 1
        && labels.first().is_some_and(|l| l == NS_LABEL);
    let filled = if let Some(rev) = reverse {
        Zone::new(ctx)
            .and_then(|z| z.reverse(&mut response, question.name(), question.query_type(), rev))
    } else if is_ns_host {
        Zone::new(ctx).and_then(|z| {
            z.address(
                &mut response,
                question.name(),
                question.query_type(),
                ctx.server_addr,
            )
        })
    } else {
        Zone::new(ctx).and_then(|z| {
            z.fill(
                &mut response,
                question.name(),
                question.query_type(),
                &resolution,
            )
        })
    };
    if filled.is_err() {
        response.answers.clear();
        response.authorities.clear();
        response.additionals.clear();
        response.metadata.response_code = ResponseCode::ServFail;
    }
    finish(response, limit)
}

/// For a query of `x.<domain>` (A, AAAA or ANY) that the registry cannot answer, the label `x`:
/// a name the relay may find in the remote environment on demand. `None` for everything else.
pub fn on_demand_candidate(query: &[u8], ctx: &DnsContext<'_>) -> Option<String> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query || request.queries.len() != 1 {
        return None;
    }
    let question = request.queries.first()?;
    if !matches!(
        question.query_type(),
        RecordType::A | RecordType::AAAA | RecordType::ANY
    ) {
        return None;
    }
    let labels: Vec<String> = question
        .name()
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    if labels.len() != domain_labels(ctx.domain) + 1
        || labels.first().is_some_and(|l| l == NS_LABEL)
    {
        return None;
    }
    let resolver = Resolver::new(ctx.instances, ctx.nodes, ctx.local_node, ctx.domain);
    if resolver.resolve_labels(&labels) != Resolution::NxDomain {
        return None;
    }
    let label = labels.into_iter().next()?;
    crate::names::registry::valid_label(&label).then_some(label)
}

/// A reply to `query` with `code` (SERVFAIL when no upstream answered in time, REFUSED for a
/// name this listener does not serve): the question echoed, EDNS echoed, nothing else.
/// [`DnsOutcome::Drop`] for bytes that are no query.
pub fn reply_with_code(query: &[u8], code: ResponseCode, tcp: bool) -> DnsOutcome {
    let Ok(header) = Header::read(&mut BinDecoder::new(query)) else {
        return DnsOutcome::Drop;
    };
    if header.metadata.message_type != MessageType::Query {
        return DnsOutcome::Drop;
    }
    let limit = if tcp {
        usize::from(u16::MAX)
    } else {
        PLAIN_UDP_LIMIT
    };
    let Ok(request) = Message::from_vec(query) else {
        return error_reply(&header.metadata, code, limit);
    };
    let mut m = Message::new(header.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata = Metadata::response_from_request(&request.metadata);
    m.metadata.recursion_available = true;
    m.metadata.response_code = code;
    for q in request.queries.iter().take(1) {
        m.add_query(q.clone());
    }
    if request.edns.is_some() {
        m.set_edns(our_edns());
    }
    finish(m, limit)
}

/// [`reply_with_code`] with SERVFAIL.
pub fn servfail(query: &[u8], tcp: bool) -> DnsOutcome {
    reply_with_code(query, ResponseCode::ServFail, tcp)
}

/// [`reply_with_code`] with REFUSED.
pub fn refused(query: &[u8], tcp: bool) -> DnsOutcome {
    reply_with_code(query, ResponseCode::Refused, tcp)
}

/// A name in the overlay network's reverse zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reverse {
    /// `d.c.b.a.in-addr.arpa` of an address in the network.
    Address(Ipv4Addr),
    /// A shorter name inside the zone (`b.a.in-addr.arpa` ...): exists, no records of its own;
    /// `zone` is the first two octets (the /16 the SOA belongs to).
    Inner([u8; 2]),
}

/// Reads `labels` (lower case) as a reverse name inside `net`; `None` when it is no
/// `in-addr.arpa` name of the network (those go upstream as before).
fn reverse_name(labels: &[String], net: Ipv4Prefix) -> Option<Reverse> {
    let n = labels.len();
    if n < 4 || labels[n - 1] != "arpa" || labels[n - 2] != "in-addr" || n > 6 {
        return None;
    }
    // Octets, most significant first.
    let octets: Vec<u8> = labels[..n - 2]
        .iter()
        .rev()
        .map(|l| {
            // No leading zeros, as reverse names are written.
            if l.len() > 1 && l.starts_with('0') {
                return None;
            }
            l.parse::<u8>().ok()
        })
        .collect::<Option<Vec<u8>>>()?;
    let zone = [octets[0], *octets.get(1)?];
    let first = Ipv4Addr::new(zone[0], zone[1], 0, 0);
    // The /16 must overlap the network.
    let block = Ipv4Prefix::containing(first, 16);
    if !(net.covers(&block) || block.covers(&net)) {
        return None;
    }
    match octets.as_slice() {
        [a, b, c, d] => {
            let ip = Ipv4Addr::new(*a, *b, *c, *d);
            net.contains(ip).then_some(Reverse::Address(ip))
        }
        [a, b, c] => {
            let p = Ipv4Prefix::containing(Ipv4Addr::new(*a, *b, *c, 0), 24);
            (net.covers(&p) || p.covers(&net)).then_some(Reverse::Inner(zone))
        }
        _ => Some(Reverse::Inner(zone)),
    }
}

fn our_edns() -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(EDNS_PAYLOAD);
    e.set_version(0);
    e
}

fn domain_labels(domain: &str) -> usize {
    let d = domain.trim_end_matches('.');
    if d.is_empty() {
        0
    } else {
        d.split('.').count()
    }
}

/// A header-only reply with `code`.
fn error_reply(request: &Metadata, code: ResponseCode, limit: usize) -> DnsOutcome {
    let mut m = Message::new(request.id, MessageType::Response, request.op_code);
    m.metadata = Metadata::response_from_request(request);
    m.metadata.response_code = code;
    finish(m, limit)
}

fn finish(message: Message, limit: usize) -> DnsOutcome {
    match encode_within(message, limit) {
        Some(bytes) => DnsOutcome::Reply(bytes),
        None => DnsOutcome::Drop,
    }
}

/// Encodes `m` in at most `limit` bytes: drops additional records first (no TC), then the
/// authority section and as many answers from the end as needed (TC set).
fn encode_within(mut m: Message, limit: usize) -> Option<Vec<u8>> {
    let fits = |m: &Message| m.to_vec().ok().filter(|b| b.len() <= limit);
    if let Some(b) = fits(&m) {
        return Some(b);
    }
    m.additionals.clear();
    if let Some(b) = fits(&m) {
        return Some(b);
    }
    m.metadata.truncation = true;
    m.authorities.clear();
    let answers = std::mem::take(&mut m.answers);
    // The most answers that fit, by bisection: `lo` answers may fit, `hi` answers do not.
    let (mut lo, mut hi) = (0, answers.len() + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        m.answers = answers[..mid].to_vec();
        if fits(&m).is_some() {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    m.answers = answers[..lo].to_vec();
    fits(&m)
}

/// The zone's fixed names and records.
struct Zone<'c> {
    ctx: &'c DnsContext<'c>,
    apex: Name,
    ns: Name,
}

fn fqdn(name: &str) -> Result<Name, ProtoError> {
    let name = name.trim_end_matches('.');
    Name::from_ascii(format!("{name}."))
}

impl<'c> Zone<'c> {
    fn new(ctx: &'c DnsContext<'c>) -> Result<Self, ProtoError> {
        let apex = fqdn(ctx.domain)?;
        let ns = fqdn(&format!("{NS_LABEL}.{}", ctx.domain.trim_end_matches('.')))?;
        Ok(Zone { ctx, apex, ns })
    }

    fn record(&self, name: Name, data: RData) -> Record {
        Record::from_rdata(name, self.ctx.ttl, data)
    }

    fn soa(&self) -> Result<Record, ProtoError> {
        let hostmaster = self.apex.prepend_label("hostmaster")?;
        let soa = SOA::new(
            self.ns.clone(),
            hostmaster,
            self.ctx.serial,
            60,
            10,
            3600,
            self.ctx.ttl,
        );
        Ok(self.record(self.apex.clone(), RData::SOA(soa)))
    }

    fn nodata(&self, m: &mut Message) -> Result<(), ProtoError> {
        m.add_authority(self.soa()?);
        Ok(())
    }

    /// Fills `m` for a name that is a single address (the name server's own name).
    fn address(
        &self,
        m: &mut Message,
        qname: &Name,
        qtype: RecordType,
        addr: Ipv4Addr,
    ) -> Result<(), ProtoError> {
        match qtype {
            RecordType::A | RecordType::ANY => {
                m.add_answer(self.record(qname.clone(), RData::A(A(addr))));
                Ok(())
            }
            _ => self.nodata(m),
        }
    }

    /// The SOA of the reverse zone `b.a.in-addr.arpa`.
    fn reverse_soa(&self, zone: [u8; 2]) -> Result<Record, ProtoError> {
        let owner = fqdn(&format!("{}.{}.in-addr.arpa", zone[1], zone[0]))?;
        let hostmaster = self.apex.prepend_label("hostmaster")?;
        let soa = SOA::new(
            self.ns.clone(),
            hostmaster,
            self.ctx.serial,
            60,
            10,
            3600,
            self.ctx.ttl,
        );
        Ok(self.record(owner, RData::SOA(soa)))
    }

    /// Fills `m` for a name in the overlay network's reverse zone: PTR to the node's or the
    /// service instance's own name, NXDOMAIN for an address nobody has.
    fn reverse(
        &self,
        m: &mut Message,
        qname: &Name,
        qtype: RecordType,
        rev: Reverse,
    ) -> Result<(), ProtoError> {
        let ip = match rev {
            Reverse::Inner(zone) => {
                m.add_authority(self.reverse_soa(zone)?);
                return Ok(());
            }
            Reverse::Address(ip) => ip,
        };
        let o = ip.octets();
        let zone = [o[0], o[1]];
        let domain = self.ctx.domain.trim_end_matches('.');
        let target = if let Some((n, _)) = self.ctx.nodes.iter().find(|(_, a)| *a == ip) {
            Some(format!("{n}.{domain}"))
        } else {
            self.ctx
                .instances
                .iter()
                .find(|i| i.address == ip)
                .map(|i| i.hostname(domain))
        };
        let Some(target) = target else {
            m.metadata.response_code = ResponseCode::NXDomain;
            m.add_authority(self.reverse_soa(zone)?);
            return Ok(());
        };
        if matches!(qtype, RecordType::PTR | RecordType::ANY) {
            m.add_answer(self.record(qname.clone(), RData::PTR(PTR(fqdn(&target)?))));
        } else {
            m.add_authority(self.reverse_soa(zone)?);
        }
        Ok(())
    }

    fn txt(&self, qname: &Name, inst: &ServiceInstance) -> Record {
        let txt = TXT::new(vec![
            format!("node={}", inst.node.as_deref().unwrap_or("")),
            format!("tag={}", inst.tag.as_deref().unwrap_or("")),
            format!("where={}", where_(inst, self.ctx.local_node)),
        ]);
        self.record(qname.clone(), RData::TXT(txt))
    }

    fn fill(
        &self,
        m: &mut Message,
        qname: &Name,
        qtype: RecordType,
        resolution: &Resolution,
    ) -> Result<(), ProtoError> {
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            m.metadata.response_code = ResponseCode::Refused;
            return Ok(());
        }
        let any = qtype == RecordType::ANY;
        match resolution {
            Resolution::NotInDomain => Ok(()),
            Resolution::NxDomain => {
                m.metadata.response_code = ResponseCode::NXDomain;
                self.nodata(m)
            }
            Resolution::NoRecords => self.nodata(m),
            Resolution::Apex => {
                if any || qtype == RecordType::SOA {
                    m.add_answer(self.soa()?);
                }
                if any || qtype == RecordType::NS {
                    let ns = RData::NS(NS(self.ns.clone()));
                    m.add_answer(self.record(self.apex.clone(), ns));
                    let glue = RData::A(A(self.ctx.server_addr));
                    m.add_additional(self.record(self.ns.clone(), glue));
                }
                if m.answers.is_empty() {
                    self.nodata(m)?;
                }
                Ok(())
            }
            Resolution::Node { address, .. } => self.address(m, qname, qtype, *address),
            Resolution::Found { chosen } => {
                for (inst, _) in chosen {
                    if any || qtype == RecordType::A {
                        m.add_answer(self.record(qname.clone(), RData::A(A(inst.address))));
                    }
                    if any || qtype == RecordType::TXT {
                        m.add_answer(self.txt(qname, inst));
                    }
                }
                if m.answers.is_empty() {
                    self.nodata(m)?;
                }
                Ok(())
            }
            Resolution::Srv { chosen, .. } => {
                if !(any || qtype == RecordType::SRV) {
                    return self.nodata(m);
                }
                for (priority, (inst, _)) in chosen.iter().enumerate() {
                    let target = fqdn(&srv_target(inst, self.ctx.domain))?;
                    let priority = u16::try_from(priority).unwrap_or(u16::MAX);
                    let srv = SRV::new(priority, 0, inst.port, target.clone());
                    m.add_answer(self.record(qname.clone(), RData::SRV(srv)));
                    m.add_additional(self.record(target, RData::A(A(inst.address))));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;

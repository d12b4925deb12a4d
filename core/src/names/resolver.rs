//! Which instance a name means: the precedence rules of "Names and DNS".
//!
//! Inside the domain (`ovl.internal` by default, matched case-insensitively, trailing dot ok):
//! - `orders`: the preferred untagged instance: on this node, else remote, else on a peer
//!   (peers in the relay's registration order: the first registered stays preferred until it
//!   leaves, then node name). A bare single label is read as `orders.<domain>`.
//! - `orders.<node>`: that node's untagged instance; `<tag>.orders`: the tagged variant, with the
//!   same preference; `<tag>.orders.<node>`: that node's tagged instance.
//! - `<node>`: the node's own address. The relay keeps node and service names apart; should a
//!   view still hold a service named like a node, the node wins.
//! - `_orders._tcp` / `_orders._udp`: every instance of that protocol, preferred first
//!   (untagged before tagged, then local, remote, peer, then registration order, node and tag).
//! - Names that only exist as parents of others (`_tcp`, `orders` when only `v2.orders` runs)
//!   have no records; everything else in the domain does not exist.

use crate::names::registry::{Protocol, ServiceInstance};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::net::Ipv4Addr;

/// Where an instance runs, seen from one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Where {
    /// On this node.
    Local,
    /// In the remote environment.
    Remote,
    /// On another node.
    Peer,
}

impl Where {
    /// `local`, `remote` or `peer`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Where::Local => "local",
            Where::Remote => "remote",
            Where::Peer => "peer",
        }
    }
}

impl fmt::Display for Where {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where `instance` runs as seen from `local_node`.
pub fn where_(instance: &ServiceInstance, local_node: &str) -> Where {
    match &instance.node {
        None => Where::Remote,
        Some(n) if n.eq_ignore_ascii_case(local_node) => Where::Local,
        Some(_) => Where::Peer,
    }
}

/// Why a name resolved to what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The instance on this node wins.
    LocalInstance,
    /// No local instance: the remote one wins.
    RemoteInstance,
    /// Neither local nor remote: the first peer instance registered.
    PeerInstance,
    /// The name named the node.
    NodeQualified,
    /// The name named a tagged variant.
    Tagged,
    /// The name is a node's own name.
    NodeAddress,
    /// The name picked the remote instance (`name.remote`).
    RemoteQualified,
}

impl Rule {
    /// The reason, as said after the answer in `overlay resolve`.
    pub fn describe(&self) -> &'static str {
        match self {
            Rule::LocalInstance => "local instance preferred over remote and peers",
            Rule::RemoteInstance => "no local instance; remote preferred over peers",
            Rule::PeerInstance => {
                "no local or remote instance; peers in registration order, the first stays preferred"
            }
            Rule::NodeQualified => "the name picks the node explicitly",
            Rule::Tagged => "tagged variant; local preferred over remote and peers",
            Rule::NodeAddress => "a node's own overlay address",
            Rule::RemoteQualified => "the name picks the remote environment's instance explicitly",
        }
    }
}

/// The outcome of resolving one name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Resolution {
    /// Outside the domain: ask the upstream resolvers.
    NotInDomain,
    /// The domain itself (SOA, NS).
    Apex,
    /// In the domain, but no such name.
    NxDomain,
    /// The name exists only as a parent of other names: no records of its own.
    NoRecords,
    /// A service name: the instances it points at (one, the preferred).
    Found {
        /// The chosen instances and why.
        chosen: Vec<(ServiceInstance, Rule)>,
    },
    /// A node's own name.
    Node {
        /// The node.
        name: String,
        /// Its overlay address.
        address: Ipv4Addr,
    },
    /// An SRV name: every instance of that service and protocol, preferred first.
    Srv {
        /// The service name.
        name: String,
        /// Its protocol label.
        protocol: Protocol,
        /// The instances, preferred first, and why each is where it is.
        chosen: Vec<(ServiceInstance, Rule)>,
    },
}

fn location(inst: &ServiceInstance, local_node: &str) -> String {
    match (where_(inst, local_node), &inst.node) {
        (Where::Local, _) => "on this node".to_string(),
        (Where::Remote, _) | (_, None) => "in the remote environment".to_string(),
        (Where::Peer, Some(n)) => format!("on node {n}"),
    }
}

impl Resolution {
    /// One sentence for `overlay resolve NAME`.
    pub fn describe(&self, qname: &str, local_node: &str, domain: &str) -> String {
        let qname = qname.trim_end_matches('.');
        let domain = domain.trim_end_matches('.');
        match self {
            Resolution::NotInDomain => format!(
                "{qname} is outside {domain}: it is forwarded to the system's previous resolvers"
            ),
            Resolution::Apex => format!("{qname} is the overlay's DNS zone itself"),
            Resolution::NxDomain => {
                format!("no service or node is named {qname} in {domain}")
            }
            Resolution::NoRecords => {
                format!("{qname} has no address of its own, only names below it")
            }
            Resolution::Found { chosen } => match chosen.first() {
                None => format!("no service or node is named {qname} in {domain}"),
                Some((inst, rule)) => {
                    let subject = match &inst.tag {
                        Some(t) => format!("{t}.{}", inst.name),
                        None => inst.name.clone(),
                    };
                    let verb = match rule {
                        Rule::LocalInstance => "runs",
                        _ => "resolves to the instance",
                    };
                    let at = match inst.known_port() {
                        Some(p) => format!("{}:{p}", inst.address),
                        None => format!(
                            "{} (any port: a name found on demand stands for a host)",
                            inst.address
                        ),
                    };
                    format!(
                        "{subject} {verb} {} at {at} ({})",
                        location(inst, local_node),
                        rule.describe()
                    )
                }
            },
            Resolution::Node { name, address } => {
                format!(
                    "{qname} is node {name} at {address} ({})",
                    Rule::NodeAddress.describe()
                )
            }
            Resolution::Srv {
                name,
                protocol,
                chosen,
            } => format!(
                "{qname} lists the {} {protocol} instance(s) of {name}, preferred first",
                chosen.len()
            ),
        }
    }
}

/// Rank for "preferred first": local, remote, peer; peers first registered first (a newcomer
/// never takes over, whatever its node name); then node name and tag.
fn preference(a: &ServiceInstance, b: &ServiceInstance, local_node: &str) -> Ordering {
    let (wa, wb) = (where_(a, local_node), where_(b, local_node));
    wa.cmp(&wb)
        .then_with(|| match (wa, wb) {
            (Where::Peer, Where::Peer) => a.registered.cmp(&b.registered),
            _ => Ordering::Equal,
        })
        .then_with(|| a.node.cmp(&b.node))
        .then_with(|| a.tag.cmp(&b.tag))
        .then_with(|| a.address.cmp(&b.address))
}

fn rule_for(inst: &ServiceInstance, local_node: &str) -> Rule {
    if inst.tag.is_some() {
        return Rule::Tagged;
    }
    match where_(inst, local_node) {
        Where::Local => Rule::LocalInstance,
        Where::Remote => Rule::RemoteInstance,
        Where::Peer => Rule::PeerInstance,
    }
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn opt_eq(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => eq(a, b),
        _ => false,
    }
}

/// Resolves names against a list of instances and nodes, as seen from `local_node`.
#[derive(Clone, Copy, Debug)]
pub struct Resolver<'a> {
    /// The known instances (a [`crate::names::registry::RegistryView`]'s `instances()`).
    pub instances: &'a [ServiceInstance],
    /// The nodes and their overlay addresses.
    pub nodes: &'a [(String, Ipv4Addr)],
    /// This node's name.
    pub local_node: &'a str,
    /// The overlay domain, e.g. `ovl.internal`.
    pub domain: &'a str,
}

impl<'a> Resolver<'a> {
    /// A resolver over these inputs.
    pub fn new(
        instances: &'a [ServiceInstance],
        nodes: &'a [(String, Ipv4Addr)],
        local_node: &'a str,
        domain: &'a str,
    ) -> Self {
        Resolver {
            instances,
            nodes,
            local_node,
            domain,
        }
    }

    /// Resolves a dotted name (case-insensitive, trailing dot optional).
    pub fn resolve(&self, qname: &str) -> Resolution {
        let name = qname.strip_suffix('.').unwrap_or(qname);
        if name.is_empty() {
            return Resolution::NotInDomain;
        }
        let labels: Vec<&str> = name.split('.').collect();
        self.resolve_labels(&labels)
    }

    /// Resolves a name given as labels (e.g. decoded from the wire; dots inside labels never match).
    pub fn resolve_labels<S: AsRef<str>>(&self, labels: &[S]) -> Resolution {
        let domain = self.domain.trim_end_matches('.');
        let domain: Vec<&str> = if domain.is_empty() {
            Vec::new()
        } else {
            domain.split('.').collect()
        };
        let labels: Vec<&str> = labels.iter().map(AsRef::as_ref).collect();
        let in_domain = labels.len() >= domain.len()
            && labels[labels.len() - domain.len()..]
                .iter()
                .zip(&domain)
                .all(|(a, b)| eq(a, b));
        if in_domain {
            let rel = &labels[..labels.len() - domain.len()];
            if rel.is_empty() {
                return Resolution::Apex;
            }
            return self.relative(rel);
        }
        if labels.len() == 1 {
            // A bare name the search domain did not qualify: ours only if we know it.
            return match self.relative(&labels) {
                r @ (Resolution::Found { .. } | Resolution::Node { .. }) => r,
                _ => Resolution::NotInDomain,
            };
        }
        Resolution::NotInDomain
    }

    /// Instances named `name` with tag `tag`, preferred first.
    pub fn ranked(&self, name: &str, tag: Option<&str>) -> Vec<&'a ServiceInstance> {
        let mut v: Vec<&ServiceInstance> = self
            .instances
            .iter()
            .filter(|i| eq(&i.name, name) && opt_eq(i.tag.as_deref(), tag))
            .collect();
        v.sort_by(|a, b| preference(a, b, self.local_node));
        v
    }

    fn on_node(&self, name: &str, tag: Option<&str>, node: &str) -> Option<&'a ServiceInstance> {
        self.instances.iter().find(|i| {
            eq(&i.name, name)
                && opt_eq(i.tag.as_deref(), tag)
                && opt_eq(i.node.as_deref(), Some(node))
        })
    }

    fn relative(&self, rel: &[&str]) -> Resolution {
        let found = |inst: &ServiceInstance, rule: Rule| Resolution::Found {
            chosen: vec![(inst.clone(), rule)],
        };
        match rel {
            [srv, proto] if srv.len() > 1 && srv.starts_with('_') && proto.starts_with('_') => {
                if let Some(r) = self.srv(&srv[1..], &proto[1..]) {
                    return r;
                }
            }
            [name] => {
                // A node's name is its own: a service of the same name never shadows it.
                if let Some((n, a)) = self.nodes.iter().find(|(n, _)| eq(n, name)) {
                    return Resolution::Node {
                        name: n.clone(),
                        address: *a,
                    };
                }
                if let Some(i) = self.ranked(name, None).first() {
                    return found(i, rule_for(i, self.local_node));
                }
            }
            [name, remote] if eq(remote, REMOTE_LABEL) => {
                if let Some(i) = self
                    .instances
                    .iter()
                    .find(|i| i.is_remote() && eq(&i.name, name))
                {
                    return found(i, Rule::RemoteQualified);
                }
            }
            [a, b] => {
                if let Some(i) = self.on_node(a, None, b) {
                    return found(i, Rule::NodeQualified);
                }
                if let Some(i) = self.ranked(b, Some(a)).first() {
                    return found(i, Rule::Tagged);
                }
            }
            [tag, name, node] => {
                if let Some(i) = self.on_node(name, Some(tag), node) {
                    return found(i, Rule::NodeQualified);
                }
            }
            _ => {}
        }
        if self.has_names_below(rel) {
            Resolution::NoRecords
        } else {
            Resolution::NxDomain
        }
    }

    fn srv(&self, name: &str, proto: &str) -> Option<Resolution> {
        let protocol = [Protocol::Tcp, Protocol::Udp]
            .into_iter()
            .find(|p| eq(p.as_str(), proto))?;
        let mut v: Vec<&ServiceInstance> = self
            .instances
            .iter()
            // A name found on demand has no port to put in an SRV record.
            .filter(|i| eq(&i.name, name) && i.protocol == protocol && i.port != 0)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| {
            a.tag
                .is_some()
                .cmp(&b.tag.is_some())
                .then_with(|| preference(a, b, self.local_node))
        });
        Some(Resolution::Srv {
            name: v[0].name.clone(),
            protocol,
            chosen: v
                .into_iter()
                .map(|i| (i.clone(), rule_for(i, self.local_node)))
                .collect(),
        })
    }

    /// Whether some name we answer for lies strictly below `rel` (an empty non-terminal).
    fn has_names_below(&self, rel: &[&str]) -> bool {
        let below = |name: &[&str]| {
            name.len() > rel.len()
                && name[name.len() - rel.len()..]
                    .iter()
                    .zip(rel)
                    .all(|(a, b)| eq(a, b))
        };
        self.instances.iter().any(|i| {
            let srv_name = format!("_{}", i.name);
            let srv = [srv_name.as_str(), srv_protocol_label(i.protocol)];
            let tag = i.tag.as_deref();
            let node = i.node.as_deref();
            let mut names: Vec<Vec<&str>> = Vec::new();
            if i.port != 0 {
                names.push(srv.to_vec());
            }
            match (tag, node) {
                (None, None) => {
                    names.push(vec![&i.name]);
                    names.push(vec![&i.name, REMOTE_LABEL]);
                }
                (None, Some(n)) => {
                    names.push(vec![&i.name]);
                    names.push(vec![&i.name, n]);
                }
                (Some(t), None) => names.push(vec![t, &i.name]),
                (Some(t), Some(n)) => {
                    names.push(vec![t, &i.name]);
                    names.push(vec![t, &i.name, n]);
                }
            }
            names.iter().any(|n| below(n))
        })
    }
}

/// The label under which `name.remote.<domain>` always means the remote environment's instance,
/// whatever runs locally (the target of remote instances in SRV records).
pub const REMOTE_LABEL: &str = "remote";

/// The name SRV records give as the target of `inst`: its own name, and for a remote instance
/// `name.remote.<domain>`, which a local instance of the same name does not shadow.
pub fn srv_target(inst: &ServiceInstance, domain: &str) -> String {
    if !inst.is_remote() {
        return inst.hostname(domain);
    }
    let domain = domain.trim_end_matches('.');
    if domain.is_empty() {
        format!("{}.{REMOTE_LABEL}", inst.name)
    } else {
        format!("{}.{REMOTE_LABEL}.{domain}", inst.name)
    }
}

/// The SRV protocol label of `p` (`_tcp`, `_udp`).
pub fn srv_protocol_label(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "_tcp",
        Protocol::Udp => "_udp",
    }
}

/// One line of `overlay services --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceListing {
    /// The service name.
    pub name: String,
    /// The variant tag.
    pub tag: Option<String>,
    /// The node that runs it (`null` for remote).
    pub node: Option<String>,
    /// `local`, `remote` or `peer`.
    #[serde(rename = "where")]
    pub where_: Where,
    /// Its overlay address.
    pub address: Ipv4Addr,
    /// Its port; `null` for a name found on demand, which stands for a host on any port.
    pub port: Option<u16>,
    /// Its own DNS name (`[tag.]name[.node].domain`).
    pub hostname: String,
    /// Where the remote environment calls it back (node services).
    pub callback_url: Option<String>,
}

/// The listing of `instances` seen from `local_node`, by name, preferred first.
pub fn listing(
    instances: &[ServiceInstance],
    local_node: &str,
    domain: &str,
) -> Vec<ServiceListing> {
    let mut v: Vec<&ServiceInstance> = instances.iter().collect();
    v.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then_with(|| a.tag.is_some().cmp(&b.tag.is_some()))
            .then_with(|| preference(a, b, local_node))
    });
    v.into_iter()
        .map(|i| ServiceListing {
            name: i.name.clone(),
            tag: i.tag.clone(),
            node: i.node.clone(),
            where_: where_(i, local_node),
            address: i.address,
            port: i.known_port(),
            hostname: i.hostname(domain),
            callback_url: i.callback_url.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;

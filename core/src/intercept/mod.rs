//! Intercepts: the remote environment's callers of a service reach a laptop's instance instead
//! of the remote one, all of them or only requests that carry a header.
//!
//! The relay listens on a service's *front* (`front = "ADDR:PORT"` in the catalog). Without an
//! intercept the front forwards to the service's `address`. Nodes start and stop intercepts over
//! the control channel; the hub keeps them in an [`InterceptTable`] (persisted with the relay's
//! state, per node, gone when the node leaves, goes silent or stops its instance) and the front
//! routes by the [`FrontPlan`] built from it. Everything here is a plain decision:
//! - who may hold what ([`InterceptTable::add`]): one intercept per node and service; at most
//!   one without a header per service; two nodes never wait for the same header and value;
//! - which way a request goes ([`FrontPlan::route`]): the first header intercept it matches (in
//!   the order they started), else the intercept without a header, else the remote `address`.

#[cfg(test)]
mod tests;

use crate::names::registry::valid_label;
use crate::traffic::http1::is_tchar;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddrV4;

/// Longest header name an intercept matches on.
pub const MAX_HEADER_NAME: usize = 64;
/// Longest header value an intercept matches on.
pub const MAX_HEADER_VALUE: usize = 256;
/// Intercepts of one service at most (each header intercept is checked per request).
pub const MAX_PER_SERVICE: usize = 32;
/// Intercepts in all at most.
pub const MAX_TOTAL: usize = 1024;

/// Headers an intercept may not match on: connection-level fields a proxy consumes or rewrites,
/// so a match on them would depend on the hop.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
    "trailer",
];

/// A header a request must carry with exactly this value (`NAME=VALUE` on the command line).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// The field name, lower case.
    pub name: String,
    /// The exact value.
    pub value: String,
}

/// Why an intercept was refused; each is one sentence for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterceptError {
    /// The header spec is not `NAME=VALUE`.
    #[error("'{0}' is not a header to match: write NAME=VALUE, e.g. --header x-dev=alice")]
    NotNameValue(String),
    /// The header name is not a field name (RFC 9110 token), or one a proxy consumes.
    #[error("'{0}' is not a header name an intercept can match: use letters, digits and '-' (not a pseudo-header or a connection header such as Connection or Content-Length)")]
    BadName(String),
    /// The value is empty, too long or has control characters.
    #[error(
        "the value of header '{0}' must be 1 to 256 visible characters (spaces allowed inside)"
    )]
    BadValue(String),
    /// Another node holds the intercept without a header.
    #[error("{service} is already intercepted without a header by node {holder}; intercept with --header NAME=VALUE, or ask {holder} to run `overlay intercept {service} --stop`")]
    Taken {
        /// The service.
        service: String,
        /// The node that holds it.
        holder: String,
    },
    /// Another node waits for the same header and value.
    #[error("{service} requests with {header} already go to node {holder}; pick another value")]
    SameHeader {
        /// The service.
        service: String,
        /// The header as `name=value`.
        header: String,
        /// The node that holds it.
        holder: String,
    },
    /// Too many intercepts.
    #[error("{0}")]
    Full(String),
}

impl HeaderMatch {
    /// A match on `name` (any case; kept in lower case) with exactly `value`, checked.
    pub fn new(name: &str, value: &str) -> Result<HeaderMatch, InterceptError> {
        let lower = name.trim().to_ascii_lowercase();
        if lower.is_empty()
            || lower.len() > MAX_HEADER_NAME
            || !lower.bytes().all(is_tchar)
            || HOP_BY_HOP.contains(&lower.as_str())
            || lower.starts_with("proxy-")
        {
            return Err(InterceptError::BadName(name.to_string()));
        }
        // Parsers trim optional whitespace around values, so a match must not rely on it.
        let v = value.trim_matches([' ', '\t']);
        if v.is_empty()
            || v.len() > MAX_HEADER_VALUE
            || v.bytes()
                .any(|b| !(b == b' ' || b == b'\t' || b.is_ascii_graphic()))
        {
            return Err(InterceptError::BadValue(lower));
        }
        Ok(HeaderMatch {
            name: lower,
            value: v.to_string(),
        })
    }

    /// Parses `NAME=VALUE` (also `NAME:VALUE`, as curl writes headers).
    pub fn parse(spec: &str) -> Result<HeaderMatch, InterceptError> {
        let (name, value) = spec
            .split_once('=')
            .or_else(|| spec.split_once(':'))
            .ok_or_else(|| InterceptError::NotNameValue(spec.to_string()))?;
        HeaderMatch::new(name, value)
    }

    /// Checks a match that came from elsewhere (the control channel, the state file).
    pub fn checked(&self) -> Result<HeaderMatch, InterceptError> {
        HeaderMatch::new(&self.name, &self.value)
    }

    /// Whether a request whose fields are `headers` carries this one: a field of this name
    /// (any case) whose value is exactly ours, or a comma-separated list with our value as an
    /// element (a proxy may join repeated fields).
    pub fn matches<'a>(&self, mut headers: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        headers.any(|(k, v)| {
            k.eq_ignore_ascii_case(&self.name)
                && (v.trim() == self.value
                    || (v.contains(',') && v.split(',').any(|p| p.trim() == self.value)))
        })
    }
}

impl fmt::Display for HeaderMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

/// One active intercept, as persisted and listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intercept {
    /// The service (a catalog entry with a front).
    pub service: String,
    /// The node that holds it and whose instance gets the traffic.
    pub node: String,
    /// The tag of that node's instance, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Only requests with this header; `None`: every connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderMatch>,
    /// Unix seconds when it started.
    pub since: u64,
    /// Start order: header intercepts are tried oldest first.
    pub seq: u64,
}

/// What a node asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewIntercept {
    /// The service.
    pub service: String,
    /// The node asking.
    pub node: String,
    /// Its instance's tag.
    pub tag: Option<String>,
    /// The header, if any.
    pub header: Option<HeaderMatch>,
}

/// The intercepts the relay holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterceptTable {
    list: Vec<Intercept>,
    next_seq: u64,
}

impl InterceptTable {
    /// The table of persisted intercepts (invalid entries are dropped).
    pub fn restore(list: Vec<Intercept>) -> InterceptTable {
        let mut t = InterceptTable::default();
        for i in list {
            let ok_header = i
                .header
                .as_ref()
                .is_none_or(|h| h.checked().as_ref() == Ok(h));
            if valid_label(&i.service) && valid_label(&i.node) && ok_header {
                t.next_seq = t.next_seq.max(i.seq + 1);
                t.list.push(i);
            }
        }
        t.list.truncate(MAX_TOTAL);
        t.list.sort_by_key(|i| i.seq);
        t
    }

    /// Every intercept, oldest first.
    pub fn list(&self) -> &[Intercept] {
        &self.list
    }

    /// The intercepts of `service`, oldest first.
    pub fn of_service<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Intercept> {
        self.list.iter().filter(move |i| i.service == service)
    }

    /// Starts (or replaces) `req.node`'s intercept of `req.service` at unix time `now`; a node
    /// holds one per service, so a new header replaces its old one. Refused when another node
    /// holds the header-less intercept (and this one has no header), when another node waits for
    /// the same header and value, or when a limit is reached.
    pub fn add(&mut self, req: NewIntercept, now: u64) -> Result<&Intercept, InterceptError> {
        for other in self.of_service(&req.service).filter(|i| i.node != req.node) {
            match (&req.header, &other.header) {
                (None, None) => {
                    return Err(InterceptError::Taken {
                        service: req.service.clone(),
                        holder: other.node.clone(),
                    })
                }
                (Some(a), Some(b)) if a == b => {
                    return Err(InterceptError::SameHeader {
                        header: a.to_string(),
                        service: req.service.clone(),
                        holder: other.node.clone(),
                    })
                }
                _ => {}
            }
        }
        let mine = self
            .list
            .iter()
            .position(|i| i.service == req.service && i.node == req.node);
        if let Some(at) = mine {
            let i = &self.list[at];
            if i.header == req.header && i.tag == req.tag {
                // Repeated (a retried request): the same answer, nothing changes.
                return Ok(&self.list[at]);
            }
            self.list.remove(at);
        } else if self.of_service(&req.service).count() >= MAX_PER_SERVICE {
            return Err(InterceptError::Full(format!(
                "{} already has {MAX_PER_SERVICE} intercepts, the most it may; stop some first",
                req.service
            )));
        } else if self.list.len() >= MAX_TOTAL {
            return Err(InterceptError::Full(format!(
                "the relay holds {MAX_TOTAL} intercepts, the most it may; stop some first"
            )));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.list.push(Intercept {
            service: req.service,
            node: req.node,
            tag: req.tag,
            header: req.header,
            since: now,
            seq,
        });
        Ok(&self.list[self.list.len() - 1])
    }

    /// Ends `node`'s intercept of `service`; what it was, if there was one.
    pub fn remove(&mut self, node: &str, service: &str) -> Option<Intercept> {
        let at = self
            .list
            .iter()
            .position(|i| i.node == node && i.service == service)?;
        Some(self.list.remove(at))
    }

    /// Ends every intercept for which `gone` is true; returns them.
    pub fn remove_where(&mut self, mut gone: impl FnMut(&Intercept) -> bool) -> Vec<Intercept> {
        let (out, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|i| gone(i));
        self.list = keep;
        out
    }

    /// Ends every intercept of `node`; returns them.
    pub fn remove_node(&mut self, node: &str) -> Vec<Intercept> {
        self.remove_where(|i| i.node == node)
    }
}

/// Where a front sends what an intercept takes: a node and its instance's overlay address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The node.
    pub node: String,
    /// Its instance's overlay address and port.
    pub addr: SocketAddrV4,
}

/// How a front routes, built from the intercepts of its service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontPlan {
    /// Header intercepts, tried in this order (oldest first).
    pub by_header: Vec<(HeaderMatch, Target)>,
    /// The intercept without a header: every other request (connection) goes there.
    pub default: Option<Target>,
}

impl FrontPlan {
    /// The plan for `service`: its intercepts whose instance `instance` finds (the others are
    /// left out: a stopped instance takes no traffic).
    pub fn build(
        table: &InterceptTable,
        service: &str,
        instance: impl Fn(&Intercept) -> Option<SocketAddrV4>,
    ) -> FrontPlan {
        let mut plan = FrontPlan::default();
        for i in table.of_service(service) {
            let Some(addr) = instance(i) else { continue };
            let target = Target {
                node: i.node.clone(),
                addr,
            };
            match &i.header {
                Some(h) => plan.by_header.push((h.clone(), target)),
                None => plan.default = Some(target),
            }
        }
        plan
    }

    /// Whether some intercept matches on a header (rather than taking every request).
    pub fn needs_http(&self) -> bool {
        !self.by_header.is_empty()
    }

    /// Where a request with these header fields goes: an intercept's target, or `None` for the
    /// service's remote `address`.
    pub fn route<'a>(
        &self,
        headers: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Option<&Target> {
        self.by_header
            .iter()
            .find(|(h, _)| h.matches(headers.clone()))
            .map(|(_, t)| t)
            .or(self.default.as_ref())
    }
}

//! The environment every service gets (DESIGN.md, "Environment given to every service").
//!
//! Precedence, lowest first: `SERVICE_<NAME>_ADDRESS` for every known service, then `.env`, then
//! the service's own `env`. `PORT` and `OVERLAY_*` are overlay's and always win: a service `env`
//! that sets them is refused when the file is read, a `.env` that sets them is overridden.

use super::ServiceSpec;
use std::collections::BTreeMap;

/// The node's DNS server, as services should use it.
pub const OVERLAY_DNS: &str = "100.100.100.100:53";

/// Whether overlay sets `name` itself for every service.
pub fn is_reserved(name: &str) -> bool {
    name == "PORT" || name.starts_with("OVERLAY_")
}

/// Where a known service runs, best first: how `name` alone resolves.
pub use crate::names::resolver::Where;

/// A service instance known when a service starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownService {
    /// Its name.
    pub name: String,
    /// Its tag, if any.
    pub tag: Option<String>,
    /// The port callers use.
    pub port: u16,
    /// Where it runs.
    pub place: Where,
}

/// What is known about one started instance of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instance {
    /// The local port its process listens on.
    pub local_port: u16,
    /// `overlay-ip:port`, when it is registered with the daemon.
    pub address: Option<String>,
    /// Where the remote environment can call it back, if the relay offers that.
    pub callback_url: Option<String>,
}

/// `SERVICE_<NAME>_ADDRESS` for a service name: upper case, `-` becomes `_`.
pub fn address_var(name: &str) -> String {
    format!(
        "SERVICE_{}_ADDRESS",
        name.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// `SERVICE_<NAME>_ADDRESS = name.domain:port` for every name, using the port of the instance
/// `name` resolves to: untagged before tagged, then local, remote, peer. Names found on demand
/// (port 0) have no port to give and get no variable.
pub fn service_addresses(known: &[KnownService], domain: &str) -> BTreeMap<String, String> {
    let mut best: BTreeMap<&str, &KnownService> = BTreeMap::new();
    let rank = |k: &KnownService| (k.tag.is_some(), k.place);
    for k in known.iter().filter(|k| k.port != 0) {
        match best.get(k.name.as_str()) {
            Some(b) if rank(b) <= rank(k) => {}
            _ => {
                best.insert(&k.name, k);
            }
        }
    }
    let domain = domain.trim_end_matches('.');
    best.into_iter()
        .map(|(name, k)| {
            let host = if domain.is_empty() {
                name.to_string()
            } else {
                format!("{name}.{domain}")
            };
            (address_var(name), format!("{host}:{}", k.port))
        })
        .collect()
}

/// The complete set of variables overlay adds to a service's inherited environment.
pub fn service_env(
    spec: &ServiceSpec,
    inst: &Instance,
    domain: &str,
    known: &[KnownService],
    dotenv: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut env = service_addresses(known, domain);
    for (k, v) in dotenv.iter().chain(spec.env.iter()) {
        env.insert(k.clone(), v.clone());
    }
    env.insert("PORT".into(), inst.local_port.to_string());
    env.insert("OVERLAY_SERVICE".into(), spec.name.clone());
    env.insert(
        "OVERLAY_ADDRESS".into(),
        inst.address
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", inst.local_port)),
    );
    env.insert("OVERLAY_HOSTNAME".into(), spec.hostname(domain));
    env.insert(
        "OVERLAY_CALLBACK_URL".into(),
        inst.callback_url.clone().unwrap_or_default(),
    );
    env.insert("OVERLAY_DNS".into(), OVERLAY_DNS.into());
    if let Some(t) = &spec.tag {
        env.insert("OVERLAY_TAG".into(), t.clone());
    }
    env
}

/// Takes out of a worker's environment what only a listening service has: a worker (a process
/// that listens nowhere) has no overlay address and no callback URL.
pub fn strip_for_worker(env: &mut BTreeMap<String, String>) {
    env.remove("OVERLAY_ADDRESS");
    env.remove("OVERLAY_CALLBACK_URL");
}

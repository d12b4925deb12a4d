//! The session's side of the contract with the node daemon (node/src/control.rs): register a
//! service's overlay address and listener, point the listener at a new local port or hold
//! connections during a restart, unregister.

use crate::daemon::api::{self, Request};
use overlay_core::devconfig::env::{KnownService, Where};
use overlay_core::devconfig::ServiceSpec;
use std::path::PathBuf;
use std::time::Duration;

/// Longest wait for the daemon to answer one request.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The domain when no daemon tells it.
pub const DEFAULT_DOMAIN: &str = "ovl.internal";

/// Where registrations go.
#[derive(Clone, Debug)]
pub enum Registrar {
    /// The node daemon, through its control socket.
    Daemon(PathBuf),
    /// Nowhere: `--local` runs services on 127.0.0.1 only.
    Local,
}

/// What the drain after a restart did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Connections that ended on their own within the drain timeout.
    pub drained: u64,
    /// Connections closed when it passed.
    pub closed: u64,
    /// Of those, WebSocket connections sent close code 1012.
    pub websockets: u64,
}

impl std::fmt::Display for Drained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |n: u64| if n == 1 { "" } else { "s" };
        write!(
            f,
            "{} connection{} drained, {} closed",
            self.drained,
            s(self.drained),
            self.closed
        )?;
        if self.websockets > 0 {
            write!(f, " ({} WebSocket with code 1012)", self.websockets)?;
        }
        Ok(())
    }
}

/// What the daemon assigned to a service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// `overlay-ip:port`; empty with `--local`.
    pub address: String,
    /// The callback URL, if the relay offers one.
    pub callback_url: Option<String>,
}

impl Registrar {
    async fn call(&self, req: Request) -> anyhow::Result<serde_json::Value> {
        let Registrar::Daemon(path) = self else {
            return Ok(serde_json::Value::Null);
        };
        match tokio::time::timeout(CALL_TIMEOUT, api::call(path, &req)).await {
            Ok(r) => r,
            Err(_) => anyhow::bail!(
                "the overlay daemon did not answer within {} s; check `overlay status`",
                CALL_TIMEOUT.as_secs()
            ),
        }
    }

    /// The overlay's domain (and checks that the daemon answers at all).
    pub async fn domain(&self) -> anyhow::Result<String> {
        if let Registrar::Local = self {
            return Ok(DEFAULT_DOMAIN.into());
        }
        let st = self.call(Request::Status).await?;
        Ok(st
            .get("domain")
            .and_then(|d| d.as_str())
            .unwrap_or(DEFAULT_DOMAIN)
            .to_string())
    }

    /// Every service instance the node knows, for `SERVICE_*_ADDRESS`.
    pub async fn services(&self) -> anyhow::Result<Vec<KnownService>> {
        if let Registrar::Local = self {
            return Ok(Vec::new());
        }
        let data = self.call(Request::Services).await?;
        Ok(parse_services(&data))
    }

    /// Registers `spec` with a listener forwarding to `127.0.0.1:local_port`.
    pub async fn register(
        &self,
        spec: &ServiceSpec,
        local_port: u16,
    ) -> anyhow::Result<Registration> {
        if let Registrar::Local = self {
            // No overlay address: OVERLAY_ADDRESS follows the local port.
            return Ok(Registration::default());
        }
        let data = self
            .call(Request::Register {
                name: spec.name.clone(),
                tag: spec.tag.clone(),
                port: spec.port,
                target: Some(local_port),
                // Callers are held until the process is healthy and the supervisor says so.
                hold: true,
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "the overlay daemon refused to register {}: {e}",
                    spec.label()
                )
            })?;
        parse_registration(&data, spec.port).ok_or_else(|| {
            anyhow::anyhow!(
                "the overlay daemon registered {} but gave no address; upgrade the daemon",
                spec.label()
            )
        })
    }

    /// Points the listener of `spec` at `target`, or holds new connections (`None`).
    pub async fn target(&self, spec: &ServiceSpec, target: Option<u16>) -> anyhow::Result<()> {
        self.call(Request::Target {
            name: spec.name.clone(),
            tag: spec.tag.clone(),
            target,
        })
        .await
        .map(|_| ())
    }

    /// Lets the old process's connections (to `old_port`) finish for up to `spec.drain`, then
    /// closes them; `None` with `--local` (no listener).
    pub async fn drain(
        &self,
        spec: &ServiceSpec,
        old_port: u16,
    ) -> anyhow::Result<Option<Drained>> {
        if let Registrar::Local = self {
            return Ok(None);
        }
        let timeout_ms = u64::try_from(spec.drain.as_millis()).unwrap_or(u64::MAX);
        let req = Request::Drain {
            name: spec.name.clone(),
            tag: spec.tag.clone(),
            port: old_port,
            timeout_ms,
        };
        let Registrar::Daemon(path) = self else {
            return Ok(None);
        };
        // The answer comes after the drain: allow for it on top of the usual wait.
        let wait = CALL_TIMEOUT + spec.drain;
        let data = match tokio::time::timeout(wait, api::call(path, &req)).await {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("the overlay daemon did not finish the drain in time"),
        };
        let n = |k: &str| data.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(Some(Drained {
            drained: n("drained"),
            closed: n("closed"),
            websockets: n("websockets"),
        }))
    }

    /// Removes `spec` and its listener.
    pub async fn unregister(&self, spec: &ServiceSpec) -> anyhow::Result<()> {
        self.call(Request::Unregister {
            name: spec.name.clone(),
            tag: spec.tag.clone(),
        })
        .await
        .map(|_| ())
    }
}

/// `{"address", "port", "callback_url"}` of a Register answer.
pub fn parse_registration(data: &serde_json::Value, default_port: u16) -> Option<Registration> {
    let ip = data.get("address")?.as_str()?;
    let port = data
        .get("port")
        .and_then(|p| p.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(default_port);
    let callback_url = data
        .get("callback_url")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    Some(Registration {
        address: format!("{ip}:{port}"),
        callback_url,
    })
}

/// The instances of a Services answer; entries that do not parse are skipped.
pub fn parse_services(data: &serde_json::Value) -> Vec<KnownService> {
    let Some(list) = data.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|s| {
            Some(KnownService {
                name: s.get("name")?.as_str()?.to_string(),
                tag: s.get("tag").and_then(|t| t.as_str()).map(str::to_string),
                port: u16::try_from(s.get("port")?.as_u64()?).ok()?,
                place: Where::parse(s.get("where").and_then(|w| w.as_str()).unwrap_or("")),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_daemon_answers() {
        let r = parse_registration(
            &json!({"name": "api", "tag": null, "address": "100.64.0.70", "port": 8080,
                    "hostname": "api.ovl.internal", "callback_url": "http://relay:30001"}),
            80,
        );
        assert_eq!(
            r,
            Some(Registration {
                address: "100.64.0.70:8080".into(),
                callback_url: Some("http://relay:30001".into()),
            })
        );
        let r = parse_registration(&json!({"address": "100.64.0.71", "callback_url": ""}), 80);
        assert_eq!(
            r.map(|r| (r.address, r.callback_url)),
            Some(("100.64.0.71:80".into(), None))
        );
        assert_eq!(parse_registration(&json!({"port": 1}), 80), None);
        let s = parse_services(&json!([
            {"name": "db", "tag": null, "node": null, "where": "remote", "address": "100.64.0.5", "port": 5432},
            {"name": "api", "tag": "v2", "node": "laptop", "where": "local", "address": "100.64.0.70", "port": 8080},
            {"name": "bad", "port": 99999},
            "junk"
        ]));
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].place, Where::Remote);
        assert_eq!(s[1].tag.as_deref(), Some("v2"));
        assert!(parse_services(&json!({"not": "a list"})).is_empty());
    }
}

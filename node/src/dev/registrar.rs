//! The session's side of the contract with the node daemon (`crate::daemon::api`): register a
//! service's overlay address and listener, point the listener at a new local port or hold
//! connections during a restart, unregister.

use crate::daemon::api;
use overlay_core::api::daemon::{
    DaemonRequest, Drain, DrainReport, Register, Services, Status, Target, Unregister,
};
use overlay_core::api::Request;
use overlay_core::devconfig::env::KnownService;
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

/// What the daemon assigned to a service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registration {
    /// `overlay-ip:port`; empty with `--local`.
    pub address: String,
    /// The callback URL, if the relay offers one.
    pub callback_url: Option<String>,
}

impl Registrar {
    /// Asks the daemon, waiting up to `wait`; `None` with `--local`.
    async fn call<R: Request<Wire = DaemonRequest>>(
        &self,
        request: R,
        wait: Duration,
    ) -> anyhow::Result<Option<R::Reply>> {
        let Registrar::Daemon(path) = self else {
            return Ok(None);
        };
        let reply = api::endpoint(path).call_within(request, wait).await?;
        Ok(Some(reply))
    }

    /// The overlay's domain (and checks that the daemon answers at all).
    pub async fn domain(&self) -> anyhow::Result<String> {
        let status = self.call(Status {}, CALL_TIMEOUT).await?;
        Ok(status.map_or_else(|| DEFAULT_DOMAIN.into(), |s| s.domain))
    }

    /// Every service instance the node knows, for `SERVICE_*_ADDRESS`.
    pub async fn services(&self) -> anyhow::Result<Vec<KnownService>> {
        let list = self.call(Services {}, CALL_TIMEOUT).await?;
        Ok(list
            .unwrap_or_default()
            .into_iter()
            // A name found on demand has no port to give a service.
            .filter_map(|s| {
                Some(KnownService {
                    port: s.port?,
                    name: s.name,
                    tag: s.tag,
                    place: s.where_,
                })
            })
            .collect())
    }

    /// Registers `spec` with a listener forwarding to `127.0.0.1:local_port`.
    pub async fn register(
        &self,
        spec: &ServiceSpec,
        local_port: u16,
    ) -> anyhow::Result<Registration> {
        let request = Register {
            name: spec.name.clone(),
            tag: spec.tag.clone(),
            port: spec.port,
            target: Some(local_port),
            // Callers are held until the process is healthy and the supervisor says so.
            hold: true,
        };
        let registered = self.call(request, CALL_TIMEOUT).await.map_err(|e| {
            anyhow::anyhow!(
                "the overlay daemon refused to register {}: {e}",
                spec.label()
            )
        })?;
        // No overlay address with `--local`: OVERLAY_ADDRESS follows the local port.
        Ok(
            registered.map_or_else(Registration::default, |r| Registration {
                address: format!("{}:{}", r.address, r.port),
                callback_url: r.callback_url.filter(|u| !u.is_empty()),
            }),
        )
    }

    /// Points the listener of `spec` at `target`, or holds new connections (`None`).
    pub async fn target(&self, spec: &ServiceSpec, target: Option<u16>) -> anyhow::Result<()> {
        let request = Target {
            name: spec.name.clone(),
            tag: spec.tag.clone(),
            target,
        };
        self.call(request, CALL_TIMEOUT).await.map(|_| ())
    }

    /// Lets the old process's connections (to `old_port`) finish for up to `spec.drain`, then
    /// closes them; `None` with `--local` (no listener).
    pub async fn drain(
        &self,
        spec: &ServiceSpec,
        old_port: u16,
    ) -> anyhow::Result<Option<DrainReport>> {
        let request = Drain {
            name: spec.name.clone(),
            tag: spec.tag.clone(),
            port: old_port,
            timeout_ms: u64::try_from(spec.drain.as_millis()).unwrap_or(u64::MAX),
        };
        // The answer comes after the drain: allow for it on top of the usual wait.
        self.call(request, CALL_TIMEOUT + spec.drain).await
    }

    /// Removes `spec` and its listener.
    pub async fn unregister(&self, spec: &ServiceSpec) -> anyhow::Result<()> {
        let request = Unregister {
            name: spec.name.clone(),
            tag: spec.tag.clone(),
        };
        self.call(request, CALL_TIMEOUT).await.map(|_| ())
    }
}

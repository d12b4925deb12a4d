//! `overlay intercept` on the daemon's side: checks the header, asks the relay over the control
//! channel (which checks the service's front and this node's instance, in that order), and
//! remembers this node's intercepts so that `overlay down` ends them at once (the relay also
//! ends them when the node goes silent).

use super::relaylink::RelayLink;
use overlay_core::api::daemon::InterceptStopped;
use overlay_core::intercept::{HeaderMatch, Intercept};
use overlay_core::transport::control::{self, ControlRequest, InterceptPage, InterceptStarted};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

/// How long stopping the intercepts at shutdown may take.
const STOP_AT_SHUTDOWN: Duration = Duration::from_secs(2);
/// Pages of the relay's list read at most (the relay holds at most 1,024 intercepts).
const MAX_PAGES: usize = 1100;

/// The intercepts this node started (by service).
#[derive(Default)]
pub struct Mine(Mutex<BTreeSet<String>>);

impl Mine {
    fn set(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Asks the relay and reads its reply's data as `T`.
async fn ask<T: DeserializeOwned>(link: &RelayLink, request: ControlRequest) -> anyhow::Result<T> {
    let data = link.request(request).await?;
    serde_json::from_value(data)
        .map_err(|e| anyhow::anyhow!("the relay's reply about intercepts was not understood: {e}"))
}

/// Starts this node's intercept of `service`.
pub async fn start(
    link: &RelayLink,
    mine: &Mine,
    service: &str,
    header: Option<&str>,
) -> anyhow::Result<InterceptStarted> {
    let header = header
        .map(HeaderMatch::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let request = ControlRequest::Intercept {
        service: service.to_string(),
        header,
    };
    let started: InterceptStarted = ask(link, request).await?;
    mine.set().insert(started.intercept.service.clone());
    Ok(started)
}

/// Ends this node's intercept of `service`.
pub async fn stop(
    link: &RelayLink,
    mine: &Mine,
    service: &str,
) -> anyhow::Result<InterceptStopped> {
    let request = ControlRequest::InterceptStop {
        service: service.to_string(),
    };
    let reply: control::InterceptStopped = ask(link, request).await?;
    mine.set().remove(service);
    Ok(InterceptStopped {
        service: service.to_string(),
        stopped: reply.stopped,
    })
}

/// Every node's intercepts, read page by page.
pub async fn list(link: &RelayLink) -> anyhow::Result<Vec<Intercept>> {
    let mut all = Vec::new();
    for _ in 0..MAX_PAGES {
        let skip = u32::try_from(all.len()).unwrap_or(u32::MAX);
        let page: InterceptPage = ask(link, ControlRequest::Intercepts { skip }).await?;
        let got = page.intercepts.len();
        all.extend(page.intercepts);
        if got == 0 || all.len() >= page.total as usize {
            break;
        }
    }
    Ok(all)
}

/// Ends this node's intercepts (at shutdown), within [`STOP_AT_SHUTDOWN`].
pub async fn stop_all(link: &RelayLink, mine: &Mine) {
    let services: Vec<String> = mine.set().iter().cloned().collect();
    if services.is_empty() {
        return;
    }
    // One round trip each, one after the other: a node holds few intercepts.
    let all = async {
        for s in &services {
            match stop(link, mine, s).await {
                Ok(_) => tracing::info!(service = %s, "intercept stopped"),
                Err(e) => {
                    tracing::warn!(service = %s, "intercept not stopped ({e:#}); the relay ends it when this node has been silent for 10 s")
                }
            }
        }
    };
    if tokio::time::timeout(STOP_AT_SHUTDOWN, all).await.is_err() {
        tracing::warn!("the relay did not confirm the end of the intercepts in time; it ends them when this node has been silent for 10 s");
    }
}

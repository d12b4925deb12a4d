//! Resolves names for remote names on demand, off the hub's thread, with the relay's own
//! resolver (the remote environment's DNS, search domains included).

use crate::wake::Wake;
use overlay_core::relay::LookupRequest;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Resolutions running at once; more are answered "busy" right away.
const MAX_RESOLVING: usize = 64;
/// How long one resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of a lookup, for `Hub::lookup_done`.
pub type LookupResult = (u64, Result<(), String>);

/// Spawns resolutions and hands results back to the hub thread.
pub struct Resolver {
    rt: tokio::runtime::Handle,
    tx: SyncSender<LookupResult>,
    wake: Arc<Wake>,
    permits: Arc<Semaphore>,
}

impl Resolver {
    /// A resolver whose results arrive on the returned receiver, with `wake` woken.
    pub fn new(rt: tokio::runtime::Handle, wake: Arc<Wake>) -> (Resolver, Receiver<LookupResult>) {
        let (tx, rx) = sync_channel(MAX_RESOLVING * 2);
        (
            Resolver {
                rt,
                tx,
                wake,
                permits: Arc::new(Semaphore::new(MAX_RESOLVING)),
            },
            rx,
        )
    }

    /// Starts resolving `req.name`.
    pub fn resolve(&self, req: LookupRequest) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let _ = self.tx.try_send((
                req.token,
                Err("the relay is resolving too many names".into()),
            ));
            self.wake.wake();
            return;
        };
        let tx = self.tx.clone();
        let wake = self.wake.clone();
        self.rt.spawn(async move {
            let name = req.name.clone();
            let r = tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((name.as_str(), 80)),
            )
            .await;
            let result = match r {
                Ok(Ok(mut addrs)) => match addrs.next() {
                    Some(_) => Ok(()),
                    None => Err("no address".to_string()),
                },
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the lookup timed out".to_string()),
            };
            tracing::debug!(%name, ?result, "on-demand lookup");
            let _ = tx.try_send((req.token, result));
            wake.wake();
            drop(permit);
        });
    }
}

//! The admin socket (`<state>/admin.sock`, mode 0600, answering only the relay's user and
//! root): `overlay_core::api::admin` over `overlay_sys::local_api`. Each request goes to the
//! hub thread through a channel, with a wake-up (it sleeps in poll(2)); the `overlay-relay`
//! subcommands and the metrics endpoint are its clients.

use overlay_core::api::admin::AdminRequest;
use overlay_core::api::{Answer, Request};
use overlay_sys::local_api::{Access, Endpoint, Handler, Listener};
use overlay_sys::wake::Wake;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A request with the channel its answer goes back on.
pub type AdminCall = (AdminRequest, oneshot::Sender<Answer>);

/// The relay's admin socket at `path`, as its clients' errors name it.
pub fn endpoint(path: &Path) -> Endpoint<'_> {
    Endpoint {
        path,
        server: "the relay",
        serves: "the relay's user and root",
        start: "is `overlay-relay serve` running with the same --state?",
    }
}

/// Creates the admin socket at `path`.
pub fn bind(path: &Path) -> anyhow::Result<Listener> {
    Ok(Listener::bind(path, Access::private(None))?)
}

/// The way into the hub thread for admin requests.
#[derive(Clone)]
pub struct HubCalls {
    tx: Sender<AdminCall>,
    wake: Arc<Wake>,
}

impl HubCalls {
    /// Requests go through `tx`; `wake` wakes the hub thread for each.
    pub fn new(tx: Sender<AdminCall>, wake: Arc<Wake>) -> Self {
        HubCalls { tx, wake }
    }

    /// Hands `request` to the hub thread and waits for its answer.
    async fn ask(&self, request: AdminRequest) -> Answer {
        let shutting_down = || Answer::Error {
            message: "the relay is shutting down".into(),
        };
        let (tx, rx) = oneshot::channel();
        if self.tx.send((request, tx)).is_err() {
            return shutting_down();
        }
        // The hub thread sleeps in poll(2) between datagrams: wake it for this request.
        self.wake.wake();
        rx.await.unwrap_or_else(|_| shutting_down())
    }

    /// A typed request from inside the relay (the metrics endpoint).
    pub async fn call<R: Request<Wire = AdminRequest>>(
        &self,
        request: R,
    ) -> Result<R::Reply, String> {
        match self.ask(request.into_wire()).await {
            Answer::Ok { data } => serde_json::from_value(data).map_err(|e| e.to_string()),
            Answer::Error { message } | Answer::Denied { message } => Err(message),
        }
    }
}

impl Handler for HubCalls {
    type Request = AdminRequest;

    async fn handle(&self, request: AdminRequest) -> Answer {
        self.ask(request).await
    }
}

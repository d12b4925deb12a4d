//! What the session and a service task share: the commands a task takes, its state as
//! `overlay ps` and `overlay restart` see it, and the handle the session holds on it.

use super::output::Sink;
use super::process::Groups;
use super::registrar::Registrar;
use overlay_core::devconfig::env::KnownService;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};

/// Commands a service task queues at most (more wait for room).
pub const COMMAND_QUEUE: usize = 16;

/// The answer to start, stop and restart: what happened, or why it did not.
pub type Reply = oneshot::Sender<Result<String, String>>;

/// What a service task is asked to do.
#[derive(Debug)]
pub enum Cmd {
    /// Start it if it is not running.
    Start(Reply),
    /// Stop it and remove its registration.
    Stop(Reply),
    /// Build, then replace the running process.
    Restart(Reply),
    /// A watched file changed.
    Changed(String),
    /// Stop everything and end the task.
    Shutdown(oneshot::Sender<()>),
}

/// What the session knows about a service, for `overlay restart` and friends.
pub use overlay_core::api::session::ServiceState;

/// What every service task shares.
pub struct Shared {
    /// The config's directory: working directory of every command.
    pub dir: PathBuf,
    /// `.env` beside the config.
    pub dotenv: Vec<(String, String)>,
    /// The overlay domain.
    pub domain: String,
    /// Services known when the session started.
    pub known: Vec<KnownService>,
    /// Where registrations go.
    pub registrar: Registrar,
    /// Where output goes.
    pub sink: Sink,
    /// `HOME`, `USER`, `LOGNAME` of the user the services run as.
    pub user_env: Vec<(String, String)>,
    /// The session's process groups.
    pub groups: Groups,
    /// Turns true when the session stops.
    pub stop: watch::Receiver<bool>,
}

/// A handle on a service task.
#[derive(Clone, Debug)]
pub struct Handle {
    /// The service's key.
    pub key: String,
    /// Queue of commands.
    pub tx: mpsc::Sender<Cmd>,
    /// Its current state.
    pub state: Arc<Mutex<ServiceState>>,
}

impl Handle {
    /// Sends a start/stop/restart and waits for the answer.
    pub async fn ask(&self, make: impl FnOnce(Reply) -> Cmd) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(make(tx)).await.is_err() {
            return Err(format!("{} is shutting down", self.key));
        }
        rx.await
            .unwrap_or_else(|_| Err(format!("{} is shutting down", self.key)))
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> ServiceState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

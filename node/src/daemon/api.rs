//! The daemon's local API socket: `overlay_core::api::daemon` over `overlay_sys::local_api`.
//!
//! The socket is made mode 0600 in the run directory and owned by the user who joined; every
//! connection's peer credentials are checked as well, so only root and that user get an
//! answer (docs/security.md). [`call`] is how the CLI and `overlay dev` reach it.

use crate::paths;
use overlay_core::api::daemon::DaemonRequest;
use overlay_core::api::Request;
use overlay_sys::local_api::{Access, ApiError, Endpoint, Listener};
use std::path::Path;

/// The daemon's socket at `path`, as its clients' errors name it.
pub fn endpoint(path: &Path) -> Endpoint<'_> {
    Endpoint {
        path,
        server: "the overlay daemon",
        serves: "root and the user who joined",
        start: "start it with `sudo overlay up`",
    }
}

/// Asks this node's daemon (the socket in `OVERLAY_RUN_DIR`).
pub async fn call<R: Request<Wire = DaemonRequest>>(request: R) -> Result<R::Reply, ApiError> {
    endpoint(&paths::control_socket()).call(request).await
}

/// Creates the socket at `path` for root and `owner` (the user who joined).
pub fn bind(path: &Path, owner: Option<u32>) -> anyhow::Result<Listener> {
    if let Some(dir) = path.parent() {
        overlay_sys::statefile::ensure_dir(dir, 0o755)?;
    }
    Ok(Listener::bind(path, Access::private(owner))?)
}

//! Where the node keeps its files: `OVERLAY_STATE_DIR` and `OVERLAY_RUN_DIR`.

use std::path::PathBuf;

/// The state directory (keys, settings), default `/var/lib/overlay`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("OVERLAY_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/overlay"))
}

/// The runtime directory (control socket), default `/run/overlay`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("OVERLAY_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/overlay"))
}

/// The daemon's control socket.
pub fn control_socket() -> PathBuf {
    run_dir().join("overlay.sock")
}

/// The daemon's pcap socket (`overlay capture`).
pub fn capture_socket() -> PathBuf {
    run_dir().join("capture.sock")
}

//! Starting and stopping the daemon: `overlay up`, `overlay down`, `overlay leave`.

use crate::daemon::api;
use crate::paths;
use crate::settings::NodeFiles;
use overlay_core::api::daemon::{Leave, LinkState, Shutdown, Status};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Fails with a plain sentence unless running as root.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("this needs root to manage the network device: run `sudo {what}`");
    }
    Ok(())
}

/// Whether a daemon answers on the control socket.
pub async fn daemon_running() -> bool {
    api::call(Status {}).await.is_ok()
}

/// Starts `overlay daemon` in the background and waits until its tunnel has a handshake.
pub async fn start_daemon_and_wait() -> anyhow::Result<()> {
    let files = NodeFiles::new(&paths::state_dir());
    // The daemon refuses too; saying it here gives the sentence instead of "see the log".
    if let Ok(settings) = files.load() {
        let interface = std::env::var("OVERLAY_INTERFACE").unwrap_or_else(|_| "ovl0".into());
        crate::daemon::device::refuse_route_conflicts(&interface, settings.network).await?;
    }
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(files.daemon_log())
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", files.daemon_log().display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("daemon")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from our terminal session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!(
                "the daemon exited ({status}); see {} for why",
                files.daemon_log().display()
            );
        }
        if let Ok(s) = api::call(Status {}).await {
            if s.state == LinkState::Connected {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!(
        "the tunnel did not come up within 10 s; the daemon keeps trying (see `overlay status` and {})",
        files.daemon_log().display()
    )
}

/// `overlay up`.
pub async fn up() -> anyhow::Result<()> {
    require_root("overlay up")?;
    NodeFiles::new(&paths::state_dir()).load()?;
    if daemon_running().await {
        println!("overlay is already up");
        return Ok(());
    }
    start_daemon_and_wait().await?;
    println!("overlay is up");
    Ok(())
}

/// Waits until the control socket is gone (the daemon has cleaned up and exited).
async fn wait_stopped() -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !paths::control_socket().exists() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the daemon did not stop within 10 s")
}

/// `overlay down`.
pub async fn down() -> anyhow::Result<()> {
    if !daemon_running().await {
        println!("overlay is already down");
        return Ok(());
    }
    api::call(Shutdown {}).await?;
    wait_stopped().await?;
    println!("overlay is down");
    Ok(())
}

/// `overlay leave`: deregister through the tunnel, stop, remove the node's state.
pub async fn leave() -> anyhow::Result<()> {
    require_root("overlay leave")?;
    let files = NodeFiles::new(&paths::state_dir());
    if !files.joined() {
        anyhow::bail!("this machine has not joined an overlay");
    }
    if !daemon_running().await {
        anyhow::bail!("the daemon is not running, so the relay cannot be told; run `sudo overlay up` first, then leave");
    }
    api::call(Leave {}).await?;
    wait_stopped().await?;
    files.remove()?;
    println!("left the overlay; this machine's node state is removed");
    Ok(())
}

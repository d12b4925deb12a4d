//! Who the services run as, and where that user's `overlay dev` files live.
//!
//! `overlay dev` started through sudo drops to `SUDO_UID`/`SUDO_GID` for good before it reads
//! the config, so services, log files and the session socket all belong to the developer.

use std::ffi::CStr;
use std::path::PathBuf;

/// The user the session belongs to.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
    /// Login name, if the password database knows it.
    pub name: Option<String>,
    /// Home directory, if known.
    pub home: Option<PathBuf>,
}

impl Identity {
    /// The user who invoked the command: `SUDO_UID` when running as root through sudo,
    /// else the effective user.
    pub fn invoking() -> Identity {
        // SAFETY: geteuid/getegid have no preconditions.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let sudo = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
        let uid = match (euid, sudo("SUDO_UID")) {
            (0, Some(u)) => u,
            _ => euid,
        };
        let pw = passwd(uid);
        let gid = match (euid, sudo("SUDO_GID")) {
            (0, Some(g)) if uid != 0 => g,
            _ if uid != euid => pw.as_ref().map(|p| p.1).unwrap_or(egid),
            _ => egid,
        };
        let (name, home) = match pw {
            Some((name, _, home)) => (Some(name), Some(home)),
            None => (None, std::env::var_os("HOME").map(PathBuf::from)),
        };
        Identity {
            uid,
            gid,
            name,
            home,
        }
    }

    /// Whether this process would have to change user to be `self`.
    pub fn needs_drop(&self) -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() != self.uid }
    }

    /// Switches the whole process to this user (supplementary groups, gid, uid), for good.
    pub fn become_user(&self) -> anyhow::Result<()> {
        if !self.needs_drop() {
            return Ok(());
        }
        // SAFETY: plain libc calls on integers and a valid C string; results are checked.
        unsafe {
            let groups_ok = match &self.name {
                Some(n) => {
                    let c = std::ffi::CString::new(n.as_bytes())?;
                    libc::initgroups(c.as_ptr(), self.gid) == 0
                }
                None => libc::setgroups(1, &self.gid) == 0,
            };
            if !groups_ok || libc::setgid(self.gid) != 0 || libc::setuid(self.uid) != 0 {
                anyhow::bail!(
                    "cannot switch to user {} (uid {}): {}; run overlay dev as that user instead",
                    self.name.as_deref().unwrap_or("?"),
                    self.uid,
                    std::io::Error::last_os_error()
                );
            }
            if libc::getuid() != self.uid || (self.uid != 0 && libc::setuid(0) == 0) {
                anyhow::bail!("dropping root privileges did not stick; refusing to run services");
            }
        }
        Ok(())
    }

    /// Variables that must describe this user in the services' environment.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if let Some(h) = &self.home {
            v.push(("HOME".into(), h.to_string_lossy().into_owned()));
        }
        if let Some(n) = &self.name {
            v.push(("USER".into(), n.clone()));
            v.push(("LOGNAME".into(), n.clone()));
        }
        v
    }

    /// Where per-service log files go: `$OVERLAY_STATE_DIR/logs`, else
    /// `$XDG_STATE_HOME/overlay/logs`, else `~/.local/state/overlay/logs`.
    pub fn logs_dir(&self) -> PathBuf {
        if let Some(d) = std::env::var_os("OVERLAY_STATE_DIR") {
            return PathBuf::from(d).join("logs");
        }
        // XDG_STATE_HOME is only trusted when it is ours (sudo may pass root's along).
        if !self.needs_drop() {
            if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
                return PathBuf::from(d).join("overlay").join("logs");
            }
        }
        let home = self.home.clone().unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".local/state/overlay/logs")
    }

    /// Where sessions put their control sockets: `$OVERLAY_RUN_DIR/dev-<uid>`, else
    /// `$XDG_RUNTIME_DIR/overlay-dev`, else `/tmp/overlay-dev-<uid>`.
    pub fn session_dir(&self) -> PathBuf {
        if let Some(d) = std::env::var_os("OVERLAY_RUN_DIR") {
            return PathBuf::from(d).join(format!("dev-{}", self.uid));
        }
        if !self.needs_drop() {
            if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
                return PathBuf::from(d).join("overlay-dev");
            }
        }
        PathBuf::from(format!("/tmp/overlay-dev-{}", self.uid))
    }

    /// Every directory a session of this user may be in, the one new sessions use first (a
    /// client started through sudo does not see the user's `XDG_RUNTIME_DIR`).
    pub fn session_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.session_dir()];
        if std::env::var_os("OVERLAY_RUN_DIR").is_none() {
            for d in [
                PathBuf::from(format!("/run/user/{}/overlay-dev", self.uid)),
                PathBuf::from(format!("/tmp/overlay-dev-{}", self.uid)),
            ] {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
        dirs
    }
}

/// (name, gid, home) of `uid` from the password database.
fn passwd(uid: u32) -> Option<(String, u32, PathBuf)> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid out-parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: buffers are valid for the given lengths; `out` is set to `&pw` or NULL.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() || pw.pw_name.is_null() || pw.pw_dir.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so the strings are NUL-terminated inside `buf`.
    let (name, dir) = unsafe { (CStr::from_ptr(pw.pw_name), CStr::from_ptr(pw.pw_dir)) };
    Some((
        name.to_string_lossy().into_owned(),
        pw.pw_gid,
        PathBuf::from(dir.to_string_lossy().into_owned()),
    ))
}

/// Creates `dir` (and parents) private to the current user, and refuses one that another user
/// owns or others can write (a shared `/tmp` is not to be trusted).
pub fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| anyhow::anyhow!("cannot protect {}: {e}", dir.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => anyhow::bail!("cannot create {}: {e}", dir.display()),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        anyhow::bail!(
            "{} is not a private directory of this user; remove it and try again",
            dir.display()
        );
    }
    Ok(())
}

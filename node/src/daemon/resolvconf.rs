//! OS resolver integration: point the system at the node's DNS server, and put it back exactly.
//!
//! With systemd-resolved managing `/etc/resolv.conf`, the overlay link gets our server and the
//! domain as a routing and search domain (through `resolvectl`), and nothing is written. Otherwise
//! `/etc/resolv.conf` is rewritten: the original bytes are saved first (atomically, in the state
//! directory), and restored byte for byte on `overlay down`, on SIGTERM, and at the next start
//! after a crash. Our server is the only one listed: it forwards other names to the original
//! servers itself (see [`render_resolv_conf`] for why they are not listed behind it).

use overlay_sys::statefile;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// How the system resolver was changed, so it can be undone.
#[derive(Debug)]
pub enum ResolverChange {
    /// `/etc/resolv.conf` was rewritten; the original is in `backup`.
    File {
        /// The file changed.
        target: PathBuf,
        /// Where the original bytes are kept until restored.
        backup: PathBuf,
    },
    /// systemd-resolved got per-link settings.
    Resolved {
        /// The link.
        interface: String,
    },
}

/// Upstream servers and search domains of the original configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `nameserver` lines.
    pub servers: Vec<IpAddr>,
    /// `search` domains.
    pub search: Vec<String>,
}

/// Parses the parts of resolv.conf we keep.
pub fn parse_resolv_conf(text: &str, ours: IpAddr) -> Upstream {
    let mut up = Upstream::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
                    if ip != ours && !up.servers.contains(&ip) {
                        up.servers.push(ip);
                    }
                }
            }
            Some("search") | Some("domain") => up.search.extend(words.map(String::from)),
            _ => {}
        }
    }
    up
}

/// The resolv.conf we write: our server alone. The original servers are not listed behind it:
/// our server forwards to them with a deadline and skips a dead one, while glibc, given a
/// SERVFAIL, would ask each listed server in turn and wait out its timeout on every lookup
/// (`getent hosts` of an unknown name took 8 s with a dead upstream listed).
pub fn render_resolv_conf(ours: IpAddr, domain: &str, original: &Upstream) -> String {
    let mut s = String::from(
        "# Written by overlay. The original is restored by `overlay down`; do not edit while overlay is up.\n",
    );
    s.push_str(&format!("nameserver {ours}\n"));
    if !original.servers.is_empty() {
        let list: Vec<String> = original.servers.iter().map(IpAddr::to_string).collect();
        s.push_str(&format!(
            "# overlay forwards other names to: {}\n",
            list.join(" ")
        ));
    }
    let mut search = vec![domain.to_string()];
    search.extend(
        original
            .search
            .iter()
            .filter(|d| d.as_str() != domain)
            .cloned(),
    );
    s.push_str(&format!("search {}\n", search.join(" ")));
    // Ours answers within a second, whatever the upstreams do.
    s.push_str("options timeout:1 attempts:2\n");
    s
}

fn resolved_manages(target: &Path) -> bool {
    let link = std::fs::read_link(target).ok();
    let points_to_resolved = link
        .map(|l| l.to_string_lossy().contains("systemd/resolve"))
        .unwrap_or(false);
    points_to_resolved && Path::new("/run/systemd/resolve").is_dir() && which("resolvectl")
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// Writes `bytes` to `target`: atomically by rename where possible; in place where the file is
/// a bind mount (as under `ip netns exec`), where rename cannot replace it.
fn replace(target: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    match statefile::write_atomic(target, bytes, 0o644) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.io().raw_os_error(), Some(libc::EBUSY) | Some(libc::EXDEV)) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(target)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", target.display()))?;
            f.write_all(bytes)?;
            f.sync_all()?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Restores a resolv.conf left changed by a daemon that was killed; returns whether it did.
pub fn recover(state_dir: &Path, target: &Path) -> anyhow::Result<bool> {
    let backup = state_dir.join("resolv.conf.orig");
    let Some(orig) = statefile::read_optional(&backup)? else {
        return Ok(false);
    };
    replace(target, &orig)?;
    std::fs::remove_file(&backup)?;
    tracing::warn!(
        "restored {} left changed by an earlier run",
        target.display()
    );
    Ok(true)
}

/// Points the system resolver at `ours` for `domain`; returns the change and the upstreams.
pub fn apply(
    state_dir: &Path,
    target: &Path,
    ours: IpAddr,
    domain: &str,
    interface: &str,
) -> anyhow::Result<(ResolverChange, Upstream)> {
    recover(state_dir, target)?;
    let original = std::fs::read(target).unwrap_or_default();
    let upstream = parse_resolv_conf(&String::from_utf8_lossy(&original), ours);
    if resolved_manages(target) {
        let run = |args: &[&str]| -> anyhow::Result<()> {
            let st = std::process::Command::new("resolvectl")
                .args(args)
                .status()?;
            anyhow::ensure!(st.success(), "resolvectl {} failed", args.join(" "));
            Ok(())
        };
        run(&["dns", interface, &ours.to_string()])?;
        run(&["domain", interface, domain, &format!("~{domain}")])?;
        tracing::info!(interface, "systemd-resolved routes {domain} to {ours}");
        return Ok((
            ResolverChange::Resolved {
                interface: interface.to_string(),
            },
            upstream,
        ));
    }
    let backup = state_dir.join("resolv.conf.orig");
    statefile::ensure_dir(state_dir, 0o700)?;
    // The original goes to disk before the file is touched: a crash at any point is recoverable.
    statefile::write_atomic(&backup, &original, 0o600)?;
    replace(
        target,
        render_resolv_conf(ours, domain, &upstream).as_bytes(),
    )?;
    tracing::info!(file = %target.display(), "system resolver points at {ours} for {domain}");
    Ok((
        ResolverChange::File {
            target: target.to_path_buf(),
            backup,
        },
        upstream,
    ))
}

/// Undoes [`apply`].
pub fn restore(change: &ResolverChange) -> anyhow::Result<()> {
    match change {
        ResolverChange::File { target, backup } => {
            let Some(orig) = statefile::read_optional(backup)? else {
                return Ok(());
            };
            replace(target, &orig)?;
            std::fs::remove_file(backup)?;
            tracing::info!(file = %target.display(), "system resolver restored");
        }
        ResolverChange::Resolved { interface } => {
            let _ = std::process::Command::new("resolvectl")
                .args(["revert", interface])
                .status();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(100, 100, 100, 100));

    #[test]
    fn keeps_the_original_servers_behind_ours() {
        let up = parse_resolv_conf(
            "# x\nnameserver 10.0.0.2\nnameserver 100.100.100.100\nsearch corp.example\n",
            OURS,
        );
        assert_eq!(up.servers, vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        let text = render_resolv_conf(OURS, "ovl.internal", &up);
        // Ours alone: glibc would wait on a dead original after each SERVFAIL of ours.
        assert!(text.contains("nameserver 100.100.100.100\n"));
        assert_eq!(text.matches("nameserver").count(), 1, "{text}");
        assert!(text.contains("search ovl.internal corp.example\n"));
    }

    #[test]
    fn restores_byte_for_byte_and_recovers_after_a_crash() {
        let dir = std::env::temp_dir().join(format!("ovl-resolv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("resolv.conf");
        let original = b"nameserver 10.0.0.2\n# odd   spacing kept\n\n".to_vec();
        std::fs::write(&target, &original).unwrap();
        let state = dir.join("state");
        let (change, _) = apply(&state, &target, OURS, "ovl.internal", "ovl0").unwrap();
        assert_ne!(std::fs::read(&target).unwrap(), original);
        restore(&change).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), original);
        // A crash: applied, never restored; the next start recovers first.
        let (_change, _) = apply(&state, &target, OURS, "ovl.internal", "ovl0").unwrap();
        assert!(recover(&state, &target).unwrap());
        assert_eq!(std::fs::read(&target).unwrap(), original);
        assert!(!recover(&state, &target).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

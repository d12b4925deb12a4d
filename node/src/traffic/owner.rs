//! Which local process opened a connection: its socket by the connection's two ends (one exact
//! lookup through sock_diag; `/proc/net/tcp` and `tcp6` where that fails), then the process
//! holding that socket's inode among its fds (`/proc/PID/fd/* -> socket:[INODE]`), then
//! `/proc/PID/comm`.
//!
//! Runs on a blocking thread, once per laptop-local connection, never on the data path.
//! Processes that owned sockets recently are looked at first, so a program making many calls
//! is found without a walk through every process. A caller that closed its socket before the
//! look gets no name (its record shows its address).

use overlay_core::devconfig::sockets::{connection_inode, socket_inode};
use overlay_core::traffic::capture::Process;
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Lookups running at once; a connection that finds them busy goes without a name (a burst of
/// connections must not turn into a burst of walks through `/proc`).
static RUNNING: AtomicUsize = AtomicUsize::new(0);
const MAX_RUNNING: usize = 2;

/// Looks the owner up on a blocking thread, unless enough lookups run already.
pub fn spawn_lookup(
    client: SocketAddrV4,
    server: SocketAddrV4,
) -> Option<tokio::task::JoinHandle<Option<Process>>> {
    if RUNNING.fetch_add(1, Ordering::AcqRel) >= MAX_RUNNING {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(tokio::task::spawn_blocking(move || {
        let p = lookup(client, server);
        RUNNING.fetch_sub(1, Ordering::AcqRel);
        p
    }))
}

/// Recently found owners, looked at first.
static RECENT: Mutex<VecDeque<u32>> = Mutex::new(VecDeque::new());
const RECENT_MAX: usize = 16;

/// The process whose socket is `client` connected to `server`, if it can be known.
pub fn lookup(client: SocketAddrV4, server: SocketAddrV4) -> Option<Process> {
    let inode = match overlay_sys::netlink::tcp_socket(client, server) {
        Ok(found) => found,
        Err(e) => {
            // Reading the tables walks every socket of the machine: only when sock_diag fails.
            tracing::debug!(%client, %server, error = %e, "sock_diag lookup failed; reading /proc/net/tcp*");
            ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|t| {
                let table = std::fs::read_to_string(t).ok()?;
                connection_inode(&table, client, server)
            })
        }
    };
    let Some((inode, _uid)) = inode else {
        tracing::debug!(%client, %server, "no socket of a local caller in /proc/net/tcp*");
        return None;
    };
    tracing::debug!(%client, %server, inode, "socket of a local caller");
    if inode == 0 {
        return None;
    }
    let recent: Vec<u32> = RECENT
        .lock()
        .map(|r| r.iter().copied().collect())
        .unwrap_or_default();
    let pid = recent
        .iter()
        .copied()
        .find(|pid| holds(*pid, inode))
        .or_else(|| {
            std::fs::read_dir("/proc")
                .ok()?
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| !recent.contains(pid))
                .find(|pid| holds(*pid, inode))
        })?;
    if let Ok(mut r) = RECENT.lock() {
        r.retain(|p| *p != pid);
        r.push_front(pid);
        r.truncate(RECENT_MAX);
    }
    let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    tracing::debug!(%client, pid, command = command.trim(), "a local caller's process");
    Some(Process {
        pid,
        command: command.trim().to_string(),
    })
}

/// Whether process `pid` has the socket `inode` open.
fn holds(pid: u32, inode: u64) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|l| socket_inode(l.to_str()?))
            == Some(inode)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_this_test_as_the_owner_of_its_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(server).unwrap();
        let std::net::SocketAddr::V4(client) = c.local_addr().unwrap() else {
            panic!("v4")
        };
        let std::net::SocketAddr::V4(server) = server else {
            panic!("v4")
        };
        let p = super::lookup(client, server).expect("found");
        assert_eq!(p.pid, std::process::id());
        assert!(!p.command.is_empty());
    }
}

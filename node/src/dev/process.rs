//! Processes of a session: each command runs as `sh -c` in its own process group, its output
//! read line by line into the session's [`Sink`]; groups are signalled as a whole.

use super::output::Sink;
use overlay_core::devconfig::logline::{LineSplitter, MAX_LINE};
use overlay_core::devconfig::sockets::{self, Listening};
use overlay_core::devconfig::{health, Health};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};

/// Lines of a failed build shown to the developer.
pub const BUILD_TAIL: usize = 20;

/// The process groups alive in this session, so that nothing outlives it.
#[derive(Clone, Debug, Default)]
pub struct Groups(Arc<Mutex<BTreeSet<i32>>>);

impl Groups {
    fn add(&self, pgid: i32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pgid);
    }

    fn remove(&self, pgid: i32) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pgid);
    }

    /// SIGKILLs every group still alive (second Ctrl-C, or the last step of a shutdown).
    pub fn kill_all(&self) {
        let all: Vec<i32> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        for g in all {
            signal_group(g, libc::SIGKILL);
        }
    }
}

/// What a command needs besides its text.
pub struct Launch<'a> {
    /// Working directory.
    pub dir: &'a Path,
    /// Variables added to the inherited environment.
    pub env: &'a BTreeMap<String, String>,
    /// Where its output goes.
    pub sink: &'a Sink,
    /// The service it belongs to.
    pub service: usize,
    /// Prefix of each output line (`""`, or `"[build] "`).
    pub prefix: &'static str,
    /// The session's groups.
    pub groups: &'a Groups,
}

/// A running process group.
pub struct Proc {
    /// The pid of `sh`, which is also the process group id.
    pub pgid: i32,
    /// Resolves when `sh` exits.
    pub exit: oneshot::Receiver<ExitStatus>,
    /// When it started.
    pub started: Instant,
    groups: Groups,
    done: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Nothing of a session survives it, even on an early return.
        if !self.done {
            signal_group(self.pgid, libc::SIGKILL);
            self.groups.remove(self.pgid);
        }
    }
}

/// Starts `sh -c command` in a new process group.
pub fn spawn(command: &str, l: &Launch<'_>) -> std::io::Result<Proc> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(l.dir)
        .envs(l.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd.spawn()?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    if pid <= 0 {
        return Err(std::io::Error::other(
            "the process exited before it had a pid",
        ));
    }
    l.groups.add(pid);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, l.sink.clone(), l.service, l.prefix, None));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, l.sink.clone(), l.service, l.prefix, None));
    }
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(status) = child.wait().await {
            let _ = tx.send(status);
        }
    });
    Ok(Proc {
        pgid: pid,
        exit: rx,
        started: Instant::now(),
        groups: l.groups.clone(),
        done: false,
    })
}

/// Copies a pipe into the sink line by line; lines are cut at [`MAX_LINE`]. Keeps the last
/// lines in `tail` when given.
async fn pump<R: AsyncRead + Unpin>(
    mut r: R,
    sink: Sink,
    service: usize,
    prefix: &'static str,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut split = LineSplitter::new(MAX_LINE);
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines = Vec::new();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        if n == 0 {
            lines.extend(split.finish());
        } else {
            split.push(&buf[..n], &mut lines);
        }
        for l in lines.drain(..) {
            if let Some(t) = &tail {
                let mut t = t.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == BUILD_TAIL {
                    t.pop_front();
                }
                t.push_back(l.clone());
            }
            sink.line(service, format!("{prefix}{l}")).await;
        }
        if n == 0 {
            return;
        }
    }
}

/// Sends `sig` to a whole process group.
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid > 0 {
        // SAFETY: kill has no memory preconditions; a negative pid names the group.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// Whether any process of the group is still there.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    if pgid <= 0 || unsafe { libc::kill(-pgid, 0) } != 0 {
        return false;
    }
    // kill(0) also succeeds while only zombies are left: orphans wait for whoever reaps them
    // (PID 1, which may do so seconds later, or never in a container). Zombies run nothing.
    !only_zombies(pgid)
}

/// Whether every process of group `pgid` is a zombie (from /proc; false if it cannot tell).
fn only_zombies(pgid: i32) -> bool {
    let members = members(pgid);
    !members.is_empty() && members.iter().all(|(_, state)| state == "Z")
}

/// The pids of group `pgid` and their states, from /proc.
fn members(pgid: i32) -> Vec<(i32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name in parentheses: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, _ppid, pgrp) = (f.next(), f.next(), f.next());
        if pgrp.and_then(|p| p.parse::<i32>().ok()) == Some(pgid) {
            out.push((pid, state.unwrap_or("").to_string()));
        }
    }
    out
}

/// The TCP ports processes of group `pgid` listen on: their socket fds matched against the
/// kernel's tables of their network namespace (empty when nothing can be read).
pub fn listening_ports(pgid: i32) -> BTreeSet<u16> {
    let mut inodes = BTreeSet::new();
    let mut netns_of = None;
    for (pid, state) in members(pgid) {
        if state == "Z" {
            continue;
        }
        netns_of.get_or_insert(pid);
        if let Ok(pid) = u32::try_from(pid) {
            inodes.extend(crate::traffic::owner::socket_inodes(pid));
        }
    }
    let Some(pid) = netns_of.filter(|_| !inodes.is_empty()) else {
        return BTreeSet::new();
    };
    let tables: Vec<String> = ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .collect();
    sockets::group_ports(&tables, &inodes)
}

/// How a process left.
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".into(),
    }
}

impl Proc {
    /// SIGTERM to the group, SIGKILL after `grace`; returns once the group is gone (or, for a
    /// process that ignores even SIGKILL, after a few more seconds).
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        signal_group(self.pgid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        let status = tokio::time::timeout(grace, &mut self.exit)
            .await
            .ok()
            .and_then(Result::ok);
        // The leader is gone; its children in the group get the rest of the grace period.
        while group_alive(self.pgid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = if group_alive(self.pgid) || status.is_none() {
            signal_group(self.pgid, libc::SIGKILL);
            let s = match status {
                Some(s) => Some(s),
                None => tokio::time::timeout(Duration::from_secs(3), &mut self.exit)
                    .await
                    .ok()
                    .and_then(Result::ok),
            };
            let end = Instant::now() + Duration::from_secs(3);
            while group_alive(self.pgid) && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            s
        } else {
            status
        };
        self.done = true;
        self.groups.remove(self.pgid);
        status
    }

    /// Marks the process as gone after its exit was observed; the group gets SIGKILL in case
    /// children of the crashed process are left.
    pub fn exited(mut self) {
        signal_group(self.pgid, libc::SIGKILL);
        self.done = true;
        self.groups.remove(self.pgid);
    }
}

/// Why a build did not succeed.
#[derive(Debug)]
pub struct BuildFailure {
    /// How it ended.
    pub why: String,
    /// Its last lines of output.
    pub tail: Vec<String>,
}

/// Runs a build command to completion (it is killed if the returned future is dropped, or when
/// `stop` turns true).
pub async fn build(
    command: &str,
    l: &Launch<'_>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), BuildFailure> {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(l.dir)
        .envs(l.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| BuildFailure {
        why: format!("cannot start it: {e}"),
        tail: Vec::new(),
    })?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    l.groups.add(pid);
    let (tx, exit) = oneshot::channel();
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(
            out,
            l.sink.clone(),
            l.service,
            l.prefix,
            Some(tail.clone()),
        )));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(
            err,
            l.sink.clone(),
            l.service,
            l.prefix,
            Some(tail.clone()),
        )));
    }
    tokio::spawn(async move {
        if let Ok(s) = child.wait().await {
            let _ = tx.send(s);
        }
    });
    let mut proc = Proc {
        pgid: pid,
        exit,
        started: Instant::now(),
        groups: l.groups.clone(),
        done: false,
    };
    let status = tokio::select! {
        s = &mut proc.exit => s.ok(),
        _ = stop.wait_for(|s| *s) => None,
    };
    let Some(status) = status else {
        proc.stop(Duration::from_secs(2)).await;
        return Err(BuildFailure {
            why: "it was interrupted".into(),
            tail: Vec::new(),
        });
    };
    proc.exited();
    for p in pumps {
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    if status.success() {
        return Ok(());
    }
    let tail = tail
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    Err(BuildFailure {
        why: describe(&status),
        tail,
    })
}

/// A free local port: bind 127.0.0.1:0, read the port, close.
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// How a readiness wait ended.
#[derive(Debug)]
pub enum Ready {
    /// The check passed.
    Healthy,
    /// The check did not pass in time.
    TimedOut,
    /// It listens nowhere: a worker (only when asked to tell).
    Worker,
    /// The process exited first.
    Exited(ExitStatus),
    /// The session is stopping.
    Stopping,
}

/// How often a starting process's listening sockets are looked at.
const SOCKET_LOOK: Duration = Duration::from_millis(100);

/// Polls `health` on `127.0.0.1:port` until it passes, the process exits or `timeout` passes.
/// Polls fast at first (a restart should cost milliseconds), then every 200 ms. With
/// `tell_workers`, a process whose group has no listening socket after
/// [`sockets::WORKER_AFTER`] is a [`Ready::Worker`].
pub async fn wait_ready(
    health: &Health,
    port: u16,
    timeout: Duration,
    tell_workers: bool,
    proc: &mut Proc,
    stop: &mut watch::Receiver<bool>,
) -> Ready {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut pause = Duration::from_millis(2);
    let mut looked = started;
    loop {
        let check = async {
            match health {
                Health::None => true,
                Health::Tcp => tcp_ok(port).await,
                Health::Http(path) => http_ok(port, path).await,
            }
        };
        tokio::select! {
            ok = check => if ok { return Ready::Healthy },
            s = &mut proc.exit => {
                return match s {
                    Ok(s) => Ready::Exited(s),
                    Err(_) => Ready::TimedOut,
                }
            }
            _ = stop.wait_for(|s| *s) => return Ready::Stopping,
        }
        let now = Instant::now();
        if now >= deadline {
            return Ready::TimedOut;
        }
        if tell_workers && now.duration_since(looked) >= SOCKET_LOOK {
            looked = now;
            // /proc reads off the runtime's threads.
            let pgid = proc.pgid;
            let ports = tokio::task::spawn_blocking(move || listening_ports(pgid))
                .await
                .unwrap_or_default();
            if sockets::is_worker(started.elapsed(), Listening::of(&ports, port)) {
                return Ready::Worker;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            s = &mut proc.exit => {
                return match s {
                    Ok(s) => Ready::Exited(s),
                    Err(_) => Ready::TimedOut,
                }
            }
            _ = stop.wait_for(|s| *s) => return Ready::Stopping,
        }
        pause = (pause * 2).min(Duration::from_millis(if tell_workers { 50 } else { 200 }));
    }
}

/// How long a check's connection waits for the service to close its side.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Connects to `$PORT`; the connection is then closed cleanly in the background: FIN first,
/// then whatever the service sent (a greeting) is read, so closing never resets it.
async fn tcp_ok(port: u16) -> bool {
    let conn = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await;
    let Ok(Ok(s)) = conn else { return false };
    tokio::spawn(close_cleanly(s));
    true
}

/// Half-closes, reads (and drops) until the service closes or [`CLOSE_WAIT`] passes, closes.
async fn close_cleanly(mut s: tokio::net::TcpStream) {
    let _ = s.shutdown().await;
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// `GET path` as HTTP/1.1 with `Connection: close`: reads the status line and the headers (up
/// to [`health::MAX_RESPONSE`]); the body is read and dropped in the background until the
/// service closes, so closing never resets it.
async fn http_ok(port: u16, path: &str) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(health::request(path, port).as_bytes())
            .await
            .ok()?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut closed = false;
        while got.len() < health::MAX_RESPONSE && !health::head_complete(&got) {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                closed = true;
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let code = health::status(&got).filter(|_| health::head_complete(&got))?;
        if !closed {
            tokio::spawn(close_cleanly(s));
        }
        Some(health::passes(code))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

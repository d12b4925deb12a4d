//! Processes of a session: each command runs as `sh -c` in its own process group, its output
//! read line by line into the session's [`Sink`]; groups are signalled as a whole.

use super::output::Sink;
use overlay_core::devconfig::logline::{LineSplitter, MAX_LINE};
use overlay_core::devconfig::Health;
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
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    let mut members = 0;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        // After the command name in parentheses: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, _ppid, pgrp) = (f.next(), f.next(), f.next());
        if pgrp.and_then(|p| p.parse::<i32>().ok()) != Some(pgid) {
            continue;
        }
        members += 1;
        if state != Some("Z") {
            return false;
        }
    }
    members > 0
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
    /// The process exited first.
    Exited(ExitStatus),
    /// The session is stopping.
    Stopping,
}

/// Polls `health` on `127.0.0.1:port` until it passes, the process exits or `timeout` passes.
/// Polls fast at first (a restart should cost milliseconds), then every 200 ms.
pub async fn wait_ready(
    health: &Health,
    port: u16,
    timeout: Duration,
    proc: &mut Proc,
    stop: &mut watch::Receiver<bool>,
) -> Ready {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
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
        if Instant::now() >= deadline {
            return Ready::TimedOut;
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
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

async fn tcp_ok(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(("127.0.0.1", port))
        )
        .await,
        Ok(Ok(_))
    )
}

async fn http_ok(port: u16, path: &str) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!(
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: overlay-dev\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = s.read(&mut buf[got..]).await.ok()?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let head = std::str::from_utf8(&buf[..got]).ok()?;
        let code: u16 = head
            .strip_prefix("HTTP/")?
            .split(' ')
            .nth(1)?
            .parse()
            .ok()?;
        Some(code < 500)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

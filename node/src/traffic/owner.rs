//! Which local process opened a connection: its socket by the connection's two ends (one exact
//! lookup through sock_diag; `/proc/net/tcp` and `tcp6` where that fails), then the process
//! holding that socket's inode among its fds (`/proc/PID/fd/* -> socket:[INODE]`), then
//! `/proc/PID/comm`.
//!
//! One thread does the lookups, never the data path, and takes every lookup waiting when it
//! starts a round: a process's fds are read once per round for all of them. A client that
//! opens a connection per request (curl in a loop, a pool without keep-alive) cost the node
//! 105 µs of CPU per connection when each lookup read the fds on its own thread (36% of the
//! throughput through a listener; docs/benchmarks.md). Processes that owned sockets recently
//! are looked at first, so a program making many calls is found without a walk through every
//! process. A caller that closed its socket before the look gets no name (its record shows its
//! address), and a connection that ended before its round is not looked up at all.

use overlay_core::devconfig::sockets::{connection_inode, socket_inode};
use overlay_core::traffic::capture::Process;
use overlay_sys::netlink::SockDiag;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Lookups waiting; past this a connection goes without a name (a burst of connections must
/// not grow the queue, or the walks through `/proc`, without bound).
const MAX_WAITING: usize = 256;

/// Who waits for a lookup: the answer is handed to it on the lookup thread, so that no task
/// waits per connection (with a connection per request that task, its timer and its wake-up
/// were a good part of what naming cost).
pub trait Answer: Send {
    /// Whether the answer is still wanted: a connection that ended wants none, and is not looked
    /// up (its socket is closed by then, so no lookup could find it).
    fn wanted(&self) -> bool;
    /// The process found, or `None`.
    fn answer(self: Box<Self>, process: Option<Process>);
}

/// A one-shot channel takes the answer as long as its receiver waits.
impl Answer for oneshot::Sender<Option<Process>> {
    fn wanted(&self) -> bool {
        !self.is_closed()
    }
    fn answer(self: Box<Self>, process: Option<Process>) {
        let _ = self.send(process);
    }
}

/// One connection's question.
struct Ask {
    client: SocketAddrV4,
    server: SocketAddrV4,
    answer: Box<dyn Answer>,
}

impl Ask {
    fn answer(self, process: Option<Process>) {
        self.answer.answer(process);
    }
}

/// The lookups waiting, and whether the thread that does them is running.
struct Queue {
    waiting: Vec<Ask>,
    running: bool,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    waiting: Vec::new(),
    running: false,
});

/// Asks for the process of the local caller `client` connected to `server`; the lookup
/// thread hands it to `answer`. False (and `answer` is dropped unanswered) when too many
/// lookups wait already.
pub fn ask(client: SocketAddrV4, server: SocketAddrV4, answer: Box<dyn Answer>) -> bool {
    let mut q = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
    if q.waiting.len() >= MAX_WAITING {
        return false;
    }
    q.waiting.push(Ask {
        client,
        server,
        answer,
    });
    if !q.running {
        q.running = true;
        tokio::task::spawn_blocking(run);
    }
    true
}

/// Least time from one round's start to the next's. A connection that comes when no round ran
/// for that long is looked up at once; while connections keep coming they gather for a few
/// milliseconds and a process's fds are read once for all of them (reading them took 30-45 µs
/// a round with h2load's 8 connections).
const ROUND_GAP: Duration = Duration::from_millis(5);

/// Marks the lookup thread gone if it ends by a panic (or no lookup would run again).
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            QUEUE.lock().unwrap_or_else(|e| e.into_inner()).running = false;
        }
    }
}

/// The lookup thread: rounds until nothing waits.
fn run() {
    let _running = Running;
    let mut diag = SockDiag::open()
        .map_err(|e| tracing::debug!(error = %e, "no sock_diag socket; reading /proc/net/tcp*"))
        .ok();
    let mut last: Option<Instant> = None;
    loop {
        if let Some(wait) = last.and_then(|l| ROUND_GAP.checked_sub(l.elapsed())) {
            std::thread::sleep(wait);
        }
        last = Some(Instant::now());
        let round = {
            let mut q = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
            if q.waiting.is_empty() {
                // Under the lock: an ask pushed after this starts a new thread.
                q.running = false;
                return;
            }
            std::mem::take(&mut q.waiting)
        };
        resolve(diag.as_mut(), round);
    }
}

/// Recently found owners, looked at first.
static RECENT: Mutex<VecDeque<u32>> = Mutex::new(VecDeque::new());
const RECENT_MAX: usize = 16;

/// Answers one round of lookups.
fn resolve(mut diag: Option<&mut SockDiag>, round: Vec<Ask>) {
    // The connections' sockets, by inode.
    let mut tables: Option<Vec<String>> = None;
    let mut want: HashMap<u64, Vec<Ask>> = HashMap::new();
    for ask in round.into_iter().filter(|a| a.answer.wanted()) {
        let found = match diag
            .as_deref_mut()
            .map(|d| d.tcp_socket(ask.client, ask.server))
        {
            Some(Ok(found)) => found,
            other => {
                if let Some(Err(e)) = other {
                    tracing::debug!(error = %e, "sock_diag lookup failed; reading /proc/net/tcp*");
                }
                // Reading the tables walks every socket of the machine: once per round.
                let tables = tables.get_or_insert_with(|| {
                    ["/proc/net/tcp", "/proc/net/tcp6"]
                        .iter()
                        .filter_map(|t| std::fs::read_to_string(t).ok())
                        .collect()
                });
                tables
                    .iter()
                    .find_map(|t| connection_inode(t, ask.client, ask.server))
            }
        };
        match found {
            Some((inode, _uid)) if inode != 0 => want.entry(inode).or_default().push(ask),
            _ => {
                tracing::debug!(client = %ask.client, server = %ask.server, "no socket of a local caller");
                ask.answer(None);
            }
        }
    }
    if want.is_empty() {
        return;
    }
    let recent: Vec<u32> = RECENT
        .lock()
        .map(|r| r.iter().copied().collect())
        .unwrap_or_default();
    let mut found = Vec::new();
    // The recent owners first, then every other process, until every socket has its owner.
    claim_among(recent.iter().copied(), &mut want, &mut found);
    // A socket closed since it was found (a connection per request closes within
    // milliseconds) is in no process's fds: a walk through every process for it finds nothing,
    // at the price of reading every fd of the machine. So is a connection that ended meanwhile.
    want.retain(|inode, asks| {
        asks.retain(|a| a.answer.wanted());
        let Some(first) = asks.first() else {
            return false;
        };
        // A lookup that failed cannot tell: that one is still looked for.
        let open = match diag
            .as_deref_mut()
            .map(|d| d.tcp_socket(first.client, first.server))
        {
            Some(Ok(Some((i, _)))) => i == *inode,
            Some(Ok(None)) => false,
            Some(Err(_)) | None => true,
        };
        if !open {
            for a in asks.drain(..) {
                a.answer(None);
            }
        }
        open
    });
    // Opening /proc reads its first entries already (a getdents that fills in every process):
    // not when nothing is left to look for.
    if !want.is_empty() {
        let rest = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
        claim_among(rest.filter(|p| !recent.contains(p)), &mut want, &mut found);
    }
    for a in want.into_values().flatten() {
        a.answer(None);
    }
    if let Ok(mut r) = RECENT.lock() {
        for pid in found {
            r.retain(|p| *p != pid);
            r.push_front(pid);
        }
        r.truncate(RECENT_MAX);
    }
}

/// Claims for each process of `pids` in turn, until every lookup has its owner.
fn claim_among(
    pids: impl Iterator<Item = u32>,
    want: &mut HashMap<u64, Vec<Ask>>,
    found: &mut Vec<u32>,
) {
    for pid in pids {
        if want.is_empty() {
            return;
        }
        claim(pid, want, found);
    }
}

/// Answers the lookups whose socket process `pid` holds (noting it in `found`).
fn claim(pid: u32, want: &mut HashMap<u64, Vec<Ask>>, found: &mut Vec<u32>) {
    let mut asks = Vec::new();
    for inode in socket_inodes(pid) {
        if let Some(a) = want.remove(&inode) {
            asks.extend(a);
        }
    }
    if asks.is_empty() {
        return;
    }
    found.push(pid);
    let process = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| Process {
            pid,
            command: c.trim().to_string(),
        });
    for a in asks {
        tracing::debug!(client = %a.client, pid, "a local caller's process");
        a.answer(process.clone());
    }
}

/// The inodes of the sockets process `pid` has open (none when its fds cannot be read); the
/// dev runner's look at which ports a process listens on reads them too.
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| socket_inode(std::fs::read_link(fd.path()).ok()?.to_str()?))
        .collect()
}

/// The process whose socket is `client` connected to `server`, if it can be known (one
/// lookup, on this thread).
#[cfg(test)]
pub fn lookup(client: SocketAddrV4, server: SocketAddrV4) -> Option<Process> {
    let (answer, mut rx) = oneshot::channel();
    let ask = Ask {
        client,
        server,
        answer: Box::new(answer),
    };
    resolve(SockDiag::open().ok().as_mut(), vec![ask]);
    rx.try_recv().ok().flatten()
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

    /// A round answers every lookup in it: each connection of this process is found, one
    /// whose socket is gone is not.
    #[test]
    fn a_round_answers_every_connection_in_it() {
        use super::{resolve, Ask};
        use tokio::sync::oneshot;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(server) = l.local_addr().unwrap() else {
            panic!("v4")
        };
        let conns: Vec<_> = (0..5)
            .map(|_| std::net::TcpStream::connect(server).unwrap())
            .collect();
        let mut ends: Vec<_> = conns
            .iter()
            .map(|c| match c.local_addr().unwrap() {
                std::net::SocketAddr::V4(a) => a,
                other => panic!("not IPv4: {other}"),
            })
            .collect();
        // No socket has this end.
        ends.push(std::net::SocketAddrV4::new(*server.ip(), 1));
        let (asks, mut rxs): (Vec<_>, Vec<_>) = ends
            .iter()
            .map(|c| {
                let (answer, rx) = oneshot::channel();
                let ask = Ask {
                    client: *c,
                    server,
                    answer: Box::new(answer),
                };
                (ask, rx)
            })
            .unzip();
        resolve(overlay_sys::netlink::SockDiag::open().ok().as_mut(), asks);
        let pids: Vec<Option<u32>> = rxs
            .iter_mut()
            .map(|rx| rx.try_recv().expect("answered").map(|p| p.pid))
            .collect();
        let me = Some(std::process::id());
        assert_eq!(pids, [me, me, me, me, me, None]);
    }
}

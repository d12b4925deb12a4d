//! Which ports a process group listens on, from the kernel's socket tables: the text of
//! `/proc/PID/net/tcp` and `tcp6`, and the `socket:[INODE]` links in `/proc/PID/fd`. The driver
//! reads the files; this module only parses them and decides whether a process is a worker.
//! The traffic capture uses the same tables to find which socket (and so which process) made a
//! laptop-local connection ([`connection_inode`]).
//!
//! A process that has no listening socket a short while after it started is a worker: it gets
//! no listener, no overlay address, no SRV record and no callback URL, and its restarts do not
//! wait for a health check. If it starts listening on `$PORT` later (a slow start), the driver
//! registers it then.

use std::collections::BTreeSet;
use std::time::Duration;

/// How long a started process may go without any listening socket before it counts as a worker.
pub const WORKER_AFTER: Duration = Duration::from_secs(1);

/// TCP state `LISTEN` in `/proc/net/tcp` (`include/net/tcp_states.h`).
const TCP_LISTEN: &str = "0A";

/// The inode of an fd link target like `socket:[12345]`, if it is a socket.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The `(local port, inode)` of every listening socket in a `/proc/net/tcp` or `tcp6` table.
/// Lines that do not parse (the header among them) are skipped.
pub fn listening_sockets(table: &str) -> Vec<(u16, u64)> {
    table
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let _slot = f.next()?;
            let local = f.next()?;
            let _remote = f.next()?;
            if f.next()? != TCP_LISTEN {
                return None;
            }
            // tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let inode = f.nth(5)?.parse().ok()?;
            let (_, port) = local.rsplit_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            Some((port, inode))
        })
        .collect()
}

/// An `ADDR:PORT` field of `/proc/net/tcp` (`0100007F:1F90`) or `tcp6` (an IPv4-mapped
/// address), as an IPv4 socket address. The kernel prints each 32-bit word in host order.
fn table_addr(field: &str) -> Option<std::net::SocketAddrV4> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = match addr.len() {
        8 => addr,
        // ::ffff:a.b.c.d: the last word, after 0000000000000000FFFF0000.
        32 if addr
            .get(..24)?
            .eq_ignore_ascii_case("0000000000000000FFFF0000") =>
        {
            addr.get(24..)?
        }
        _ => return None,
    };
    let v = u32::from_str_radix(word, 16).ok()?;
    Some(std::net::SocketAddrV4::new(v.to_ne_bytes().into(), port))
}

/// The `(inode, uid)` of the socket in a `/proc/net/tcp` or `tcp6` table whose local end is
/// `local` and whose peer is `remote` (inode 0: the socket has no owner any more).
pub fn connection_inode(
    table: &str,
    local: std::net::SocketAddrV4,
    remote: std::net::SocketAddrV4,
) -> Option<(u64, u32)> {
    table.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let _slot = f.next()?;
        if table_addr(f.next()?)? != local || table_addr(f.next()?)? != remote {
            return None;
        }
        // st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        let uid = f.nth(4)?.parse().ok()?;
        let inode: u64 = f.nth(1)?.parse().ok()?;
        // Inode 0: a socket no process holds any more (or a request socket); look on.
        (inode != 0).then_some((inode, uid))
    })
}

/// The ports the group listens on: the listening sockets of `tables` whose inode is among the
/// group's open sockets.
pub fn group_ports(tables: &[String], inodes: &BTreeSet<u64>) -> BTreeSet<u16> {
    tables
        .iter()
        .flat_map(|t| listening_sockets(t))
        .filter(|(_, inode)| inodes.contains(inode))
        .map(|(port, _)| port)
        .collect()
}

/// What a look at a starting process's sockets says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listening {
    /// It listens on `$PORT`: run the health check.
    OnPort,
    /// It listens, but not (yet) on `$PORT`: keep waiting for the health check.
    Elsewhere,
    /// It listens nowhere yet.
    Nowhere,
}

impl Listening {
    /// Classifies the group's listening `ports` against the port it was given.
    pub fn of(ports: &BTreeSet<u16>, port: u16) -> Listening {
        if ports.contains(&port) {
            Listening::OnPort
        } else if ports.is_empty() {
            Listening::Nowhere
        } else {
            Listening::Elsewhere
        }
    }
}

/// Whether a process that has run for `elapsed` and listens as `seen` is a worker.
pub fn is_worker(elapsed: Duration, seen: Listening) -> bool {
    seen == Listening::Nowhere && elapsed >= WORKER_AFTER
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real lines from a host: a listener on 127.0.0.1:8080, one established connection, and
    /// a listener on [::]:5432 in the tcp6 table.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 41234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D5A2 01 00000000:00000000 00:00000000 00000000  1000        0 41299 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1538 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   109        0 9876 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn test_parse_tables() {
        assert_eq!(listening_sockets(TCP), vec![(8080, 41234)]);
        assert_eq!(listening_sockets(TCP6), vec![(5432, 9876)]);
        assert!(listening_sockets("").is_empty());
        assert!(listening_sockets("0: zz:zz 0:0 0A a b c d e notanumber").is_empty());
        assert_eq!(socket_inode("socket:[41234]"), Some(41234));
        assert_eq!(socket_inode("pipe:[41234]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn a_connection_is_found_by_its_two_ends() {
        let client = "127.0.0.1:54690".parse().unwrap();
        let server = "127.0.0.1:8080".parse().unwrap();
        // The table's line 1 is the server's end of that connection.
        assert_eq!(connection_inode(TCP, server, client), Some((41299, 1000)));
        assert_eq!(connection_inode(TCP, client, server), None);
        let (local, remote) = (client, server);
        let mapped = "   3: 0000000000000000FFFF00000100007F:D5A2 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 777 1";
        assert_eq!(connection_inode(mapped, local, remote), Some((777, 1000)));
        assert_eq!(connection_inode("garbage", local, remote), None);
    }

    #[test]
    fn only_the_groups_own_sockets_count() {
        let tables = [TCP.to_string(), TCP6.to_string()];
        let mine: BTreeSet<u64> = [41234, 41299, 5].into();
        assert_eq!(group_ports(&tables, &mine), [8080].into());
        assert_eq!(
            Listening::of(&group_ports(&tables, &mine), 8080),
            Listening::OnPort
        );
        assert_eq!(
            Listening::of(&group_ports(&tables, &mine), 9000),
            Listening::Elsewhere
        );
        let none = group_ports(&tables, &BTreeSet::new());
        assert_eq!(Listening::of(&none, 8080), Listening::Nowhere);
    }

    #[test]
    fn a_worker_is_known_after_a_second_without_a_listener() {
        let second = WORKER_AFTER;
        assert!(!is_worker(second / 2, Listening::Nowhere));
        assert!(is_worker(second, Listening::Nowhere));
        assert!(!is_worker(second * 10, Listening::Elsewhere));
        assert!(!is_worker(second * 10, Listening::OnPort));
    }
}

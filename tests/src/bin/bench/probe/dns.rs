//! The DNS probe: an A query; success is a NOERROR answer with an A record.

use super::Probe;
use std::net::{Ipv4Addr, UdpSocket};

pub(super) struct Dns {
    sock: UdpSocket,
    question: Vec<u8>,
    next_id: u16,
    sent: std::collections::HashSet<u16>,
}

impl Dns {
    pub(super) fn new(server: Ipv4Addr, name: &str) -> Result<Dns, String> {
        let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("udp socket: {e}"))?;
        sock.connect((server, 53))
            .and_then(|()| sock.set_nonblocking(true))
            .map_err(|e| format!("udp socket: {e}"))?;
        let mut question = Vec::new();
        for label in name.trim_end_matches('.').split('.') {
            question.push(label.len() as u8);
            question.extend_from_slice(label.as_bytes());
        }
        question.extend_from_slice(&[0, 0, 1, 0, 1]);
        Ok(Dns {
            sock,
            question,
            next_id: rand::random(),
            sent: Default::default(),
        })
    }
}

/// The offset after a (possibly compressed) name at `off`.
fn skip_name(m: &[u8], mut off: usize) -> Option<usize> {
    loop {
        let l = *m.get(off)?;
        if l == 0 {
            return Some(off + 1);
        }
        if l & 0xc0 == 0xc0 {
            return Some(off + 2);
        }
        off += 1 + usize::from(l);
    }
}

/// The first A record of a NOERROR answer whose id is in `ids`.
fn dns_answer(m: &[u8], ids: &std::collections::HashSet<u16>) -> Option<Ipv4Addr> {
    let h = m.get(..12)?;
    let id = u16::from_be_bytes([h[0], h[1]]);
    let flags = u16::from_be_bytes([h[2], h[3]]);
    let qd = u16::from_be_bytes([h[4], h[5]]);
    let an = u16::from_be_bytes([h[6], h[7]]);
    if !ids.contains(&id) || flags & 0x8000 == 0 || flags & 0x000f != 0 || an == 0 {
        return None;
    }
    let mut off = 12;
    for _ in 0..qd {
        off = skip_name(m, off)? + 4;
    }
    for _ in 0..an {
        off = skip_name(m, off)?;
        let rr = m.get(off..off + 10)?;
        let (typ, len) = (
            u16::from_be_bytes([rr[0], rr[1]]),
            usize::from(u16::from_be_bytes([rr[8], rr[9]])),
        );
        off += 10;
        if typ == 1 && len == 4 {
            let a = m.get(off..off + 4)?;
            return Some(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
        }
        off += len;
    }
    None
}

impl Probe for Dns {
    fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    fn send(&mut self) -> std::io::Result<()> {
        self.next_id = self.next_id.wrapping_add(1);
        self.sent.insert(self.next_id);
        let mut q = self.next_id.to_be_bytes().to_vec();
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(&self.question);
        self.sock.send(&q).map(|_| ())
    }

    fn receive(&mut self) -> std::io::Result<Option<String>> {
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Ok(dns_answer(&buf[..n], &self.sent).map(|a| a.to_string())),
            // ECONNREFUSED from an earlier query: the server is not up yet.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_answer_parses_a_record() {
        let ids: std::collections::HashSet<u16> = [0x1234].into();
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 100, 64, 0, 9]);
        assert_eq!(dns_answer(&m, &ids), Some(Ipv4Addr::new(100, 64, 0, 9)));
        // Another id, or NXDOMAIN: no answer.
        assert_eq!(dns_answer(&m, &[7].into()), None);
        m[3] = 0x83;
        assert_eq!(dns_answer(&m, &ids), None);
        assert_eq!(dns_answer(&m[..5], &ids), None);
    }
}

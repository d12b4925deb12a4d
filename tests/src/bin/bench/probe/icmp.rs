//! The ICMP echo probe (a raw socket: needs root).

use super::Probe;
use std::net::Ipv4Addr;

pub(super) struct Icmp {
    fd: i32,
    addr: Ipv4Addr,
    ident: u16,
    seq: u16,
}

impl Icmp {
    pub(super) fn new(addr: Ipv4Addr) -> Result<Icmp, String> {
        // SAFETY: plain socket(2) call; the fd is owned by Icmp and closed on drop.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(format!(
                "cannot open the ICMP socket: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Icmp {
            fd,
            addr,
            ident: (std::process::id() & 0xffff) as u16,
            seq: 0,
        })
    }
}

impl Drop for Icmp {
    fn drop(&mut self) {
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// The Internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut s: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

impl Probe for Icmp {
    fn fd(&self) -> i32 {
        self.fd
    }

    fn send(&mut self) -> std::io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut pkt = vec![8u8, 0, 0, 0];
        pkt.extend_from_slice(&self.ident.to_be_bytes());
        pkt.extend_from_slice(&self.seq.to_be_bytes());
        pkt.extend_from_slice(b"ovb-bench-probe!");
        let ck = checksum(&pkt);
        pkt[2..4].copy_from_slice(&ck.to_be_bytes());
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(self.addr.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: pkt and sa are valid for the call.
        let n = unsafe {
            libc::sendto(
                self.fd,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn receive(&mut self) -> std::io::Result<Option<String>> {
        let mut buf = [0u8; 2048];
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let d = &buf[..n as usize];
        if d.len() < 20 || d[12..16] != self.addr.octets() {
            return Ok(None);
        }
        let ihl = usize::from(d[0] & 0x0f) * 4;
        let Some(icmp) = d.get(ihl..ihl + 8) else {
            return Ok(None);
        };
        let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
        Ok((icmp[0] == 0 && ident == self.ident).then(|| self.addr.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn checksum_of_an_echo_request() {
        // type 8, code 0, id 1, seq 1, no payload: 0xf7fd.
        assert_eq!(super::checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }
}

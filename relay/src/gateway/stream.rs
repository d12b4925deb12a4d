//! The real side of a spliced flow: a TCP connection in the remote environment, or one end of
//! a socket pair whose other end the relay itself holds (a front or the Host router speaking
//! HTTP to a node service through the gateway).

use mio::event::Source;
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};

/// A real connection as handed to the gateway thread.
pub enum Accepted {
    /// A TCP connection (a caller, or an upstream connect).
    Tcp(std::net::TcpStream),
    /// One end of a socket pair.
    Unix(std::os::unix::net::UnixStream),
}

impl From<std::net::TcpStream> for Accepted {
    fn from(s: std::net::TcpStream) -> Self {
        Accepted::Tcp(s)
    }
}

/// A real connection registered with the gateway's poll.
pub enum RealStream {
    /// TCP.
    Tcp(mio::net::TcpStream),
    /// A socket pair's end.
    Unix(mio::net::UnixStream),
}

impl RealStream {
    /// Shuts down one or both halves.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            RealStream::Tcp(s) => s.shutdown(how),
            RealStream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for RealStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            RealStream::Tcp(s) => s.read(buf),
            RealStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for RealStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            RealStream::Tcp(s) => s.write(buf),
            RealStream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for RealStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            RealStream::Tcp(s) => s.as_raw_fd(),
            RealStream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Source for RealStream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            RealStream::Tcp(s) => s.register(r, t, i),
            RealStream::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            RealStream::Tcp(s) => s.reregister(r, t, i),
            RealStream::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            RealStream::Tcp(s) => s.deregister(r),
            RealStream::Unix(s) => s.deregister(r),
        }
    }
}

/// Makes the close of `s` send RST instead of FIN (SO_LINGER 0; a socket pair just closes).
pub fn reset_close(s: &impl AsRawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid linger struct on a descriptor we hold.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

impl AsRawFd for Accepted {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Accepted::Tcp(s) => s.as_raw_fd(),
            Accepted::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// Makes a real connection non-blocking (TCP without Nagle) and registered with the gateway's
/// poll under flow `id`; `None` when the poll refuses it.
pub fn register(poll: &mio::Poll, stream: Accepted, id: usize) -> Option<RealStream> {
    let mut stream = match stream {
        Accepted::Tcp(s) => {
            let _ = s.set_nonblocking(true);
            let _ = s.set_nodelay(true);
            RealStream::Tcp(mio::net::TcpStream::from_std(s))
        }
        Accepted::Unix(s) => {
            let _ = s.set_nonblocking(true);
            RealStream::Unix(mio::net::UnixStream::from_std(s))
        }
    };
    poll.registry()
        .register(
            &mut stream,
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        )
        .ok()?;
    Some(stream)
}

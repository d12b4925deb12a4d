//! Zero-copy forwarding of a body whose length is known: splice(2) from one socket into a pipe
//! and from the pipe into the other socket, so the bytes never pass through user space (a
//! 1 MiB response through a front was two copies of 32 KiB per read and write before). The
//! sockets are tokio's, driven by their readiness (`poll_*_ready` and `try_io`), so the task
//! waits like any other read or write.
//!
//! Memory: the pipe holds at most [`PIPE_SIZE`] bytes (kernel pages taken from the socket's
//! receive queue), one pipe per client connection, made on its first large body.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::task::{Context, Poll};
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// What a pipe is asked to hold: 1 MiB moves in eight fills, bounded per connection.
const PIPE_SIZE: usize = 128 * 1024;

/// A socket that splice(2) can read or write, with tokio's readiness.
pub trait Pollable: AsRawFd {
    /// Ready for `interest` (readable or writable), as tokio saw it.
    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<()>>;
    /// Runs `f` when ready for `interest`; a `WouldBlock` from it clears the readiness.
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl Pollable for TcpStream {
    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<()>> {
        if interest.is_readable() {
            self.poll_read_ready(cx)
        } else {
            self.poll_write_ready(cx)
        }
    }

    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        TcpStream::try_io(self, interest, f)
    }
}

impl Pollable for UnixStream {
    fn poll_ready(&self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<()>> {
        if interest.is_readable() {
            self.poll_read_ready(cx)
        } else {
            self.poll_write_ready(cx)
        }
    }

    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        UnixStream::try_io(self, interest, f)
    }
}

/// Why a splice stopped.
#[derive(Debug)]
pub enum SpliceError {
    /// The kernel cannot splice these descriptors (nothing was moved): copy instead.
    Unsupported,
    /// Reading the source failed, or it closed before the length was reached.
    From(io::Error),
    /// Writing the destination failed.
    To(io::Error),
}

/// A pipe to splice through. It holds nothing between [`splice`] calls that succeeded; after
/// one that failed it may hold bytes and must be dropped.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
}

impl Pipe {
    /// A non-blocking pipe of about [`PIPE_SIZE`] bytes (the kernel's default size if it
    /// refuses that).
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we hold; a failure leaves the default size.
        unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_SIZE as libc::c_int,
            )
        };
        // SAFETY: as above.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let size = usize::try_from(size).unwrap_or(0).max(4096);
        Ok(Pipe { read, write, size })
    }
}

/// One splice(2) call, non-blocking on both ends.
fn splice_once(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors and no offsets; the kernel checks both descriptors.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Moves exactly `n` bytes from `from` to `to` through `pipe`.
///
/// The pipe is filled only while empty and then emptied whole, so a `WouldBlock` always comes
/// from the socket (a pipe's capacity is counted in pages, not bytes: a fill may stop short of
/// the room, but it never finds the pipe full) and clearing the socket's readiness is right.
pub async fn splice<A: Pollable, B: Pollable>(
    from: &A,
    to: &B,
    pipe: &Pipe,
    n: u64,
) -> Result<(), SpliceError> {
    let mut left = n;
    let mut moved = false;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(pipe.size);
        let got = loop {
            poll_fn(|cx| from.poll_ready(cx, Interest::READABLE))
                .await
                .map_err(SpliceError::From)?;
            match from.try_io(Interest::READABLE, || {
                splice_once(from.as_raw_fd(), pipe.write.as_raw_fd(), want)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if !moved && e.raw_os_error() == Some(libc::EINVAL) => {
                    return Err(SpliceError::Unsupported)
                }
                Err(e) => return Err(SpliceError::From(e)),
                Ok(0) => {
                    return Err(SpliceError::From(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(k) => break k,
            }
        };
        moved = true;
        left -= got as u64;
        let mut held = got;
        while held > 0 {
            poll_fn(|cx| to.poll_ready(cx, Interest::WRITABLE))
                .await
                .map_err(SpliceError::To)?;
            match to.try_io(Interest::WRITABLE, || {
                splice_once(pipe.read.as_raw_fd(), to.as_raw_fd(), held)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(SpliceError::To(e)),
                Ok(0) => return Err(SpliceError::To(io::ErrorKind::WriteZero.into())),
                Ok(k) => held -= k,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn splices_exactly_the_length_and_leaves_the_rest() {
        let (mut a, a2) = UnixStream::pair().unwrap();
        let (b, mut b2) = UnixStream::pair().unwrap();
        let data: Vec<u8> = (0..600_000u32).map(|i| i as u8).collect();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                a.write_all(&data).await.unwrap();
                a.write_all(b"next").await.unwrap();
                a
            })
        };
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 600_000];
            b2.read_exact(&mut got).await.unwrap();
            got
        });
        let pipe = Pipe::new().unwrap();
        splice(&a2, &b, &pipe, 600_000).await.unwrap();
        assert_eq!(reader.await.unwrap(), data);
        let _a = writer.await.unwrap();
        let mut rest = [0u8; 4];
        let mut a2 = a2;
        a2.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"next");
    }

    #[tokio::test]
    async fn a_source_that_closes_early_is_an_error() {
        let (mut a, a2) = UnixStream::pair().unwrap();
        let (b, _b2) = UnixStream::pair().unwrap();
        a.write_all(b"short").await.unwrap();
        drop(a);
        let pipe = Pipe::new().unwrap();
        assert!(matches!(
            splice(&a2, &b, &pipe, 100).await,
            Err(SpliceError::From(_))
        ));
    }
}

//! A wake-up flag for a thread that sleeps in `poll(2)`: an eventfd plus an atomic, so that a
//! burst of producers costs one system call, not one per item.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Wakes a thread polling [`Wake::fd`].
#[derive(Debug)]
pub struct Wake {
    fd: OwnedFd,
    pending: AtomicBool,
}

impl Wake {
    /// A new non-blocking eventfd.
    pub fn new() -> io::Result<Wake> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Wake {
            // SAFETY: fd is a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            pending: AtomicBool::new(false),
        })
    }

    /// Wakes the poller unless a wake-up is already pending. Call it after the item it
    /// announces is queued.
    pub fn wake(&self) {
        // SeqCst pairs with the poller's swap in `reset`: either this sees the flag cleared and
        // writes, or the poller's drain after `reset` sees the item.
        if !self.pending.swap(true, Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our own descriptor.
            let _ = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }

    /// Called by the poller after it woke and before it drains what the wake-ups announce:
    /// consumes the eventfd's count, then lets the next [`Wake::wake`] write again.
    ///
    /// In this order, not the other: a wake that came between clearing the flag and reading
    /// the count would have its write consumed while its flag stayed set, so every later wake
    /// would skip the write and the poller would sleep with items queued until its timeout.
    /// That lost wake-up stalled the gateway's TCP flows for up to a poll timeout at a time
    /// (bench part `gateway`, docs/benchmarks.md).
    pub fn reset(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our own non-blocking descriptor.
        let _ = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        self.pending.swap(false, Ordering::SeqCst);
    }

    /// [`Wake::reset`] for a poller that watches [`Wake::fd`] edge-triggered (mio): every write
    /// is a new edge, so the count need not be read, which saves a system call on every turn
    /// of a busy loop. The count grows by one per wake-up and cannot overflow in practice.
    pub fn reset_edge(&self) {
        self.pending.swap(false, Ordering::SeqCst);
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Whether `w`'s descriptor is readable within `ms`.
    fn readable(w: &Wake, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: w.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }

    #[test]
    fn a_wake_after_a_reset_always_rings() {
        let w = Wake::new().expect("eventfd");
        assert!(!readable(&w, 0));
        w.wake();
        w.wake();
        assert!(readable(&w, 0));
        w.reset();
        assert!(!readable(&w, 0));
        w.wake();
        assert!(readable(&w, 0));
    }

    /// A producer and a sleeping consumer racing: every item is seen without the consumer
    /// ever sleeping into its timeout (a lost wake-up would).
    #[test]
    fn no_wake_up_is_lost_between_threads() {
        const ITEMS: u32 = 200_000;
        let w = Arc::new(Wake::new().expect("eventfd"));
        let (tx, rx) = mpsc::channel::<u32>();
        let producer = {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..ITEMS {
                    if tx.send(i).is_err() {
                        return;
                    }
                    w.wake();
                    if i % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            })
        };
        let start = Instant::now();
        let mut seen = 0;
        while seen < ITEMS {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "only {seen} of {ITEMS} items in 60 s"
            );
            let waited = Instant::now();
            let ready = readable(&w, 2000);
            assert!(
                ready || rx.try_recv().is_err(),
                "slept {:?} with an item queued: a lost wake-up",
                waited.elapsed()
            );
            w.reset();
            while rx.try_recv().is_ok() {
                seen += 1;
            }
        }
        producer.join().expect("producer");
    }
}

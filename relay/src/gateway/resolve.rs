//! Resolves names for remote names on demand, off the hub's thread, with the relay's own
//! resolver (the remote environment's DNS, search domains included).

use overlay_core::relay::{LookupFailure, LookupRequest};
use overlay_sys::wake::Wake;
use std::ffi::CString;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Resolutions running at once; more are answered "busy" right away.
const MAX_RESOLVING: usize = 64;
/// How long one resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of a lookup, for `Hub::lookup_done`.
pub type LookupResult = (u64, Result<(), LookupFailure>);

/// Spawns resolutions and hands results back to the hub thread.
pub struct Resolver {
    rt: tokio::runtime::Handle,
    tx: SyncSender<LookupResult>,
    wake: Arc<Wake>,
    permits: Arc<Semaphore>,
}

impl Resolver {
    /// A resolver whose results arrive on the returned receiver, with `wake` woken.
    pub fn new(rt: tokio::runtime::Handle, wake: Arc<Wake>) -> (Resolver, Receiver<LookupResult>) {
        let (tx, rx) = sync_channel(MAX_RESOLVING * 2);
        (
            Resolver {
                rt,
                tx,
                wake,
                permits: Arc::new(Semaphore::new(MAX_RESOLVING)),
            },
            rx,
        )
    }

    /// Starts resolving `req.name`.
    pub fn resolve(&self, req: LookupRequest) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let _ = self.tx.try_send((
                req.token,
                Err(LookupFailure::Unavailable(
                    "the relay is resolving too many names".into(),
                )),
            ));
            self.wake.wake();
            return;
        };
        let tx = self.tx.clone();
        let wake = self.wake.clone();
        self.rt.spawn(async move {
            let name = req.name.clone();
            // The permit goes with the blocking call, which outlives a timeout: at most
            // MAX_RESOLVING threads ever wait on a dead resolver.
            let lookup = tokio::task::spawn_blocking(move || {
                let r = resolve_blocking(&name);
                drop(permit);
                r
            });
            let result = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(LookupFailure::Unavailable(e.to_string())),
                Err(_) => Err(LookupFailure::Unavailable("the lookup timed out".into())),
            };
            tracing::debug!(name = %req.name, ?result, "on-demand lookup");
            let _ = tx.try_send((req.token, result));
            wake.wake();
        });
    }
}

/// Resolves `name` with the system's resolver (getaddrinfo: hosts file, search domains, the
/// remote environment's DNS) and tells a name that does not exist from a lookup that failed:
/// only EAI_NONAME and EAI_NODATA mean the resolver said so.
fn resolve_blocking(name: &str) -> Result<(), LookupFailure> {
    let c_name = CString::new(name)
        .map_err(|_| LookupFailure::NotFound("the name contains a NUL byte".into()))?;
    // SAFETY: an all-zero addrinfo is a valid "no hints" value; only the fields set below matter.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut out: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: c_name is NUL-terminated, hints and out are valid for the call; the list getaddrinfo
    // returns is freed once below and not used after.
    let rc = unsafe { libc::getaddrinfo(c_name.as_ptr(), std::ptr::null(), &hints, &mut out) };
    if rc == 0 {
        let found = !out.is_null();
        // SAFETY: out came from a successful getaddrinfo and is freed exactly once.
        unsafe { libc::freeaddrinfo(out) };
        return if found {
            Ok(())
        } else {
            Err(LookupFailure::NotFound("no address".into()))
        };
    }
    // SAFETY: gai_strerror returns a static NUL-terminated string for any code.
    let why = unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(rc)) }
        .to_string_lossy()
        .into_owned();
    match rc {
        libc::EAI_NONAME | libc::EAI_NODATA => Err(LookupFailure::NotFound(why)),
        _ => Err(LookupFailure::Unavailable(why)),
    }
}

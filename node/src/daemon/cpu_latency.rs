//! The kernel's CPU-latency request (PM QoS, `/dev/cpu_dma_latency`), taken and given back
//! as `overlay_core::node::cpu_latency::Hold` decides.
//!
//! The request lives as long as the file is open and its value is whatever was written last,
//! so the file stays open and taking or giving back is one 4-byte write. The kernel drops the
//! request when the process exits, however it exits.

use overlay_core::node::cpu_latency::Change;
use std::fs::{File, OpenOptions};
use std::io::Write;

/// The kernel's interface for CPU-latency requests.
const DEVICE: &str = "/dev/cpu_dma_latency";
/// Idle CPUs must wake within 0 µs: they poll instead of halting.
const TAKE: i32 = 0;
/// The kernel's "default value": no constraint from this request.
const RELEASE: i32 = -1;

/// One process's request, opened when first taken.
#[derive(Default)]
pub struct CpuLatencyRequest {
    file: Option<File>,
    unavailable: bool,
}

impl CpuLatencyRequest {
    /// Applies `change`; false when the kernel cannot be asked (no device, no permission).
    pub fn apply(&mut self, change: Change) -> bool {
        if self.unavailable {
            return false;
        }
        let value = match change {
            Change::Take => TAKE,
            Change::Release => RELEASE,
        };
        let file = match (&mut self.file, change) {
            (Some(f), _) => f,
            (None, Change::Release) => return true,
            (None, Change::Take) => match OpenOptions::new().write(true).open(DEVICE) {
                Ok(f) => self.file.insert(f),
                Err(e) => return self.give_up(&e),
            },
        };
        match file.write(&value.to_ne_bytes()) {
            Ok(4) => true,
            Ok(n) => self.give_up(&format!("the kernel took {n} of 4 bytes")),
            Err(e) => self.give_up(&e),
        }
    }

    fn give_up(&mut self, why: &dyn std::fmt::Display) -> bool {
        tracing::info!(
            "cannot ask the kernel for quick CPU wake-ups ({DEVICE}: {why}); latency through \
             the overlay may be higher on an idle machine"
        );
        self.file = None;
        self.unavailable = true;
        false
    }
}

//! SIGINT/SIGTERM, the one interrupt path of the crate: while a `Guard` lives, the signals set
//! a flag that every wait checks (serial reads, the nix build loop, `attach`), so the harness
//! finishes writing its records, stops its children and exits 130 instead of dying mid-write.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The handlers, installed for as long as the guard lives; the previous ones come back on
/// drop. Guards nest (vm-test around a build-image): an inner one keeps the same flag.
pub struct Guard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl Guard {
    /// Installs the handlers (no SA_RESTART, so a blocked `poll()` returns EINTR at once).
    pub fn install() -> Guard {
        let previous = SIGNALS
            .into_iter()
            .map(|sig| {
                // SAFETY: the handler only stores to an atomic; `old` is plain data.
                unsafe {
                    let mut sa: libc::sigaction = std::mem::zeroed();
                    sa.sa_sigaction = on_signal as *const () as usize;
                    libc::sigemptyset(&mut sa.sa_mask);
                    let mut old: libc::sigaction = std::mem::zeroed();
                    libc::sigaction(sig, &sa, &mut old);
                    (sig, old)
                }
            })
            .collect();
        Guard { previous }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: restores exactly what sigaction returned.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }
}

/// Whether SIGINT or SIGTERM arrived while a guard was installed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

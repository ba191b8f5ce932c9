//! Temporary files that must not outlive the process: registered while they exist, removed by
//! their guard on every error path, and removed by the deadline watchdog before it exits.
//!
//! This is the only process-global state in walrs. It exists because a deadline can fire while
//! the main thread is blocked inside a write: the watchdog must still leave nothing behind.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// The command's fate: still running, committed (its result is durable), or timed out. Decided
/// once, atomically, so a commit and a deadline can never both win.
static FATE: AtomicU8 = AtomicU8::new(RUNNING);
const RUNNING: u8 = 0;
const COMMITTED: u8 = 1;
const TIMED_OUT: u8 = 2;

/// Records that the command's result is durable: a deadline that passes from now on must not turn
/// the success into a failure. Returns false if the deadline already won.
pub fn mark_committed() -> bool {
    FATE.compare_exchange(RUNNING, COMMITTED, Ordering::SeqCst, Ordering::SeqCst)
        .map_or_else(|now| now == COMMITTED, |_| true)
}

/// Called by the deadline watchdog: true if the deadline wins (the command had not committed).
pub fn mark_timed_out() -> bool {
    FATE.compare_exchange(RUNNING, TIMED_OUT, Ordering::SeqCst, Ordering::SeqCst).is_ok()
}

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Owns a temporary file path: removes the file on drop unless [`TempGuard::disarm`] was called.
#[derive(Debug)]
pub struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl TempGuard {
    /// Registers `path` (which the caller is about to create).
    pub fn new(path: PathBuf) -> Self {
        live().push(path.clone());
        TempGuard { path, armed: true }
    }

    /// The temporary path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed or linked into place: keep it (or what remains of it) alone.
    pub fn disarm(&mut self) {
        self.armed = false;
        live().retain(|p| p != &self.path);
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
            live().retain(|p| p != &self.path);
        }
    }
}

/// Removes every registered temporary file (called by the watchdog before exiting).
pub fn remove_all() {
    let paths: Vec<PathBuf> = live().drain(..).collect();
    for p in paths {
        let _ = std::fs::remove_file(&p);
    }
}

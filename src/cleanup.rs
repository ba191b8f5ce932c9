//! Temporary files that must not outlive the process: registered while they exist, removed by
//! their guard on every error path, and removed by the deadline watchdog before it exits.
//!
//! This is the only process-global state in walrs. It exists because a deadline can fire while
//! the main thread is blocked inside a write: the watchdog must still leave nothing behind.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static COMMITTED: AtomicBool = AtomicBool::new(false);

/// Records that the command's result is durable: a deadline that passes from now on must not turn
/// the success into a failure.
pub fn mark_committed() {
    COMMITTED.store(true, Ordering::SeqCst);
}

/// Whether [`mark_committed`] was called.
pub fn is_committed() -> bool {
    COMMITTED.load(Ordering::SeqCst)
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
